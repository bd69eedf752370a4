"""Response templates: `responses: {intents: {Name: {key: "Jinja template"}}}`, as home-assistant-intents
writes them, rendered with Jinja's sandbox and the handler's slots (`slots.time`, `slots.minutes`, ...).

The package's own responses (responses/en.yaml, responses/zh.yaml) are used rather than Home Assistant's: HA's
texts are written for HA's objects (its timer list, entity states), ours for what intents/handlers.py passes.
A user's folder may add or replace any of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from assistant.intents.loader import IntentFileError, _line, file_language, read_yaml


def _environment() -> Any:
    from jinja2.sandbox import SandboxedEnvironment

    # trim_blocks/lstrip_blocks: multi-line templates with {% if %} blocks read like Home Assistant's.
    return SandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, autoescape=False)


class Responses:
    """Templates by (language, intent, key); later files override earlier ones."""

    def __init__(self) -> None:
        self._env = _environment()
        # Compiled jinja2 templates: a file's syntax errors are reported (file:line) when it is loaded, so
        # rendering needs nothing else of where a template came from.
        self._templates: dict[tuple[str, str, str], Any] = {}

    def load(self, paths: Iterable[Path]) -> None:
        for path in paths:
            data = read_yaml(path)
            if "responses" not in data:
                continue  # a sentences file in the same folder
            language = file_language(path, data)
            intents = data["responses"].get("intents") if isinstance(data["responses"], dict) else None
            if not isinstance(intents, dict):
                raise IntentFileError(f"{path}:1: expected `responses: intents: NAME: KEY: template`")
            for intent, keys in intents.items():
                if not isinstance(keys, dict):
                    raise IntentFileError(f"{path}:{_line(intent)}: responses of {intent}: expected KEY: template")
                for key, source in keys.items():
                    self._add(path, language, str(intent), str(key), source)

    def _add(self, path: Path, language: str, intent: str, key: str, source: Any) -> None:
        from jinja2 import TemplateSyntaxError

        line = _line(source, _line(key))
        if not isinstance(source, str):
            raise IntentFileError(f"{path}:{line}: response {intent}.{key}: expected a text template")
        try:
            compiled = self._env.from_string(source)
        except TemplateSyntaxError as exc:
            # exc.lineno counts inside the template; a block scalar starts on the line after its key.
            where = line + (exc.lineno or 1) - 1
            raise IntentFileError(f"{path}:{where}: response {intent}.{key}: {exc.message}") from None
        self._templates[(language, intent, key)] = compiled

    def has(self, language: str, intent: str) -> bool:
        return any(k[0] == language and k[1] == intent for k in self._templates)

    def intents(self, language: str) -> set[str]:
        return {k[1] for k in self._templates if k[0] == language}

    def render(self, language: str, intent: str, key: str, slots: dict[str, Any]) -> str:
        template = self._templates.get((language, intent, key)) or self._templates.get((language, intent, "default"))
        if template is None:
            raise KeyError(f"no response {intent}.{key} in {language}")
        text = template.render(slots=slots)
        return " ".join(text.split())
