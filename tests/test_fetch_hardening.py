"""Issue 15: hostile and broken downloads. Real servers on 127.0.0.1, real archives, the real CLI in subprocesses.

Each test is a regression test for one hole: Python without tarfile's data filter (3.11.2 on a Pi), a chain of
symlinks escaping the models folder, mirror installs linked to the mirror, oversized and trickling downloads,
archive bombs, SIGTERM mid-fetch, a .part poisoned by a bad Content-Range, a corrupt zip, two fetches at once,
and a pip-installed package finding its manifest.

Why ~650 lines: one regression test per hostile download of issue 15, and the real HTTP servers they share.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.server
import importlib.resources
import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from assistant.errors import MODEL, ModelError
from assistant.models import fetch
from assistant.models.archive import ExtractLimits
from assistant.models.download import DownloadLimits, default_deadline
from tests.support.fetch import leave_part, leftovers, part_file, serving

REPO = Path(__file__).resolve().parents[1]
WAIT_S = 120.0  # generous: the machine is shared; never a measure of speed
TOKENS = b"<blk> 0\nA 1\nB 2\n"
ENCODER = os.urandom(300_000)


# --- a 127.0.0.1 server whose every path has its own behaviour ----------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        self.server.requests.append((path, self.headers.get("Range")))
        route = self.server.routes.get(path)
        if route is None:
            self.send_error(404)
            return
        try:
            route(self)
        except OSError:
            pass  # the client went away: expected for the hostile routes

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - signature from http.server
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, Callable[[_Handler], None]] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.stop = threading.Event()  # ends the trickling and blocking routes at teardown

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: object, client_address: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[_Server]:
    with serving(_Server()) as srv:
        yield srv
        srv.stop.set()  # first, so that the trickling and blocking routes let shutdown() return


def _serve(data: bytes) -> Callable[[_Handler], None]:
    """A well-behaved file: 200, or 206 for `Range: bytes=N-`."""

    def route(h: _Handler) -> None:
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", h.headers.get("Range") or "")
        if match and int(match.group(1)) < len(data):
            start = int(match.group(1))
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            h.send_response(200)
        h.send_header("Content-Length", str(len(data) - start))
        h.end_headers()
        h.wfile.write(data[start:])

    return route


# --- archives and manifests ---------------------------------------------------------------------------------


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:bz2") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode, format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            if data is None:
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _good_archive() -> bytes:
    return _tar(
        [
            (_info("fake-model", tarfile.DIRTYPE), None),
            (_info("fake-model/encoder.int8.onnx"), ENCODER),
            (_info("fake-model/tokens.txt"), TOKENS),
        ]
    )


def _chain_of_links_archive() -> bytes:
    """The repro of issue 15: 16 nested 247-character folders with links, then `m/escape` through the chain,
    then `m/escape/EVIL.txt`. Extracted with Python 3.11.7's `extractall(filter="data")`, EVIL.txt lands two
    folders above the extraction folder (here: in the models folder itself)."""
    long_name = "d" * 247
    steps = "abcdefghijklmnop"
    members: list[tuple[tarfile.TarInfo, bytes | None]] = [(_info("m", tarfile.DIRTYPE), None)]
    path = "m"
    for step in steps:
        members.append((_info(f"{path}/{long_name}", tarfile.DIRTYPE), None))
        members.append((_info(f"{path}/{step}", tarfile.SYMTYPE, long_name), None))
        path = f"{path}/{long_name}"
    chain = "/".join(steps)
    members.append((_info(f"m/{chain}/{'l' * 254}", tarfile.SYMTYPE, "../" * len(steps)), None))
    members.append((_info("m/escape", tarfile.SYMTYPE, f"{chain}/{'l' * 254}/../../../.."), None))
    members.append((_info("m/escape/EVIL.txt"), b"pwned\n"))
    return _tar(members)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _entry(url: str, data: bytes, *, fmt: str = "tar.bz2", sha256: str | None = "auto", size: object = "auto") -> dict:
    return {
        "description": "a test model",
        "kind": "test",
        "license": "CC0-1.0",
        "archive": {
            "url": url,
            "format": fmt,
            "sha256": _sha(data) if sha256 == "auto" else sha256,
            "bytes": len(data) if size == "auto" else size,
        },
        "provides": ["tokens.txt"],
    }


def _write_manifest(tmp_path: Path, models: dict) -> Path:
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "models": models}))
    return path


def _manifest(tmp_path: Path, models: dict) -> dict[str, fetch.ModelEntry]:
    return fetch.load_manifest(_write_manifest(tmp_path, models))


def _options(models_dir: Path, **kwargs: object) -> fetch.FetchOptions:
    return fetch.FetchOptions(models_dir=models_dir, progress=False, **kwargs)  # type: ignore[arg-type]


def _assistant(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("ASSISTANT_MIRROR", "ASSISTANT_MODELS_DIR")}
    environment["PYTHONPATH"] = str(REPO)
    environment.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "assistant", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=environment,
    )


def _run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = _assistant(*args, cwd=cwd, env=env)
    out, err = proc.communicate(timeout=WAIT_S)
    return proc.returncode, out, err


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll a condition the test is waiting on (not a sleep as synchronisation: it ends when it holds)."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# --- 1. Python 3.11.2: no data filter, no extractall(filter=) ---------------------------------------------------


def test_extraction_works_without_the_data_filter(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on Python 3.11.2 (Debian 12, Raspberry Pi OS): no tarfile.data_filter, and extractall has no filter=.
    monkeypatch.delattr(tarfile, "data_filter", raising=False)

    def old_extractall(self: tarfile.TarFile, path: str = ".", members: object = None, *, numeric_owner: bool = False,
                       **unknown: object) -> None:
        if unknown:
            raise TypeError(f"extractall() got an unexpected keyword argument {next(iter(unknown))!r}")

    monkeypatch.setattr(tarfile.TarFile, "extractall", old_extractall)
    archive = _good_archive()
    server.routes["/good.tar.bz2"] = _serve(archive)
    manifest = _manifest(tmp_path, {"fake": _entry(f"{server.base}/good.tar.bz2", archive)})
    target = fetch.fetch_model(manifest["fake"], _options(tmp_path / "models"))
    assert (target / "encoder.int8.onnx").read_bytes() == ENCODER
    assert (target / "tokens.txt").read_bytes() == TOKENS
    assert leftovers(tmp_path / "models") == []

    # Our own checks still refuse what the filter would have: an escaping link, a device.
    evil = _tar([(_info("m/tokens.txt"), TOKENS), (_info("m/link", tarfile.SYMTYPE, "../../x"), None)])
    server.routes["/evil.tar.bz2"] = _serve(evil)
    manifest = _manifest(tmp_path, {"evil": _entry(f"{server.base}/evil.tar.bz2", evil)})
    with pytest.raises(ModelError, match="entry 'm/link' is a symlink pointing outside"):
        fetch.fetch_model(manifest["evil"], _options(tmp_path / "models"))


# --- 2. links: the chain-of-symlinks escape, from a folder mirror and an HTTP mirror --------------------------


@pytest.mark.parametrize("mirror_kind", ["folder", "http"])
def test_chain_of_links_archive_is_refused(server: _Server, tmp_path: Path, mirror_kind: str) -> None:
    archive = _chain_of_links_archive()
    url = "https://downloads.example.invalid/asr-models/evil.tar.bz2"
    manifest = _write_manifest(tmp_path, {"asr-zh-en": _entry(url, archive, sha256=None)})
    if mirror_kind == "folder":
        mirror = tmp_path / "mirror"
        (mirror / "downloads.example.invalid" / "asr-models").mkdir(parents=True)
        (mirror / "downloads.example.invalid" / "asr-models" / "evil.tar.bz2").write_bytes(archive)
        mirror_arg = str(mirror)
    else:
        server.routes["/downloads.example.invalid/asr-models/evil.tar.bz2"] = _serve(archive)
        mirror_arg = server.base + "/"
    models_dir = tmp_path / "models"
    code, out, err = _run(
        "models", "--manifest", str(manifest), "--models-dir", str(models_dir),
        "fetch", "asr-zh-en", "--allow-unverified", "--mirror", mirror_arg,
    )  # fmt: skip
    assert code == MODEL, err
    assert "unsafe archive evil.tar.bz2: entry 'm/a' is a symlink" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.rglob("EVIL.txt")) == []  # written nowhere, inside or out
    assert not (models_dir / "asr-zh-en").exists()
    assert leftovers(models_dir) == []


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (_info("m/tokens-link", tarfile.SYMTYPE, "tokens.txt"), "is a symlink (tokens.txt); model archives must"),
        (_info("m/hard", tarfile.LNKTYPE, "m/tokens.txt"), "is a hard link (m/tokens.txt); model archives must"),
        (_info("m/hard", tarfile.LNKTYPE, "../../etc/passwd"), "is a hard link pointing outside the archive"),
        (_info("m/fifo", tarfile.FIFOTYPE), "is a device or special file"),
    ],
    ids=["symlink-inside", "hardlink-inside", "hardlink-outside", "fifo"],
)
def test_links_are_refused_even_when_they_look_inside(
    tmp_path: Path, member: tarfile.TarInfo, reason: str
) -> None:
    archive = tmp_path / "a.tar.bz2"
    archive.write_bytes(_tar([(_info("m/tokens.txt"), TOKENS), (member, None)]))
    with pytest.raises(ModelError, match=f"entry '{member.name}' {re.escape(reason)}"):
        fetch.safe_extract(archive, "tar.bz2", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []  # the good member before it is gone too


def test_a_member_cannot_write_through_an_existing_path(tmp_path: Path) -> None:
    # The same file twice (the second could be a different kind): O_EXCL refuses the second, naming it.
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_tar([(_info("m/x"), b"one"), (_info("m/x"), b"two")], mode="w:gz"))
    with pytest.raises(ModelError, match="entry 'm/x' appears twice"):
        fetch.safe_extract(archive, "tar.gz", tmp_path / "out")
    # A file where a later member needs a folder.
    archive.write_bytes(_tar([(_info("m/x"), b"one"), (_info("m/x/y"), b"two")], mode="w:gz"))
    with pytest.raises(ModelError, match="entry 'm/x/y' needs folder 'x', which is not a plain folder"):
        fetch.safe_extract(archive, "tar.gz", tmp_path / "out2")


def test_extracted_files_are_plain_and_modes_are_tamed(tmp_path: Path) -> None:
    setuid = _info("m/tool")
    setuid.mode = 0o4777
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_tar([(setuid, b"#!/bin/sh\n"), (_info("m/tokens.txt"), TOKENS)], mode="w:gz"))
    fetch.safe_extract(archive, "tar.gz", tmp_path / "out")
    assert (tmp_path / "out" / "m" / "tool").stat().st_mode & 0o7777 == 0o755
    assert (tmp_path / "out" / "m" / "tokens.txt").stat().st_mode & 0o7777 == 0o644


# --- 3. mirror folders are copied, and the copy is what is hashed --------------------------------------------


def test_mirror_install_is_a_copy_and_the_receipt_hashes_it(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "kws").mkdir(parents=True)
    (mirror / "kws" / "tokens.txt").write_bytes(TOKENS)
    entry = _entry("https://downloads.example.invalid/kws.tar.bz2", b"unused")
    entry["mirror"] = {"path": "kws", "files": {"tokens.txt": {"sha256": _sha(TOKENS), "bytes": len(TOKENS)}}}
    manifest = _manifest(tmp_path, {"kws": entry})
    target = fetch.fetch_model(manifest["kws"], _options(tmp_path / "models", mirror=str(mirror)))

    installed = target / "tokens.txt"
    assert installed.stat().st_nlink == 1
    assert not os.path.samefile(installed, mirror / "kws" / "tokens.txt")
    with (mirror / "kws" / "tokens.txt").open("ab") as f:  # the mirror's owner edits the mirror
        f.write(b"EVIL 3\n")
    assert installed.read_bytes() == TOKENS
    receipt = json.loads((target / fetch.RECEIPT_NAME).read_text())
    assert receipt["files"]["tokens.txt"] == _sha(installed.read_bytes()) == _sha(TOKENS)

    # The edited mirror is now refused: the copy's digest no longer matches the manifest.
    with pytest.raises(ModelError, match="checksum mismatch for .*tokens.txt: more than 16 bytes, expected 16"):
        fetch.fetch_model(manifest["kws"], _options(tmp_path / "models", mirror=str(mirror)))
    assert installed.read_bytes() == TOKENS


# --- 10. downloads: size, deadline, bad ranges, locks, signals -----------------------------------------------


def test_a_body_larger_than_the_manifest_size_is_cut_off(server: _Server, tmp_path: Path) -> None:
    sent = {"bytes": 0}

    def endless(h: _Handler) -> None:  # no Content-Length: the body ends when the server closes
        h.send_response(200)
        h.end_headers()
        block = b"\0" * 65536
        while sent["bytes"] < 300_000_000 and not h.server.stop.is_set():
            h.wfile.write(block)
            sent["bytes"] += len(block)

    def announced(h: _Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "300000000")
        h.end_headers()
        h.wfile.write(b"\0" * 65536)

    server.routes["/endless.tar.bz2"] = endless
    server.routes["/announced.tar.bz2"] = announced
    manifest = _manifest(
        tmp_path,
        {
            "endless": _entry(f"{server.base}/endless.tar.bz2", b"x", sha256=None, size=1_000_000),
            "announced": _entry(f"{server.base}/announced.tar.bz2", b"x", sha256=None, size=1_000_000),
        },
    )
    models_dir = tmp_path / "models"
    options = _options(models_dir, allow_unverified=True)
    with pytest.raises(ModelError, match="larger than expected: the server sent more than 1000000 bytes"):
        fetch.fetch_model(manifest["endless"], options)
    with pytest.raises(ModelError, match="larger than expected: the server announced 300000000 bytes"):
        fetch.fetch_model(manifest["announced"], options)
    assert leftovers(models_dir) == []  # the oversized .part files are gone
    assert sent["bytes"] < 100_000_000  # the client hung up long before 300 MB


def test_a_trickling_server_hits_the_deadline(server: _Server, tmp_path: Path) -> None:
    def trickle(h: _Handler) -> None:  # one byte at a time, never enough to end
        h.send_response(200)
        h.send_header("Content-Length", "1000000")
        h.end_headers()
        while not h.server.stop.wait(0.05):
            h.wfile.write(b"x")
            h.wfile.flush()

    server.routes["/slow.tar.bz2"] = trickle
    manifest = _manifest(tmp_path, {"slow": _entry(f"{server.base}/slow.tar.bz2", b"x" * 1_000_000)})
    models_dir = tmp_path / "models"
    options = _options(models_dir, download=DownloadLimits(deadline_s=1.0))
    with pytest.raises(ModelError, match=r"did not finish within 1 s \(\d+ bytes so far, kept in .*\.part"):
        fetch.fetch_model(manifest["slow"], options)
    assert [p.suffix for p in (models_dir / ".downloads").iterdir()] == [".part"]  # kept for resuming; lock gone


def test_default_deadline_grows_with_the_size() -> None:
    asr = default_deadline(490_000_000)
    assert 10 * 60 < asr < 60 * 60  # the 490 MB model: generous for a Pi, but not days
    assert default_deadline(1_000) >= 60
    assert default_deadline(None) < 24 * 3600


def test_a_part_with_a_bad_content_range_is_discarded_and_restarted(server: _Server, tmp_path: Path) -> None:
    archive = _good_archive()

    def wrong_range(h: _Handler) -> None:  # answers every Range with the file from byte 0
        if h.headers.get("Range"):
            h.send_response(206)
            h.send_header("Content-Range", f"bytes 0-{len(archive) - 1}/{len(archive)}")
        else:
            h.send_response(200)
        h.send_header("Content-Length", str(len(archive)))
        h.end_headers()
        h.wfile.write(archive)

    url = f"{server.base}/r.tar.bz2"
    server.routes["/r.tar.bz2"] = wrong_range
    manifest = _manifest(tmp_path, {"fake": _entry(url, archive)})
    models_dir = tmp_path / "models"
    leave_part(models_dir, url, archive[:1000])
    target = fetch.fetch_model(manifest["fake"], _options(models_dir))
    assert (target / "tokens.txt").read_bytes() == TOKENS
    assert server.requests == [("/r.tar.bz2", "bytes=1000-"), ("/r.tar.bz2", None)]
    assert leftovers(models_dir) == []


def _blocking(server: _Server, path: str) -> tuple[bytes, str, threading.Event]:
    """A good archive at `path` of which the server sends half the body, then waits until it stops; returns
    the archive, its URL and an event set once the half is sent."""
    data = _good_archive()
    started = threading.Event()

    def route(h: _Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data[: len(data) // 2])
        h.wfile.flush()
        started.set()
        h.server.stop.wait(WAIT_S)

    server.routes[path] = route
    return data, server.base + path, started


def test_sigterm_mid_download_leaves_no_staging_folder(server: _Server, tmp_path: Path) -> None:
    archive, url, started = _blocking(server, "/s.tar.bz2")
    manifest = _write_manifest(tmp_path, {"fake": _entry(url, archive)})
    models_dir = tmp_path / "models"
    proc = _assistant("models", "--manifest", str(manifest), "--models-dir", str(models_dir), "fetch", "fake")
    try:
        assert started.wait(WAIT_S), "the fetch never reached the server"
        _wait_for(lambda: any(p.suffix == ".part" and p.stat().st_size > 0
                              for p in (models_dir / ".downloads").iterdir()), "bytes in the .part file")
        assert [p.name for p in models_dir.iterdir() if p.name.startswith(".fetch-")]  # it is staging now
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert [p.name for p in models_dir.iterdir() if p.name.startswith(".fetch-")] == []
    assert [p.suffix for p in (models_dir / ".downloads").iterdir()] == [".part"]  # kept, to resume


def test_staging_left_by_a_killed_fetch_is_removed_next_time(server: _Server, tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = models_dir / f".fetch-fake-{int(gone.stdout)}-abcd1234"
    live = models_dir / f".fetch-other-{os.getpid()}-abcd1234"  # a fetch running right now elsewhere
    for folder in (dead, live):
        (folder / "x").mkdir(parents=True)
    archive = _good_archive()
    server.routes["/k.tar.bz2"] = _serve(archive)
    manifest = _manifest(tmp_path, {"fake": _entry(f"{server.base}/k.tar.bz2", archive)})
    fetch.fetch_model(manifest["fake"], _options(models_dir))
    assert not dead.exists()
    assert live.exists()


def test_a_second_fetch_of_the_same_download_fails_clearly(server: _Server, tmp_path: Path) -> None:
    archive, url, started = _blocking(server, "/c.tar.bz2")
    manifest = _manifest(tmp_path, {"fake": _entry(url, archive)})
    models_dir = tmp_path / "models"
    outcome: dict[str, object] = {}

    def first() -> None:
        try:
            outcome["path"] = fetch.fetch_model(manifest["fake"], _options(models_dir))
        except Exception as exc:  # noqa: BLE001 - reported to the test below
            outcome["error"] = exc

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert started.wait(WAIT_S)
        with pytest.raises(ModelError, match=r"another fetch is downloading into .*c\.tar\.bz2\.part \(it holds"):
            fetch.fetch_model(manifest["fake"], _options(models_dir))
    finally:
        server.routes["/c.tar.bz2"] = _serve(archive)
        server.stop.set()  # the first fetch's connection ends short; it resumes with Range and finishes
        thread.join(WAIT_S)
    assert outcome.get("path") == models_dir / "fake", outcome
    assert (models_dir / "fake" / "encoder.int8.onnx").read_bytes() == ENCODER
    assert leftovers(models_dir) == []


def test_the_part_lock_is_an_flock_any_process_honours(server: _Server, tmp_path: Path) -> None:
    archive = _good_archive()
    url = f"{server.base}/l.tar.bz2"
    server.routes["/l.tar.bz2"] = _serve(archive)
    manifest = _manifest(tmp_path, {"fake": _entry(url, archive)})
    models_dir = tmp_path / "models"
    (models_dir / ".downloads").mkdir(parents=True)
    part = part_file(models_dir, url)
    lock = part.with_name(part.name + ".lock")
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(ModelError, match=re.escape(str(lock))):
            fetch.fetch_model(manifest["fake"], _options(models_dir))
    assert server.requests == []  # nothing was downloaded while another process held the .part
    fetch.fetch_model(manifest["fake"], _options(models_dir))
    assert leftovers(models_dir) == []


# --- 10. archive bombs and corrupt archives --------------------------------------------------------------------


def test_archive_bombs_are_refused_by_size_and_by_count(server: _Server, tmp_path: Path) -> None:
    zeros = _tar([(_info("m/tokens.txt"), TOKENS), (_info("m/zeros.bin"), b"\0" * 4_000_000)], mode="w:gz")
    many = _tar([(_info(f"m/f{i}"), b"") for i in range(30)] + [(_info("m/tokens.txt"), TOKENS)], mode="w:gz")
    server.routes["/zeros.tar.gz"] = _serve(zeros)
    server.routes["/many.tar.gz"] = _serve(many)
    manifest = _manifest(
        tmp_path,
        {
            "zeros": _entry(f"{server.base}/zeros.tar.gz", zeros, fmt="tar.gz"),
            "many": _entry(f"{server.base}/many.tar.gz", many, fmt="tar.gz"),
        },
    )
    models_dir = tmp_path / "models"
    limits = ExtractLimits(max_bytes=1_000_000, max_members=10)
    with pytest.raises(ModelError, match=r"entry 'm/zeros\.bin' declares 4000000 bytes.*more than 1000000"):
        fetch.fetch_model(manifest["zeros"], _options(models_dir, extract=limits))
    with pytest.raises(ModelError, match=r"entry 'm/f10' is member number 11: over the limit of 10"):
        fetch.fetch_model(manifest["many"], _options(models_dir, extract=limits))
    assert not (models_dir / "zeros").exists() and not (models_dir / "many").exists()
    assert leftovers(models_dir) == []
    # The default limits follow the archive's size, with a ceiling.
    assert ExtractLimits.for_archive(len(zeros)).max_bytes < 300_000_000
    assert ExtractLimits.for_archive(490_000_000).max_bytes >= 2 * 490_000_000
    assert ExtractLimits.for_archive(10**12).max_bytes == ExtractLimits().max_bytes


def test_a_zip_bomb_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    # The central directory's sizes are checked first; the writer also counts the bytes it really writes.
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("m/zeros.bin", b"\0" * 3_000_000)
    with pytest.raises(ModelError, match=r"entry 'm/zeros\.bin' declares 3000000 bytes"):
        fetch.safe_extract(archive, "zip", tmp_path / "out", ExtractLimits(max_bytes=1_000_000))
    assert list((tmp_path / "out").iterdir()) == []


def test_a_corrupt_zip_is_a_model_error_with_exit_4(tmp_path: Path) -> None:
    good = io.BytesIO()
    with zipfile.ZipFile(good, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("m/tokens.txt", TOKENS * 1000)
    corrupt = bytearray(good.getvalue())
    corrupt[40:60] = b"\xff" * 20  # inside the compressed data of the only member
    cases = {"notzip": b"this is not a zip at all" * 10, "corrupt": bytes(corrupt)}
    models = {}
    mirror = tmp_path / "mirror" / "downloads.example.invalid"
    mirror.mkdir(parents=True)
    for name, data in cases.items():
        (mirror / f"{name}.zip").write_bytes(data)
        models[name] = _entry(f"https://downloads.example.invalid/{name}.zip", data, fmt="zip")
    manifest = _write_manifest(tmp_path, models)
    for name in cases:
        code, _, err = _run(
            "models", "--manifest", str(manifest), "--models-dir", str(tmp_path / "models"),
            "fetch", name, "--mirror", str(tmp_path / "mirror"),
        )  # fmt: skip
        assert code == MODEL, err
        assert "Traceback" not in err
        assert f"{name}.zip" in err and ("cannot extract" in err or "is corrupt" in err), err


def test_a_truncated_tar_names_the_member(tmp_path: Path) -> None:
    data = _tar([(_info("m/tokens.txt"), TOKENS), (_info("m/encoder.onnx"), ENCODER)], mode="w:gz")
    archive = tmp_path / "t.tar.gz"
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"t\.tar\.gz"):
        fetch.safe_extract(archive, "tar.gz", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


# --- 13. the manifest is package data; models live where settings say, not in site-packages -------------------


def test_manifest_is_read_from_the_package() -> None:
    resource = importlib.resources.files("assistant.models").joinpath("manifest.yaml")
    assert resource.is_file()
    assert "kws-en" in fetch.load_manifest()
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'"assistant\.models" = \[[^]]*"manifest\.yaml"', pyproject)


def test_models_list_from_a_folder_outside_the_checkout(tmp_path: Path) -> None:
    code, out, err = _run("models", "list", cwd=tmp_path)
    assert code == 0, err
    assert out.splitlines()[0] == f"models in {tmp_path.resolve() / 'models'}"
    known = len(fetch.load_manifest())
    assert len(out.splitlines()) == 1 + known  # the header and every model of the packaged manifest
    code, out, err = _run("models", "list", "--json", cwd=tmp_path)
    assert code == 0 and len(json.loads(out)) == known


def test_a_manifest_name_cannot_point_outside_the_models_folder(tmp_path: Path) -> None:
    from assistant.errors import ConfigError

    with pytest.raises(ConfigError, match=r"models\.\.\./evil: a model name is letters"):
        _manifest(tmp_path, {"../evil": _entry("https://x.invalid/a.tar.bz2", b"x")})
    bad_file = _entry("https://x.invalid/a.tar.bz2", b"x")
    bad_file["mirror"] = {"path": "p", "files": {"../../x": {"sha256": None}}}
    with pytest.raises(ConfigError, match=r"file name '\.\./\.\./x' must be a plain file name"):
        _manifest(tmp_path, {"ok": bad_file})

