"""The system unit with and without network servers: closed network by default, only the needed families and
peers when config.yaml enables a server; both verified and scored by systemd-analyze."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from assistant.commands import install_service
from assistant.errors import ConfigError
from tests.conftest import needs_tool


def _directives(text: str) -> dict[str, str]:
    return {line.split("=", 1)[0]: line.split("=", 1)[1] for line in text.splitlines()
            if "=" in line and not line.startswith(("#", "["))}


def _unit(tmp_path: Path, config_text: str | None) -> tuple[str, Path]:
    config = None
    if config_text is not None:
        config = tmp_path / "config.yaml"
        config.write_text(config_text, encoding="utf-8")
    text = install_service.render_unit(install_service.make_plan(user_mode=False, config=config,
                                                                 working_dir=tmp_path))
    path = tmp_path / "unit" / "assistant.service"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return text, path


SERVERS = "servers:\n  allow_from: [192.168.1.0/24, 10.0.0.7]\n  http:\n    enabled: true\n"


def test_no_server_keeps_the_network_closed(tmp_path: Path) -> None:
    d = _directives(_unit(tmp_path, None)[0])
    assert d["PrivateNetwork"] == "yes" and d["RestrictAddressFamilies"] == "AF_UNIX"
    assert d["IPAddressDeny"] == "any" and d["IPAddressAllow"] == ""


def test_an_enabled_server_opens_only_ip_families_and_the_configured_peers(tmp_path: Path) -> None:
    d = _directives(_unit(tmp_path, SERVERS)[0])
    assert d["PrivateNetwork"] == "no"
    assert d["RestrictAddressFamilies"] == "AF_UNIX AF_INET AF_INET6"
    assert d["IPAddressDeny"] == "any"
    assert d["IPAddressAllow"] == "localhost 192.168.1.0/24 10.0.0.7/32"


def test_a_bad_peer_range_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"servers\.allow_from: '192\.168\.1\.300/24'"):
        _unit(tmp_path, "servers:\n  allow_from: [192.168.1.300/24]\n  wyoming:\n    enabled: true\n")


def _exposure(tool: str, unit: Path) -> float:
    result = subprocess.run([tool, "security", "--offline=yes", "--no-pager", str(unit)], capture_output=True,
                            text=True, timeout=60)
    match = re.search(r"Overall exposure level for assistant\.service: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


def test_both_variants_verify_and_stay_ok_in_systemd_analyze_security(tmp_path: Path, record_property) -> None:
    tool = needs_tool("systemd-analyze", "apt-get install -y systemd (needed to verify the units)")
    (tmp_path / "closed").mkdir()
    (tmp_path / "served").mkdir()
    closed = _unit(tmp_path / "closed", None)[1]
    served = _unit(tmp_path / "served", SERVERS)[1]
    for unit in (closed, served):
        result = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "assistant.service" not in result.stderr, result.stderr
    closed_score, served_score = _exposure(tool, closed), _exposure(tool, served)
    record_property("exposure_closed", closed_score)
    record_property("exposure_served", served_score)
    print(f"systemd-analyze security: no server {closed_score}, with servers {served_score}")
    assert closed_score <= served_score <= 4.0  # 4.0 and below is "OK"
