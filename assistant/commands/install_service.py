"""`assistant install-service [--user]`: write the systemd unit for this checkout and this virtualenv.

The units in systemd/ are the templates: this fills in ExecStart (this venv's `assistant`), WorkingDirectory,
User/Group and, when the install lives under /home, ProtectHome=read-only so the service can still read it.
"""

from __future__ import annotations

import argparse
import logging
import os
import pwd
import sys
from dataclasses import dataclass
from pathlib import Path

from assistant.errors import AssistantError, ConfigError

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "systemd"
UNIT_NAME = "assistant.service"
DEFAULT_SERVICE_USER = "assistant"


@dataclass(frozen=True)
class ServicePlan:
    user_mode: bool  # a user service (PipeWire/PulseAudio desktops) instead of a system service
    executable: Path  # the `assistant` console script of this virtualenv
    working_dir: Path
    config: Path | None
    keywords: Path | None
    service_user: str  # system service only


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--user", action="store_true", help="a user service (desktop with PipeWire/PulseAudio)"
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="config.yaml (default: the repo's)")
    parser.add_argument("--keywords", type=Path, metavar="FILE", help="wake words file passed to the daemon")
    parser.add_argument(
        "--service-user",
        default=DEFAULT_SERVICE_USER,
        metavar="NAME",
        help=f"account the system service runs as, in the audio group (default: {DEFAULT_SERVICE_USER})",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the unit instead of writing it")


def run(args: argparse.Namespace) -> int:
    plan = make_plan(
        user_mode=args.user, config=args.config, keywords=args.keywords, service_user=args.service_user
    )
    text = render_unit(plan)
    if args.dry_run:
        sys.stdout.write(text)
        return 0
    path = unit_path(plan.user_mode)
    if not plan.user_mode and os.geteuid() != 0:
        raise AssistantError(
            f"writing {path} needs root: run `sudo {plan.executable} install-service`, "
            "or `--user` for a user service, or `--dry-run` to see the unit"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    print(f"wrote {path}")
    systemctl = "systemctl --user" if plan.user_mode else "systemctl"
    if not plan.user_mode and not _user_exists(plan.service_user):
        print(
            f"create the service account first: useradd --system --user-group --groups audio "
            f"--home-dir /var/lib/assistant --shell /usr/sbin/nologin {plan.service_user}"
        )
    print(f"then: {systemctl} daemon-reload && {systemctl} enable --now assistant")
    print(f"logs: journalctl {'--user ' if plan.user_mode else ''}-u assistant -f")
    return 0


def make_plan(
    *,
    user_mode: bool,
    config: Path | None = None,
    keywords: Path | None = None,
    service_user: str = DEFAULT_SERVICE_USER,
    executable: Path | None = None,
    working_dir: Path | None = None,
) -> ServicePlan:
    executable = executable or _this_assistant()
    if not os.access(executable, os.X_OK):
        raise AssistantError(
            f"{executable} is not an executable: install the project with `pip install -e .`"
        )
    working_dir = (working_dir or REPO).resolve()
    if config is None and (working_dir / "config.yaml").is_file():
        config = working_dir / "config.yaml"
    for label, path in (("config file", config), ("keywords file", keywords)):
        if path is not None and not path.is_file():
            raise ConfigError(f"{label} not found: {path}")
    return ServicePlan(
        user_mode=user_mode,
        executable=executable.absolute(),
        working_dir=working_dir,
        config=config.resolve() if config else None,
        keywords=keywords.resolve() if keywords else None,
        service_user=service_user,
    )


def _this_assistant() -> Path:
    # sys.prefix is the venv; do not resolve sys.executable, its symlink points at the system python.
    return Path(sys.prefix) / "bin" / "assistant"


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def unit_path(user_mode: bool) -> Path:
    if user_mode:
        config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        return config_home / "systemd" / "user" / UNIT_NAME
    return Path("/etc/systemd/system") / UNIT_NAME


def template_path(user_mode: bool) -> Path:
    return TEMPLATES / ("assistant-user.service" if user_mode else "assistant.service")


def exec_start(plan: ServicePlan) -> str:
    argv = [str(plan.executable), "run"]
    if plan.config is not None:
        argv += ["--config", str(plan.config)]
    if plan.keywords is not None:
        argv += ["--keywords", str(plan.keywords)]
    return " ".join(_quote(arg) for arg in argv)


def _quote(arg: str) -> str:
    """Quote one ExecStart word: '%' is a specifier and whitespace splits words in unit files."""
    arg = arg.replace("%", "%%")
    if any(c.isspace() for c in arg) or '"' in arg or "\\" in arg:
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return arg


def render_unit(plan: ServicePlan, template: str | None = None) -> str:
    """The template with this install's paths filled in."""
    text = template if template is not None else template_path(plan.user_mode).read_text()
    paths = [plan.executable, plan.working_dir, plan.config, plan.keywords]
    under_home = any(p is not None and _under_home(p) for p in paths)
    replacements = {
        "ExecStart": exec_start(plan),
        "WorkingDirectory": _quote(str(plan.working_dir)),
    }
    if not plan.user_mode:
        replacements["User"] = plan.service_user
        replacements["Group"] = plan.service_user
        if under_home:
            # ProtectHome=yes would hide the install; the service user must still be able to read it.
            replacements["ProtectHome"] = "read-only"
    out = []
    for line in text.splitlines():
        key = line.split("=", 1)[0]
        out.append(f"{key}={replacements[key]}" if "=" in line and key in replacements else line)
    if under_home and not plan.user_mode:
        log.warning(
            "%s is under /home: the %s account needs read access to it (or install under /opt)",
            plan.working_dir,
            plan.service_user,
        )
    return "\n".join(out) + "\n"


def _under_home(path: Path) -> bool:
    return any(Path(root) in path.parents for root in ("/home", "/root", "/run/user"))
