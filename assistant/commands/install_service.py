"""`assistant install-service [--user]`: write the systemd unit for this install and this virtualenv.

The templates are package data (assistant/service/units/, read by assistant/service/unit.py, which also checks
and quotes every value): this fills in ExecStart (this venv's `assistant`), WorkingDirectory, User/Group and,
when the install lives under /home, ProtectHome=read-only so the service can still read it.

WorkingDirectory (where a relative models/ and config.yaml are found): --working-dir, else the checkout this
package runs from (a `pip install -e .` or a clone), else the current directory (a wheel or pipx install).
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
from assistant.service import unit

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]  # the checkout, when this package runs from one (else site-packages)
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
    # None: no server enabled in the config, the unit keeps PrivateNetwork=yes. Else the IPAddressAllow= list.
    network_allow: tuple[str, ...] | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--user", action="store_true", help="a user service (desktop with PipeWire/PulseAudio)"
    )
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="config.yaml (default: the working directory's, if any)"
    )
    parser.add_argument("--keywords", type=Path, metavar="FILE", help="wake words file passed to the daemon")
    parser.add_argument(
        "--working-dir",
        type=Path,
        metavar="DIR",
        help="WorkingDirectory of the service (default: this checkout, else the current directory)",
    )
    parser.add_argument(
        "--service-user",
        default=DEFAULT_SERVICE_USER,
        type=_user_name,
        metavar="NAME",
        help=f"account the system service runs as, in the audio group (default: {DEFAULT_SERVICE_USER})",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the unit instead of writing it")


def _user_name(text: str) -> str:
    """argparse type: a bad --service-user is a usage error (exit 2) naming the flag, before anything runs."""
    try:
        return unit.check_user_name(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--service-user: ")) from exc


def run(args: argparse.Namespace) -> int:
    plan = make_plan(
        user_mode=args.user,
        config=args.config,
        keywords=args.keywords,
        service_user=args.service_user,
        working_dir=args.working_dir,
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
            f"{executable} is not an executable: install the project with `pip install .` into a virtualenv"
        )
    working_dir = unit.check_path((working_dir or _default_working_dir()).resolve(), "--working-dir")
    if config is None and (working_dir / "config.yaml").is_file():
        config = working_dir / "config.yaml"
    # Each value is checked for what a unit file can hold before anything else, naming its flag.
    config = unit.check_path(config.resolve(), "--config") if config else None
    keywords = unit.check_path(keywords.resolve(), "--keywords") if keywords else None
    for label, path in (("config file", config), ("keywords file", keywords)):
        if path is not None and not path.is_file():
            raise ConfigError(f"{label} not found: {path}")
    executable = executable.absolute()
    unit.exec_path(executable, "the assistant executable")
    network_allow = _network_allow(config)
    return ServicePlan(
        user_mode=user_mode,
        executable=executable,
        working_dir=working_dir,
        config=config,
        keywords=keywords,
        service_user=unit.check_user_name(service_user),
        network_allow=network_allow,
    )


def _network_allow(config: Path | None) -> tuple[str, ...] | None:
    """When the config enables a server, the addresses the unit must let in: this machine and servers.allow_from
    (each checked: an address or network, or one of systemd's names). None when no server is enabled."""
    import ipaddress

    from assistant.settings import load_settings

    servers = load_settings(config).servers
    if not (servers.http.enabled or servers.wyoming.enabled):
        return None
    allowed = ["localhost"]
    for entry in servers.allow_from:
        if entry not in ("localhost", "link-local", "multicast", "any"):
            try:
                entry = str(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ConfigError(
                    f"servers.allow_from: {entry!r} is not an address or network (e.g. 192.168.1.0/24)"
                ) from None
        allowed.append(entry)
    loopback = ("127.0.0.1", "::1", "localhost")
    lan = [s.host for s in (servers.http, servers.wyoming) if s.enabled and s.host not in loopback]
    if lan and len(allowed) == 1:
        log.warning("servers listen on %s but servers.allow_from is empty: the unit lets in this machine only",
                    ", ".join(lan))
    return tuple(dict.fromkeys(allowed))


def _default_working_dir() -> Path:
    """The checkout this package runs from, else the current directory (site-packages is no place to run in)."""
    if (REPO / "pyproject.toml").is_file() and (REPO / "assistant" / "__init__.py").is_file():
        return REPO
    return Path.cwd()


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


def exec_start(plan: ServicePlan) -> str:
    words = [unit.exec_path(plan.executable, "the assistant executable"), "run"]
    if plan.config is not None:
        words += ["--config", unit.exec_word(str(unit.check_path(plan.config, "--config")))]
    if plan.keywords is not None:
        words += ["--keywords", unit.exec_word(str(unit.check_path(plan.keywords, "--keywords")))]
    return " ".join(words)


def _quote(arg: str) -> str:
    """One ExecStart argument as systemd reads it back (kept for callers of the old name)."""
    return unit.exec_word(arg)


def render_unit(plan: ServicePlan, template: str | None = None) -> str:
    """The template with this install's paths filled in, every value checked and quoted (service/unit.py)."""
    text = template if template is not None else unit.template_text(plan.user_mode)
    paths = [plan.executable, plan.working_dir, plan.config, plan.keywords]
    under_home = any(p is not None and _under_home(p) for p in paths)
    values = {
        "ExecStart": exec_start(plan),
        "WorkingDirectory": unit.path_value(plan.working_dir, "--working-dir"),
    }
    if not plan.user_mode:
        values["User"] = unit.check_user_name(plan.service_user)
        values["Group"] = values["User"]
        if under_home:
            # ProtectHome=yes would hide the install; the service user must still be able to read it.
            values["ProtectHome"] = "read-only"
    if plan.network_allow is not None:
        # A server is enabled: IPv4/IPv6 sockets, and only the listed peers (systemd drops other packets).
        values["PrivateNetwork"] = "no"
        values["RestrictAddressFamilies"] = "AF_UNIX AF_INET AF_INET6"
        values["IPAddressAllow"] = " ".join(plan.network_allow)
    if under_home and not plan.user_mode:
        log.warning(
            "%s is under /home: the %s account needs read access to it (or install under /opt)",
            plan.working_dir,
            plan.service_user,
        )
    return unit.Filled(values).apply(text)


def _under_home(path: Path) -> bool:
    return any(Path(root) in path.parents for root in ("/home", "/root", "/run/user"))
