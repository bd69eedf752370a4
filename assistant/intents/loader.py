"""Sentence and response files: Home Assistant's official data, this package's own, and the user's folder.

Everything is in hassil's format (https://github.com/OHF-Voice/hassil): a YAML file with `language`,
`intents: {Name: {data: [{sentences: [...]}]}}`, `lists` and `expansion_rules`; responses are
`responses: {intents: {Name: {key: "Jinja template"}}}` as in home-assistant-intents' `responses/` folder.

`home-assistant-intents` ships its data already merged, one JSON per language (`get_intents("en")`,
`get_intents("zh-CN")`); it is used as shipped, cut down to the intents this assistant answers (fewer
templates to try, and no device-control sentences that would answer "turn on the light" with nothing).

A mistake in a file (YAML, template syntax, an unknown {list} or <rule>, a response that does not compile, an
intent with neither a handler nor a response) raises IntentFileError naming file:line; the daemon turns it
into exit 3 at start-up, and a reload keeps the old intents.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from assistant.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
SENTENCES_DIR = PACKAGE_DIR / "sentences"
RESPONSES_DIR = PACKAGE_DIR / "responses"
HA_LANGUAGE = {"en": "en", "zh": "zh-CN"}  # our language code -> home-assistant-intents' file
LANGUAGE_ALIASES = {"en": "en", "zh": "zh", "zh-cn": "zh", "zh-hans": "zh", "cmn": "zh"}

# Home Assistant intents this assistant handles itself (intents/handlers.py); the rest of HA's are dropped.
HA_INTENTS = (
    "HassGetCurrentTime",
    "HassGetCurrentDate",
    "HassStartTimer",
    "HassCancelTimer",
    "HassCancelAllTimers",
    "HassTimerStatus",
    "HassPauseTimer",
    "HassUnpauseTimer",
    "HassIncreaseTimer",
    "HassDecreaseTimer",
)
# HA templates refer to lists filled in by Home Assistant from its devices; here there are none.
EMPTY_LISTS = ("area", "name", "floor")
PINYIN_NUMBER_MAX = 100  # pinyin: numbers are list entries tried one by one (hassil indexes lists only when
# whitespace counts), so arithmetic and conversions from the pinyin stand-in recognizer stop at 100


class IntentFileError(ConfigError):
    """A sentence or response file is wrong; the message starts with file:line."""


class _LineStr(str):
    line: int = 0


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose strings remember their line, so a bad template can be reported as file:line."""


def _construct_str(loader: _LineLoader, node: yaml.ScalarNode) -> _LineStr:
    value = _LineStr(loader.construct_scalar(node))
    value.line = node.start_mark.line + 1
    return value


_LineLoader.add_constructor("tag:yaml.org,2002:str", _construct_str)


def _line(value: Any, default: int = 1) -> int:
    return getattr(value, "line", default)


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise IntentFileError(f"{path}:1: cannot read: {exc}") from None
    try:
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise IntentFileError(f"{path}:{line}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise IntentFileError(f"{path}:1: expected a mapping with `language` and `intents` or `responses`")
    return data


def file_language(path: Path, data: dict[str, Any]) -> str:
    raw = data.get("language")
    if raw is None:
        raise IntentFileError(f"{path}:1: missing `language:` (en or zh)")
    language = LANGUAGE_ALIASES.get(str(raw).lower())
    if language is None:
        raise IntentFileError(f"{path}:{_line(raw)}: language {raw!r}: expected en or zh")
    return language


@dataclass
class Source:
    """One sentence file's contribution, with where each sentence came from (for file:line errors)."""

    path: Path
    language: str
    data: dict[str, Any]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def check_sentence_file(path: Path, data: dict[str, Any]) -> None:
    """Shape and template syntax of one sentence file (references are checked once all files are merged)."""
    from hassil.parse_expression import parse_sentence

    intents = data.get("intents", {})
    if not isinstance(intents, dict):
        raise IntentFileError(f"{path}:1: `intents` must be a mapping of intent names")
    for name, body in intents.items():
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise IntentFileError(f"{path}:{_line(name)}: intent {name}: expected `data:` with a list of blocks")
        for block in body["data"]:
            sentences = block.get("sentences") if isinstance(block, dict) else None
            if not isinstance(sentences, list) or not sentences:
                raise IntentFileError(f"{path}:{_line(name)}: intent {name}: each data block needs `sentences:`")
            for sentence in sentences:
                if not isinstance(sentence, str):
                    raise IntentFileError(f"{path}:{_line(name)}: intent {name}: sentence {sentence!r} is no text")
                try:
                    parse_sentence(sentence)
                except Exception as exc:  # noqa: BLE001 - hassil raises several parse error types
                    raise IntentFileError(f"{path}:{_line(sentence)}: bad template {sentence!r}: {exc}") from None
    for section in ("lists", "expansion_rules"):
        if not isinstance(data.get(section, {}), dict):
            raise IntentFileError(f"{path}:1: `{section}` must be a mapping")
    for name, rule in data.get("expansion_rules", {}).items():
        try:
            parse_sentence(str(rule))
        except Exception as exc:  # noqa: BLE001
            raise IntentFileError(f"{path}:{_line(rule, _line(name))}: bad expansion rule <{name}>: {exc}") from None


def _references(template: str) -> tuple[set[str], set[str]]:
    from hassil.expression import Group, ListReference, RuleReference
    from hassil.parse_expression import parse_sentence

    lists: set[str] = set()
    rules: set[str] = set()

    def walk(expression: Any) -> None:
        if isinstance(expression, ListReference):
            lists.add(expression.list_name)
        elif isinstance(expression, RuleReference):
            rules.add(expression.rule_name)
        elif isinstance(expression, Group):
            for item in expression.items:
                walk(item)

    walk(parse_sentence(template).expression)
    return lists, rules


def check_references(sources: Iterable[Source], merged: dict[str, dict[str, Any]]) -> None:
    """Every {list} and <rule> a sentence uses exists in its language's merged data."""
    for source in sources:
        if source.language not in merged:
            continue  # a language not enabled in intents.languages
        known = merged[source.language]
        for name, body in source.data.get("intents", {}).items():
            for block in body["data"]:
                for sentence in block["sentences"]:
                    lists, rules = _references(sentence)
                    for missing in sorted(lists - set(known["lists"]) - set(block.get("lists", {}))):
                        raise IntentFileError(f"{source.path}:{_line(sentence)}: intent {name}: unknown list "
                                              f"{{{missing}}} (define it under `lists:`)")
                    for missing in sorted(rules - set(known["expansion_rules"])):
                        raise IntentFileError(f"{source.path}:{_line(sentence)}: intent {name}: unknown rule "
                                              f"<{missing}> (define it under `expansion_rules:`)")


def load_ha(language: str) -> dict[str, Any]:
    """home-assistant-intents' data for one language, cut down to HA_INTENTS."""
    from home_assistant_intents import get_intents

    data = get_intents(HA_LANGUAGE[language])
    if data is None:  # a package without this language: only our own templates then
        return {"language": language, "intents": {}, "lists": {}, "expansion_rules": {}, "skip_words": []}
    data["intents"] = {k: v for k, v in data["intents"].items() if k in HA_INTENTS}
    data.pop("responses", None)  # ours are in responses/ (see responses.py)
    return data


def sentence_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.yaml") if p.is_file())


def read_sentence_sources(folders: Iterable[Path]) -> list[Source]:
    sources = []
    for folder in folders:
        for path in sentence_files(folder):
            data = read_yaml(path)
            if "intents" not in data:
                continue  # a responses file in the same folder
            language = file_language(path, data)
            check_sentence_file(path, data)
            sources.append(Source(path, language, data))
    return sources


def merge(languages: Iterable[str], sources: list[Source]) -> dict[str, dict[str, Any]]:
    """Per language: HA's data, then each source's intents appended (same name: more sentences), lists and
    rules added (a later file may replace a list)."""
    merged: dict[str, dict[str, Any]] = {}
    for language in languages:
        data = load_ha(language)
        data.setdefault("lists", {})
        data.setdefault("expansion_rules", {})
        for name in EMPTY_LISTS:
            data["lists"].setdefault(name, {"values": []})
        merged[language] = data
    for source in sources:
        if source.language not in merged:
            continue
        target = merged[source.language]
        plain = _plain(source.data)
        for name, body in plain.get("intents", {}).items():
            target["intents"].setdefault(name, {"data": []})["data"].extend(body["data"])
        target["lists"].update(plain.get("lists", {}))
        target["expansion_rules"].update(plain.get("expansion_rules", {}))
        target.setdefault("skip_words", []).extend(plain.get("skip_words", []))
    check_references(sources, merged)
    return merged


# -- pinyin (the Chinese KWS model as recognizer) ----------------------------------------------------------

_CJK_RUN = re.compile(r"[\u3400-\u9fff]+")


_LIST_REF = re.compile(r"\{(\w+)(?::\w+)?\}")


@functools.lru_cache(maxsize=4096)
def _pinyin(text: str) -> str:
    from pypinyin import Style, lazy_pinyin

    from assistant.intents.normalize import strip_tones

    return _CJK_RUN.sub(lambda m: strip_tones("".join(lazy_pinyin(m.group(0), style=Style.NORMAL))), text)


@functools.lru_cache(maxsize=64)
def _pinyin_numbers(start: int, stop: int) -> tuple[tuple[str, int], ...]:
    import cn2an

    pairs = []
    for n in range(max(0, start), min(stop, PINYIN_NUMBER_MAX) + 1):
        words = {_pinyin(cn2an.an2cn(n))}
        if n == 2:
            words.add("liang")
        if 10 <= n < 20:
            words.add(_pinyin("一" + cn2an.an2cn(n)))  # 一十五 as well as 十五
        pairs.extend((word, n) for word in sorted(words))
    return tuple(pairs)


def pinyin_number_list(start: int, stop: int) -> dict[str, Any]:
    """A range list as pinyin words (五 -> wu, 二十五 -> ershiwu, 两 for 2), values as numbers.

    One plain value per word rather than "(a|b)" templates: a plain value is one prefix test, a template value
    a parse per try. The lists are capped at PINYIN_NUMBER_MAX: hassil tries them entry by entry here (its
    trie index of list values is only used where whitespace separates words, not for Chinese)."""
    return {"values": [{"in": word, "out": n} for word, n in _pinyin_numbers(start, stop)]}


def to_pinyin_dict(data: dict[str, Any]) -> dict[str, Any]:
    """The same intents with every Chinese literal written as toneless pinyin without spaces."""
    out = copy.deepcopy(data)
    # Sentences with a wildcard ({timer_name}, {timer_command}) are left out: a wildcard tries every split of
    # the ~3x longer pinyin string (45 ms a match instead of 5), and a pinyin name could not be said back.
    wildcards = {name for name, spec in out["lists"].items() if spec.get("wildcard")}
    for body in out["intents"].values():
        for block in body["data"]:
            block["sentences"] = [_pinyin(s) for s in block["sentences"] if not set(_LIST_REF.findall(s)) & wildcards]
            for name, spec in block.get("lists", {}).items():
                block["lists"][name] = _pinyin_list(spec)
        body["data"] = [block for block in body["data"] if block["sentences"]]
    out["expansion_rules"] = {k: _pinyin(v) for k, v in out["expansion_rules"].items()}
    out["lists"] = {k: _pinyin_list(v) for k, v in out["lists"].items()}
    out["skip_words"] = [_pinyin(w) for w in out.get("skip_words", [])]
    out.setdefault("settings", {})["ignore_whitespace"] = True
    return out


def _pinyin_list(spec: dict[str, Any]) -> dict[str, Any]:
    if "range" in spec:
        return pinyin_number_list(int(spec["range"]["from"]), int(spec["range"]["to"]))
    if "values" in spec:
        values = []
        for value in spec["values"]:
            if isinstance(value, str):
                values.append({"in": _pinyin(value), "out": value})
            else:
                values.append({**value, "in": _pinyin(str(value["in"]))})
        return {"values": values}
    return spec
