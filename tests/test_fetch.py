"""assistant/fetch.py against a local HTTP server on 127.0.0.1 serving archives built here; real mirrors.

Why ~440 lines: the test server (Range requests, dropped connections, redirects) is half of it and serves only
these tests; the rest is one test per rule of fetch.py (checksums, resume, unsafe archives, atomic installs).
"""

from __future__ import annotations

import hashlib
import http.server
import io
import logging
import os
import re
import socket
import tarfile
import urllib.parse
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from assistant.errors import ModelError
from assistant.models import fetch
from tests.support.fetch import leave_part, leftovers, serving

# --- a small HTTP server with Range support and a "drop the connection halfway" mode ----------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        range_header = self.headers.get("Range")
        self.server.requests.append((path, range_header))
        data = self.server.lookup(path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if range_header:
            match = re.fullmatch(r"bytes=(\d+)-", range_header)
            assert match, range_header
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if path in self.server.drop_once:
            self.server.drop_once.discard(path)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)  # the client sees a short body
            return
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - signature from http.server
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.root = root
        self.requests: list[tuple[str, str | None]] = []
        self.drop_once: set[str] = set()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def lookup(self, path: str) -> bytes | None:
        if path in self.files:
            return self.files[path]
        if self.root is not None:
            candidate = (self.root / path.lstrip("/")).resolve()
            if self.root in candidate.parents and candidate.is_file():
                return candidate.read_bytes()
        return None

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the dropped connection makes the handler's final flush fail: expected


@pytest.fixture()
def server() -> Iterator[_Server]:
    with serving(_Server()) as srv:
        yield srv


# --- archives and manifests built by the tests ------------------------------------------------------------

ENCODER = os.urandom(600_000)  # incompressible, so the archive spans several read chunks
TOKENS = b"<blk> 0\nA 1\nB 2\n"


def _tar_bz2(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:bz2") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buffer.getvalue()


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    return info


def _fake_model_archive() -> bytes:
    folder = tarfile.TarInfo("fake-model-2024-01-01")
    folder.type = tarfile.DIRTYPE
    folder.mode = 0o755
    return _tar_bz2(
        [
            (folder, None),
            (_file("fake-model-2024-01-01/encoder.int8.onnx"), ENCODER),
            (_file("fake-model-2024-01-01/tokens.txt"), TOKENS),
        ]
    )


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest(tmp_path: Path, models: dict) -> dict[str, fetch.ModelEntry]:
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "models": models}))
    return fetch.load_manifest(path)


def _archive_entry(url: str, data: bytes, *, sha256: str | None = "auto") -> dict:
    return {
        "description": "a fake model",
        "kind": "test",
        "license": "CC0-1.0",
        "archive": {
            "url": url,
            "format": "tar.bz2",
            "sha256": _sha(data) if sha256 == "auto" else sha256,
            "bytes": len(data),
        },
        "provides": ["encoder.int8.onnx", "tokens.txt"],
    }


# --- tests ------------------------------------------------------------------------------------------------


def test_fetch_with_progress(server: _Server, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    archive = _fake_model_archive()
    server.files["/kws-models/fake-model.tar.bz2"] = archive
    manifest = _manifest(
        tmp_path, {"fake": _archive_entry(f"{server.base}/kws-models/fake-model.tar.bz2", archive)}
    )
    models_dir = tmp_path / "models"
    with caplog.at_level(logging.INFO, logger="assistant.models"):
        target = fetch.fetch_model(
            manifest["fake"], fetch.FetchOptions(models_dir=models_dir, progress=False)
        )
    assert target == models_dir / "fake"
    assert (target / "encoder.int8.onnx").read_bytes() == ENCODER  # the single top folder was stripped
    assert (target / "tokens.txt").read_bytes() == TOKENS
    assert fetch.installed_dir(manifest["fake"], models_dir) == target
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("downloading fake-model.tar.bz2:") and "100%" in m for m in messages)
    assert any(m.startswith("verified ") and _sha(archive) in m for m in messages)
    assert leftovers(models_dir) == []
    receipt = yaml.safe_load((target / fetch.RECEIPT_NAME).read_text())
    assert receipt["files"]["encoder.int8.onnx"] == _sha(ENCODER)


def test_resume_after_connection_drop(server: _Server, tmp_path: Path) -> None:
    archive = _fake_model_archive()
    server.files["/a/fake-model.tar.bz2"] = archive
    server.drop_once.add("/a/fake-model.tar.bz2")
    manifest = _manifest(tmp_path, {"fake": _archive_entry(f"{server.base}/a/fake-model.tar.bz2", archive)})
    models_dir = tmp_path / "models"
    target = fetch.fetch_model(manifest["fake"], fetch.FetchOptions(models_dir=models_dir, progress=False))
    assert (target / "encoder.int8.onnx").read_bytes() == ENCODER
    assert len(server.requests) == 2
    assert server.requests[0] == ("/a/fake-model.tar.bz2", None)
    path, range_header = server.requests[1]
    offset = int(re.fullmatch(r"bytes=(\d+)-", range_header or "").group(1))
    assert 0 < offset < len(archive)  # it resumed where the dropped transfer stopped, not from zero
    assert leftovers(models_dir) == []


def test_resume_a_part_file_left_by_an_earlier_run(server: _Server, tmp_path: Path) -> None:
    archive = _fake_model_archive()
    url = f"{server.base}/b/fake-model.tar.bz2"
    server.files["/b/fake-model.tar.bz2"] = archive
    manifest = _manifest(tmp_path, {"fake": _archive_entry(url, archive)})
    models_dir = tmp_path / "models"
    leave_part(models_dir, url, archive[:1000])
    fetch.fetch_model(manifest["fake"], fetch.FetchOptions(models_dir=models_dir, progress=False))
    assert server.requests == [("/b/fake-model.tar.bz2", "bytes=1000-")]
    assert (models_dir / "fake" / "tokens.txt").read_bytes() == TOKENS


def test_checksum_mismatch_installs_nothing_and_keeps_the_old_install(
    server: _Server, tmp_path: Path
) -> None:
    archive = _fake_model_archive()
    url = f"{server.base}/c/fake-model.tar.bz2"
    server.files["/c/fake-model.tar.bz2"] = archive
    models_dir = tmp_path / "models"
    good = _manifest(tmp_path, {"fake": _archive_entry(url, archive)})
    fetch.fetch_model(good["fake"], fetch.FetchOptions(models_dir=models_dir, progress=False))

    bad = _manifest(tmp_path, {"fake": _archive_entry(url, archive, sha256="0" * 64)})
    with pytest.raises(ModelError, match="checksum mismatch.*expected 0000") as info:
        fetch.fetch_model(bad["fake"], fetch.FetchOptions(models_dir=models_dir, progress=False))
    assert url in str(info.value)
    assert (models_dir / "fake" / "encoder.int8.onnx").read_bytes() == ENCODER  # the old install is intact
    assert leftovers(models_dir) == []  # the bad download is gone too

    fresh = tmp_path / "fresh"
    with pytest.raises(ModelError, match="checksum mismatch"):
        fetch.fetch_model(bad["fake"], fetch.FetchOptions(models_dir=fresh, progress=False))
    assert not (fresh / "fake").exists()
    assert leftovers(fresh) == []


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


def _device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    info.devmajor = 1
    info.devminor = 3
    return info


@pytest.mark.parametrize(
    ("members", "bad_entry", "reason"),
    [
        ([(_file("model/../../escape.txt"), b"x")], "model/../../escape.txt", "contains '..'"),
        ([(_file("/etc/cron.d/evil"), b"x")], "/etc/cron.d/evil", "absolute path"),
        ([(_symlink("model/link", "../../outside"), None)], "model/link", "symlink pointing outside"),
        ([(_symlink("model/link", "/etc/passwd"), None)], "model/link", "symlink to an absolute path"),
        ([(_device("model/null"), None)], "model/null", "device or special file"),
    ],
    ids=["dotdot", "absolute", "symlink-escape", "symlink-absolute", "device"],
)
def test_unsafe_archive_is_rejected_whole(
    server: _Server, tmp_path: Path, members: list, bad_entry: str, reason: str
) -> None:
    # A harmless file first: it must not be extracted either.
    archive = _tar_bz2([(_file("model/tokens.txt"), TOKENS), *members])
    server.files["/evil.tar.bz2"] = archive
    entry = _archive_entry(f"{server.base}/evil.tar.bz2", archive)
    entry["provides"] = ["tokens.txt"]
    manifest = _manifest(tmp_path, {"evil": entry})
    models_dir = tmp_path / "models"
    with pytest.raises(
        ModelError, match=f"unsafe archive evil.tar.bz2: entry '{re.escape(bad_entry)}'"
    ) as info:
        fetch.fetch_model(manifest["evil"], fetch.FetchOptions(models_dir=models_dir, progress=False))
    assert reason in str(info.value)
    assert not (models_dir / "evil").exists()
    assert not (tmp_path / "escape.txt").exists()
    assert leftovers(models_dir) == []


def test_safe_extract_zip(tmp_path: Path) -> None:
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("m/tokens.txt", TOKENS)
    fetch.safe_extract(good, "zip", tmp_path / "out")
    assert (tmp_path / "out" / "m" / "tokens.txt").read_bytes() == TOKENS
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("m/tokens.txt", TOKENS)
        zf.writestr("../escape.txt", b"x")
    with pytest.raises(ModelError, match=r"entry '\.\./escape\.txt' contains '\.\.'"):
        fetch.safe_extract(evil, "zip", tmp_path / "out2")
    assert not (tmp_path / "out2" / "m").exists()


def test_unverified_download_needs_the_flag(
    server: _Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    archive = _fake_model_archive()
    server.files["/u.tar.bz2"] = archive
    manifest = _manifest(tmp_path, {"fake": _archive_entry(f"{server.base}/u.tar.bz2", archive, sha256=None)})
    models_dir = tmp_path / "models"
    with pytest.raises(ModelError, match="no published sha256.*--allow-unverified"):
        fetch.fetch_model(manifest["fake"], fetch.FetchOptions(models_dir=models_dir, progress=False))
    assert server.requests == []  # refused before downloading anything
    with caplog.at_level(logging.WARNING, logger="assistant.models"):
        options = fetch.FetchOptions(models_dir=models_dir, progress=False, allow_unverified=True)
        fetch.fetch_model(manifest["fake"], options)
    assert any("UNVERIFIED" in r.getMessage() and _sha(archive) in r.getMessage() for r in caplog.records)
    assert (models_dir / "fake" / "tokens.txt").read_bytes() == TOKENS


def test_network_failure_names_the_url_and_suggests_a_mirror(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.tar.bz2"
    manifest = _manifest(tmp_path, {"fake": _archive_entry(url, b"whatever")})
    with pytest.raises(ModelError, match=f"cannot download {re.escape(url)}.*--mirror"):
        fetch.fetch_model(
            manifest["fake"], fetch.FetchOptions(models_dir=tmp_path / "models", progress=False)
        )


def test_http_404_is_reported(server: _Server, tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, {"fake": _archive_entry(f"{server.base}/gone.tar.bz2", b"x")})
    with pytest.raises(ModelError, match="HTTP 404"):
        fetch.fetch_model(
            manifest["fake"], fetch.FetchOptions(models_dir=tmp_path / "models", progress=False)
        )


def test_unknown_model_lists_the_known_ones() -> None:
    manifest = fetch.load_manifest()
    with pytest.raises(ModelError, match="unknown model 'kws-xx'; known models: kws-zh, kws-en"):
        fetch.get_entry(manifest, "kws-xx")


def test_real_manifest_covers_every_model_name() -> None:
    manifest = fetch.load_manifest()
    assert set(manifest) == {
        "kws-zh", "kws-en", "kws-zh-en", "asr-zh", "asr-en", "asr-zh-en",
        "vad-silero", "sensevoice", "tts-zh", "tts-en", "minimind2-small", "minimind-3",
    }  # fmt: skip
    for entry in manifest.values():
        urls = [entry.archive.url] if entry.archive else [f.url for f in entry.files]
        assert all(u.startswith("https://") for u in urls), entry.name
        assert entry.license and entry.provides


def _expected_mirror_files(entry: fetch.ModelEntry) -> dict[str, str]:
    return {f.name: f.sha256 for f in entry.mirror_files}


def test_mirror_folder_install_with_real_assets(assets: Path, tmp_path: Path) -> None:
    manifest = fetch.load_manifest()
    models_dir = tmp_path / "models"
    for name in ("kws-en", "vad-silero"):
        entry = manifest[name]
        target = fetch.fetch_model(entry, fetch.FetchOptions(models_dir=models_dir, mirror=str(assets)))
        expected = _expected_mirror_files(entry)
        assert expected and all(expected.values())  # every mirror file of these two has a known sha256
        installed = {p.name: _sha(p.read_bytes()) for p in target.iterdir() if p.name != fetch.RECEIPT_NAME}
        assert installed == expected
        assert fetch.installed_dir(entry, models_dir) == target


def test_mirror_folder_with_a_wrong_file_is_rejected(assets: Path, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "vad").mkdir(parents=True)
    (mirror / "vad" / "silero_vad.onnx").write_bytes(b"not the model")
    with pytest.raises(ModelError, match="checksum mismatch"):
        fetch.fetch_model(
            fetch.load_manifest()["vad-silero"],
            fetch.FetchOptions(models_dir=tmp_path / "m", mirror=str(mirror)),
        )
    assert (mirror / "vad" / "silero_vad.onnx").exists()  # a bad mirror file is reported, never deleted
    assert not (tmp_path / "m" / "vad-silero").exists()


def test_mirror_url_install(assets: Path, tmp_path: Path) -> None:
    with serving(_Server(root=assets.resolve())) as srv:
        entry = fetch.load_manifest()["kws-en"]
        options = fetch.FetchOptions(models_dir=tmp_path / "models", mirror=srv.base + "/", progress=False)
        target = fetch.fetch_model(entry, options)
    installed = {p.name: _sha(p.read_bytes()) for p in target.iterdir() if p.name != fetch.RECEIPT_NAME}
    assert installed == _expected_mirror_files(entry)
    assert {path for path, _ in srv.requests} == {"/kws/en-gigaspeech-3.3M-mobile/" + n for n in installed}


def test_mirror_in_upstream_layout(tmp_path: Path) -> None:
    """A mirror made with `wget -x URL` (host/path) serves entries that have no folder layout."""
    archive = _fake_model_archive()
    url = "https://downloads.example.invalid/asr-models/fake-model.tar.bz2"
    manifest = _manifest(tmp_path, {"fake": _archive_entry(url, archive)})
    mirror = tmp_path / "mirror"
    (mirror / "downloads.example.invalid" / "asr-models").mkdir(parents=True)
    (mirror / "downloads.example.invalid" / "asr-models" / "fake-model.tar.bz2").write_bytes(archive)
    target = fetch.fetch_model(
        manifest["fake"], fetch.FetchOptions(models_dir=tmp_path / "m", mirror=str(mirror))
    )
    assert (target / "encoder.int8.onnx").read_bytes() == ENCODER
    assert (mirror / "downloads.example.invalid" / "asr-models" / "fake-model.tar.bz2").exists()


def test_model_missing_from_mirror_names_what_was_tried(assets: Path, tmp_path: Path) -> None:
    entry = fetch.load_manifest()["asr-zh"]
    with pytest.raises(ModelError, match="asr-zh is not in mirror .*github.com/k2-fsa/sherpa-onnx/releases"):
        fetch.fetch_model(entry, fetch.FetchOptions(models_dir=tmp_path / "m", mirror=str(assets)))
    with pytest.raises(ModelError, match="mirror folder not found"):
        fetch.fetch_model(entry, fetch.FetchOptions(models_dir=tmp_path / "m", mirror=str(tmp_path / "none")))
