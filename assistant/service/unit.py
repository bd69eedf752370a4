"""The systemd unit that `assistant install-service` writes: a packaged template, filled with checked values.

Every value that goes into the unit is checked or quoted here, because a unit file is line-oriented and runs
as configured: a newline in a user name or path would add a directive of the caller's choosing (an
`ExecStartPre=+...` runs as root). The rules are systemd's (systemd.syntax(7), systemd.service(7),
systemd.unit(7) "Specifiers"); systemd 252 was checked with `systemd-analyze verify`:

- User=/Group=: a POSIX user name (see USER_NAME); anything else is refused, not escaped.
- Paths: no control characters (newline, tab, DEL, ...), no undecodable bytes, no surrounding whitespace
  (the unit parser strips it); `%` is a specifier and is written `%%` everywhere.
- ExecStart= arguments: `$` is written `$$` (else `${X}` is substituted from the environment), and a word with
  anything but plain path characters is double-quoted with C escapes for `\\` and `"`.
- The executable (ExecStart's first word): systemd refuses quotes and backslashes in it whatever the quoting
  ("Executable name contains special characters"), so those are refused here with the reason; `$` is literal
  in that position.
- WorkingDirectory=: the rest of the line is the path, unquoted (systemd does not unquote it), `%` doubled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from assistant.errors import ConfigError

SYSTEM_TEMPLATE = "assistant.service"
USER_TEMPLATE = "assistant-user.service"
# POSIX portable user names as Debian's useradd takes them by default (NAME_REGEX), with its 32-character
# limit: no dots, no leading digit or hyphen, nothing that systemd or a shell could read as syntax.
USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")  # ExecStart words that need no quotes
_EXEC_FORBIDDEN = "\"'\\"


def template_text(user_mode: bool) -> str:
    """The packaged unit template (assistant/service/units/), found the same way in a checkout and a wheel."""
    name = USER_TEMPLATE if user_mode else SYSTEM_TEMPLATE
    return resources.files("assistant.service").joinpath("units", name).read_text(encoding="utf-8")


def check_user_name(name: str, label: str = "--service-user") -> str:
    if not USER_NAME.fullmatch(name):
        raise ConfigError(
            f"{label}: {_show(name)} is not a valid user name (lowercase letters, digits, '_' and '-', "
            "starting with a letter or '_', at most 32 characters)"
        )
    return name


def check_path(path: Path, label: str) -> Path:
    """`path` if it can be written into a unit file; else ConfigError naming `label` (the flag or key)."""
    text = str(path)
    bad = next((c for c in text if not c.isprintable() and c != " "), None)
    if bad is not None:
        kind = "an undecodable byte" if "\udc80" <= bad <= "\udcff" else f"the control character {bad!r}"
        raise ConfigError(f"{label}: path {_show(text)} contains {kind}; a unit file cannot hold it")
    if text != text.strip():
        raise ConfigError(f"{label}: path {_show(text)} begins or ends with whitespace; a unit file strips it")
    if not path.is_absolute():
        raise ConfigError(f"{label}: path {_show(text)} must be absolute in a unit file")
    return path


def exec_word(arg: str) -> str:
    """One ExecStart argument, escaped and quoted so that systemd passes exactly `arg` to the program."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if _PLAIN_WORD.fullmatch(escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exec_path(path: Path, label: str) -> str:
    """ExecStart's executable word."""
    text = str(check_path(path, label))
    if any(c in text for c in _EXEC_FORBIDDEN):
        raise ConfigError(
            f"{label}: {_show(text)} contains a quote or backslash, which systemd refuses in an executable "
            "path; install the virtualenv in a folder without them"
        )
    escaped = text.replace("%", "%%")
    return escaped if _PLAIN_WORD.fullmatch(escaped) else f'"{escaped}"'


def path_value(path: Path, label: str) -> str:
    """A path as the whole value of a directive such as WorkingDirectory= (not unquoted by systemd)."""
    return str(check_path(path, label)).replace("%", "%%")


@dataclass(frozen=True)
class Filled:
    """The directives to replace in a template: key -> the value as it goes into the file (already escaped)."""

    values: dict[str, str]

    def apply(self, template: str) -> str:
        for key, value in self.values.items():
            # Belt and braces: every value reaching this point went through a checker above.
            if "\n" in value or "\r" in value:
                raise ValueError(f"{key}= value spans lines: {value!r}")
        out = []
        for line in template.splitlines():
            key = line.split("=", 1)[0]
            out.append(f"{key}={self.values[key]}" if "=" in line and key in self.values else line)
        return "\n".join(out) + "\n"


def _show(text: str, limit: int = 80) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."
