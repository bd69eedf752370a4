"""Fuzzing model archives (tar.gz, tar.bz2, zip) with hostile members: links, absolute paths, `..`, devices,
FIFOs, sizes past the limit, long and deep names.

Property: an archive whose members are all plain files and folders with fresh names extracts in full; any
other archive is refused with a ModelError that names the first bad member, leaves the destination empty,
and writes nothing outside it. Checked with and without tarfile's data filter (absent on Python 3.11.2).
"""

from __future__ import annotations

import bz2
import gzip
import io
import os
import stat
import tarfile
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assistant.errors import ModelError
from assistant.models.archive import ExtractLimits, safe_extract

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=os.environ.get("CI", "").lower() in ("1", "true", "yes"),
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
LIMITS = ExtractLimits(max_bytes=64_000, max_members=40)
SENTINEL = b"outside: must never change\n"

# Targets a link may point at: inside-looking, escaping, absolute, through the sentinel beside the destination.
LINK_TARGETS = st.sampled_from(
    ["tokens.txt", "../sentinel.txt", "../../sentinel.txt", "/etc/passwd", ".", "sub/../..", "a" * 300]
)
BAD_NAMES = st.sampled_from(
    ["/abs/file", "../up.txt", "m/../../up.txt", "m/./../../x", "C:/windows.txt", "m/" + "../" * 20 + "x"]
)


@st.composite
def _members(draw: Any) -> list[dict[str, Any]]:
    """A list of member specs; good ones have unique names, so only a bad kind can make extraction fail."""
    count = draw(st.integers(min_value=1, max_value=8))
    members = []
    for index in range(count):
        kind = draw(
            st.sampled_from(["file", "file", "file", "dir", "symlink", "hardlink", "badname", "chr", "fifo", "huge"])
        )
        depth = draw(st.integers(min_value=0, max_value=3))
        long_part = draw(st.sampled_from(["", "n" * 200]))
        name = "/".join(["m", *[f"d{index}{long_part}"] * depth, f"f{index}"])
        spec: dict[str, Any] = {"kind": kind, "name": name}
        if kind == "file":
            spec["data"] = draw(st.binary(max_size=2000))
        elif kind in ("symlink", "hardlink"):
            spec["target"] = draw(LINK_TARGETS)
        elif kind == "badname":
            spec["name"] = draw(BAD_NAMES)
            spec["data"] = b"x"
        elif kind == "huge":
            spec["size"] = draw(st.integers(min_value=LIMITS.max_bytes + 1, max_value=10**12))
        members.append(spec)
    return members


def _bad(spec: dict[str, Any]) -> bool:
    return spec["kind"] not in ("file", "dir")


def _tar_bytes(members: list[dict[str, Any]]) -> bytes:
    """A tar stream written header by header, so a member can claim a size it does not carry."""
    out = io.BytesIO()
    for spec in members:
        info = tarfile.TarInfo(spec["name"])
        info.mode = 0o644
        data = spec.get("data", b"")
        kind = spec["kind"]
        info.type = {
            "dir": tarfile.DIRTYPE,
            "symlink": tarfile.SYMTYPE,
            "hardlink": tarfile.LNKTYPE,
            "chr": tarfile.CHRTYPE,
            "fifo": tarfile.FIFOTYPE,
        }.get(kind, tarfile.REGTYPE)
        info.linkname = spec.get("target", "")
        info.size = spec.get("size", len(data)) if info.type == tarfile.REGTYPE else 0
        out.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        if kind == "huge":
            break  # the header claims more data than follows: the archive ends here
        if info.type == tarfile.REGTYPE:
            out.write(data + b"\0" * (-len(data) % tarfile.BLOCKSIZE))
    out.write(b"\0" * tarfile.BLOCKSIZE * 2)
    return out.getvalue()


def _zip_bytes(members: list[dict[str, Any]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for spec in members:
            kind = spec["kind"]
            info = zipfile.ZipInfo(spec["name"] + ("/" if kind == "dir" else ""))
            mode = {
                "dir": stat.S_IFDIR | 0o755,
                "symlink": stat.S_IFLNK | 0o777,
                "hardlink": stat.S_IFLNK | 0o777,  # zip has no hard links: a symlink stands in
                "chr": stat.S_IFCHR | 0o644,
                "fifo": stat.S_IFIFO | 0o644,
            }.get(kind, stat.S_IFREG | 0o644)
            info.external_attr = mode << 16
            data = spec.get("target", "").encode() if kind in ("symlink", "hardlink") else spec.get("data", b"")
            if kind == "huge":
                data = b"\0" * (LIMITS.max_bytes + 1)  # real bytes: zip sizes come from the data
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # duplicate bad names: intended
                zf.writestr(info, data)
    return out.getvalue()


def _check(members: list[dict[str, Any]], fmt: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "sentinel.txt").write_bytes(SENTINEL)
        archive = root / f"a.{fmt}"
        if fmt == "zip":
            archive.write_bytes(_zip_bytes(members))
        else:
            raw = _tar_bytes(members)
            archive.write_bytes(gzip.compress(raw) if fmt == "tar.gz" else bz2.compress(raw))
        dest = root / "out"
        bad = [spec for spec in members if _bad(spec)]
        try:
            safe_extract(archive, fmt, dest, LIMITS)
        except ModelError as exc:
            assert bad, f"a clean archive was refused: {exc}"
            first = bad[0]["name"] + ("/" if fmt == "zip" and bad[0]["kind"] == "dir" else "")
            assert f"entry {first!r}" in str(exc), (str(exc), first)
            assert list(dest.iterdir()) == []
        else:
            assert not bad, f"accepted a bad member: {bad[0]}"
            for spec in members:
                path = dest / spec["name"]
                if spec["kind"] == "file":
                    assert path.read_bytes() == spec["data"]
                else:
                    assert path.is_dir()
        # Nothing outside the destination changed or appeared.
        assert sorted(p.name for p in root.iterdir()) == sorted(["sentinel.txt", archive.name, "out"])
        assert (root / "sentinel.txt").read_bytes() == SENTINEL
        for folder, dirs, files in os.walk(dest):
            for name in dirs + files:
                path = os.path.join(folder, name)
                assert not os.path.islink(path)
                assert os.path.realpath(path).startswith(os.path.realpath(dest) + os.sep)


@pytest.mark.parametrize("data_filter", [True, False], ids=["with-data-filter", "python-3.11.2"])
@pytest.mark.parametrize("fmt", ["tar.gz", "tar.bz2"])
@FUZZ
@given(members=_members())
def test_tar_members(monkeypatch: pytest.MonkeyPatch, data_filter: bool, fmt: str, members: list) -> None:
    if not data_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    _check(members, fmt)


@FUZZ
@given(members=_members())
def test_zip_members(members: list) -> None:
    _check(members, "zip")


@FUZZ
@given(data=st.binary(max_size=4000), fmt=st.sampled_from(["tar.gz", "tar.bz2", "zip"]))
def test_random_bytes_are_refused_cleanly(data: bytes, fmt: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / f"a.{fmt}"
        archive.write_bytes(data)
        try:
            safe_extract(archive, fmt, Path(tmp) / "out", LIMITS)
        except ModelError as exc:
            assert archive.name in str(exc)
        assert sorted(p.name for p in Path(tmp).iterdir()) == sorted([archive.name, "out"])
