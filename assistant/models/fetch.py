"""Download, verify, extract and install the models listed in models/manifest.yaml.

Rules this module keeps:
- Nothing is used before its sha256 is checked; an entry without a published sha256 is refused unless the
  caller passes allow_unverified (the computed digest is then logged so it can be pinned).
- Downloads resume: bytes land in `<models_dir>/.downloads/<file>.part` and an interrupted transfer continues
  with an HTTP Range request, in the same run (a few retries) or the next one.
- Archives are checked member by member before anything is extracted; one unsafe entry rejects the archive.
- Installs are atomic: everything is staged in a temp dir inside models_dir and renamed into
  `<models_dir>/<NAME>`; a failure leaves the previous install as it was and no half-written folder.

urllib from the standard library does the HTTP: it handles Range, redirects (GitHub and Hugging Face both
redirect to a CDN) and HTTPS, and keeps `requests` out of the Pi's runtime dependencies.

Why ~620 lines: download, verify, extract and install are one transaction (staged, then renamed); the
safety checks of each step are what makes most of the length, and they must be read together.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from assistant.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
MANIFEST_PATH = REPO / "models" / "manifest.yaml"
ARCHIVE_FORMATS = ("tar.bz2", "tar.gz", "zip")
RECEIPT_NAME = ".fetched.json"
CHUNK_BYTES = 256 * 1024
HTTP_TIMEOUT_S = 30.0
RETRIES = 5  # attempts per download; each retry resumes with Range
USER_AGENT = "edge-assistant-fetch/1"


@dataclass(frozen=True)
class Download:
    """One upstream file: an archive or a plain file installed under `name`."""

    name: str
    url: str
    sha256: str | None
    bytes: int | None


@dataclass(frozen=True)
class MirrorFile:
    """A file of an already-extracted mirror folder; `path` is relative to the mirror root."""

    name: str
    path: str
    sha256: str | None
    bytes: int | None


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    kind: str
    license: str
    archive: Download | None  # set for archive entries; `archive_format` says how to open it
    archive_format: str | None
    files: tuple[Download, ...]  # set for plain-file entries
    provides: tuple[str, ...]
    mirror_files: tuple[MirrorFile, ...]
    note: str

    @property
    def download_bytes(self) -> int | None:
        """Bytes to download from upstream, None when any size is unknown."""
        parts = [self.archive] if self.archive else list(self.files)
        sizes = [part.bytes for part in parts]
        return None if any(size is None for size in sizes) else sum(sizes)  # type: ignore[misc]


@dataclass(frozen=True)
class FetchOptions:
    models_dir: Path
    mirror: str | None = None  # a folder or an http(s):// URL laid out like ../shared/assets
    allow_unverified: bool = False
    progress: bool | None = None  # None: a bar on a TTY, log lines otherwise


class _NotInMirror(Exception):
    """The mirror does not hold a file in the layout being tried."""


# --- manifest ---------------------------------------------------------------------------------------------


def load_manifest(path: Path | None = None) -> dict[str, ModelEntry]:
    path = path or MANIFEST_PATH
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"model manifest not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"model manifest {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), dict):
        raise ConfigError(f"model manifest {path}: expected a top-level `models:` mapping")
    return {name: _parse_entry(path, name, spec) for name, spec in raw["models"].items()}


def _sha(value: object, where: str) -> str | None:
    if value is None:
        return None
    text = str(value).lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ConfigError(f"{where}: sha256 must be 64 hex digits or null, got {value!r}")
    return text


def _parse_entry(path: Path, name: str, spec: object) -> ModelEntry:
    where = f"model manifest {path}, models.{name}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping")
    archive = None
    archive_format = None
    files: list[Download] = []
    if "archive" in spec:
        a = spec["archive"]
        archive_format = a.get("format")
        if archive_format not in ARCHIVE_FORMATS:
            raise ConfigError(f"{where}.archive.format: must be one of {', '.join(ARCHIVE_FORMATS)}")
        url = a.get("url") or ""
        archive = Download(
            name=PurePosixPath(urllib.parse.urlsplit(url).path).name,
            url=url,
            sha256=_sha(a.get("sha256"), f"{where}.archive"),
            bytes=a.get("bytes"),
        )
    for file_name, f in (spec.get("files") or {}).items():
        files.append(
            Download(
                name=file_name,
                url=f.get("url") or "",
                sha256=_sha(f.get("sha256"), f"{where}.files.{file_name}"),
                bytes=f.get("bytes"),
            )
        )
    if (archive is None) == (not files):
        raise ConfigError(f"{where}: give exactly one of `archive:` or `files:`")
    for download in [archive, *files] if archive else files:
        if not download.url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: {download.name} needs an http(s) url")
    mirror = spec.get("mirror") or {}
    base = mirror.get("path", "")
    mirror_files = tuple(
        MirrorFile(
            name=file_name,
            path=(f or {}).get("path") or f"{base}/{file_name}",
            sha256=_sha((f or {}).get("sha256"), f"{where}.mirror.files.{file_name}"),
            bytes=(f or {}).get("bytes"),
        )
        for file_name, f in (mirror.get("files") or {}).items()
    )
    return ModelEntry(
        name=name,
        description=str(spec.get("description", "")),
        kind=str(spec.get("kind", "")),
        license=str(spec.get("license", "unknown")),
        archive=archive,
        archive_format=archive_format,
        files=tuple(files),
        provides=tuple(spec.get("provides") or [f.name for f in files]),
        mirror_files=mirror_files,
        note=" ".join(str(spec.get("note", "")).split()),
    )


def get_entry(manifest: dict[str, ModelEntry], name: str) -> ModelEntry:
    if name not in manifest:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(manifest)}")
    return manifest[name]


# --- locations --------------------------------------------------------------------------------------------


def default_models_dir() -> Path:
    """ASSISTANT_MODELS_DIR, else `models/` in the repo."""
    env = os.environ.get("ASSISTANT_MODELS_DIR")
    return Path(env).expanduser() if env else REPO / "models"


def default_mirror() -> str | None:
    return os.environ.get("ASSISTANT_MIRROR") or None


def installed_dir(entry: ModelEntry, models_dir: Path) -> Path | None:
    """The install folder when every file the entry provides is there, else None."""
    target = models_dir / entry.name
    if target.is_dir() and all((target / name).exists() for name in entry.provides):
        return target
    return None


# --- public entry point -----------------------------------------------------------------------------------


def fetch_model(entry: ModelEntry, options: FetchOptions) -> Path:
    """Install `entry` into `<models_dir>/<name>` and return that folder. Raises ModelError on failure."""
    models_dir = options.models_dir
    started = time.monotonic()
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".fetch-{entry.name}-", dir=models_dir))
    except OSError as exc:
        raise ModelError(f"cannot write to the models folder {models_dir}: {exc} (use --models-dir)") from exc
    try:
        root, source = _stage(entry, options, staging)
        missing = [name for name in entry.provides if not (root / name).exists()]
        if missing:
            raise ModelError(
                f"{entry.name}: the download from {source} lacks {', '.join(missing)}; "
                "the upstream layout may have changed: update models/manifest.yaml"
            )
        receipt = {
            "name": entry.name,
            "source": source,
            "files": {p.relative_to(root).as_posix(): sha256_file(p) for p in _files_under(root)},
        }
        (root / RECEIPT_NAME).write_text(json.dumps(receipt, indent=1, sort_keys=True) + "\n")
        target = models_dir / entry.name
        _replace_dir(root, target)
    except OSError as exc:  # disk full, permissions: the user can fix these
        raise ModelError(f"cannot install {entry.name} into {models_dir}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info(
        "installed %s into %s from %s in %.0f ms",
        entry.name,
        target,
        source,
        (time.monotonic() - started) * 1e3,
    )
    return target


# --- staging ----------------------------------------------------------------------------------------------


def _stage(entry: ModelEntry, options: FetchOptions, staging: Path) -> tuple[Path, str]:
    """Put the verified model files under a folder in `staging`; return (folder, where they came from)."""
    mirror = options.mirror
    if mirror is None:
        return _stage_upstream(entry, options, staging, base=None), "upstream"
    is_url = mirror.startswith(("http://", "https://"))
    if not is_url and not Path(mirror).expanduser().is_dir():
        raise ModelError(f"mirror folder not found: {mirror} (give a folder or an http:// URL to --mirror)")
    tried = []
    if entry.mirror_files:
        try:
            return _stage_mirror_folder(entry, options, staging, mirror), f"mirror {mirror}"
        except _NotInMirror as exc:
            tried.append(str(exc))
    try:
        return _stage_upstream(entry, options, staging, base=mirror), f"mirror {mirror}"
    except _NotInMirror as exc:
        tried.append(str(exc))
    raise ModelError(f"{entry.name} is not in mirror {mirror}: tried {' and '.join(tried)}")


def _require_verified(entry: ModelEntry, options: FetchOptions, unverified: list[str]) -> None:
    if unverified and not options.allow_unverified:
        raise ModelError(
            f"{entry.name}: no published sha256 for {', '.join(unverified)}; refusing to install an "
            "unverified download. Re-run with --allow-unverified to install it anyway (its sha256 is "
            "logged so you can pin it in models/manifest.yaml)"
        )


def _stage_mirror_folder(entry: ModelEntry, options: FetchOptions, staging: Path, mirror: str) -> Path:
    _require_verified(entry, options, [f.name for f in entry.mirror_files if f.sha256 is None])
    root = staging / entry.name
    root.mkdir()
    for index, f in enumerate(entry.mirror_files):
        location = _join_mirror(mirror, f.path)
        try:
            _obtain(location, root / f.name, sha256=f.sha256, size=f.bytes, options=options)
        except _NotInMirror:
            if index == 0:
                raise
            # The folder layout is there but incomplete: that is an error, not a reason to try another layout.
            raise ModelError(f"{entry.name}: mirror {mirror} lacks {f.path}") from None
    return root


def _stage_upstream(entry: ModelEntry, options: FetchOptions, staging: Path, base: str | None) -> Path:
    downloads = [entry.archive] if entry.archive else list(entry.files)
    _require_verified(entry, options, [d.name for d in downloads if d.sha256 is None])
    root = staging / entry.name
    if entry.archive is None:
        root.mkdir()
        for d in entry.files:
            _obtain(
                _upstream_location(d.url, base), root / d.name, sha256=d.sha256, size=d.bytes, options=options
            )
        return root
    archive = entry.archive
    # Verified archives go to staging, so a failed extraction leaves nothing behind (only .part files stay).
    archive_path = staging / archive.name
    location = _upstream_location(archive.url, base)
    _obtain(location, archive_path, sha256=archive.sha256, size=archive.bytes, options=options)
    extract_dir = staging / "extract"
    extract_dir.mkdir()
    safe_extract(archive_path, entry.archive_format or "", extract_dir)
    archive_path.unlink()  # verified and extracted: a Pi's SD card needs the space back
    children = list(extract_dir.iterdir())
    top = children[0] if len(children) == 1 and children[0].is_dir() else extract_dir
    top.rename(root)
    return root


def _join_mirror(mirror: str, relative: str) -> str:
    if mirror.startswith(("http://", "https://")):
        return mirror.rstrip("/") + "/" + urllib.parse.quote(relative)
    return str(Path(mirror).expanduser() / relative)


def _upstream_location(url: str, base: str | None) -> str:
    """The URL itself, or where a `wget -x` style mirror keeps it: <base>/<host>/<path>."""
    if base is None:
        return url
    parts = urllib.parse.urlsplit(url)
    return _join_mirror(base, urllib.parse.unquote(parts.netloc + parts.path))


# --- obtaining one file -----------------------------------------------------------------------------------


def _obtain(
    location: str,
    dest: Path,
    *,
    sha256: str | None,
    size: int | None,
    options: FetchOptions,
) -> None:
    """Put the bytes at `location` (URL or path) into `dest`, verified. Raises _NotInMirror if absent."""
    if location.startswith(("http://", "https://")):
        # .part files live in one place named by URL, so a later run finds and resumes them.
        downloads_dir = options.models_dir / ".downloads"
        downloads_dir.mkdir(exist_ok=True)
        url_id = hashlib.sha256(location.encode()).hexdigest()[:12]
        part = downloads_dir / f"{url_id}-{dest.name}.part"
        _download(location, part, size=size, progress=options.progress, mirror=options.mirror)
        _verify(part, location, sha256=sha256, size=size)
        os.replace(part, dest)
        return
    source = Path(location)
    if not source.is_file():
        raise _NotInMirror(str(source))
    _verify(source, location, sha256=sha256, size=size, delete_bad=False)
    try:
        os.link(source, dest)  # same filesystem: no copy, no extra space
    except OSError:
        shutil.copyfile(source, dest)
    log.info("copied %s from mirror (%d bytes)", dest.name, dest.stat().st_size)


def _verify(
    path: Path, origin: str, *, sha256: str | None, size: int | None, delete_bad: bool = True
) -> None:
    actual_size = path.stat().st_size
    digest = sha256_file(path)
    problem = None
    if size is not None and actual_size != size:
        problem = f"size {actual_size} bytes, expected {size}"
    elif sha256 is not None and digest != sha256:
        problem = f"sha256 {digest}, expected {sha256}"
    if problem:
        if delete_bad:
            path.unlink(missing_ok=True)
        raise ModelError(f"checksum mismatch for {origin}: {problem}; nothing was installed")
    if sha256 is None:
        log.warning(
            "installing UNVERIFIED %s (no published sha256): sha256=%s bytes=%d", origin, digest, actual_size
        )
    else:
        log.info("verified %s sha256=%s", origin, digest)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read a MiB at a time (also used by export/ for model.json)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _download(url: str, part: Path, *, size: int | None, progress: bool | None, mirror: str | None) -> None:
    """Fill `part` with the bytes at `url`, resuming from what it already holds."""
    hint = "" if mirror else "; check the network, or fetch from a local mirror with --mirror DIR_OR_URL"
    reporter = Progress(PurePosixPath(urllib.parse.urlsplit(url).path).name, size, tty=progress)
    for attempt in range(1, RETRIES + 1):
        offset = part.stat().st_size if part.exists() else 0
        if size is not None and offset == size:
            break
        if size is not None and offset > size:
            part.unlink()
            offset = 0
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
                total = _copy_response(response, part, offset, reporter)
            if total is None or part.stat().st_size >= total:
                break
            raise http.client.IncompleteRead(b"", total - part.stat().st_size)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:  # our .part already holds everything the server has
                break
            if exc.code == 404 and mirror:
                raise _NotInMirror(url) from exc
            raise ModelError(f"download failed: {url}: HTTP {exc.code} {exc.reason}{hint}") from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            if attempt == RETRIES or (isinstance(exc, urllib.error.URLError) and not part.exists()):
                raise ModelError(f"cannot download {url}: {reason}{hint}") from exc
            log.warning(
                "download of %s interrupted (%s); resuming (attempt %d/%d)", url, reason, attempt + 1, RETRIES
            )
            time.sleep(0.2 * attempt)
    reporter.done(part.stat().st_size if part.exists() else 0)


def _copy_response(
    response: http.client.HTTPResponse, part: Path, offset: int, reporter: Progress
) -> int | None:
    """Append or write the body to `part`; return the full file size the server announced, if any."""
    length = response.headers.get("Content-Length")
    if offset and response.status == 206:
        start = _content_range_start(response.headers.get("Content-Range", ""))
        if start != offset:
            raise ModelError(f"server answered a Range request for byte {offset} with {start}: cannot resume")
        mode = "ab"
        total = offset + int(length) if length else None
    else:
        mode = "wb"  # a 200 to a Range request means the server ignores Range: start over
        offset = 0
        total = int(length) if length else None
    written = offset
    with part.open(mode) as f:
        while True:
            block = response.read(CHUNK_BYTES)
            if not block:
                break
            f.write(block)
            written += len(block)
            reporter.update(written, total)
    return total


def _content_range_start(header: str) -> int | None:
    # "bytes START-END/TOTAL"
    try:
        return int(header.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


class Progress:
    """A progress bar on a TTY, otherwise a log line every 10% or 5 s, so journald is not flooded."""

    def __init__(self, label: str, size: int | None, *, tty: bool | None = None) -> None:
        self.label = label
        self.size = size
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.started = time.monotonic()
        self.last_log = 0.0
        self.last_decile = -1

    def update(self, done: int, total: int | None) -> None:
        total = total or self.size
        now = time.monotonic()
        rate = done / max(now - self.started, 1e-6)
        if self.tty:
            if total:
                filled = int(30 * done / total)
                bar = "#" * filled + "-" * (30 - filled)
                line = f"\r{self.label} [{bar}] {done / 1e6:.1f}/{total / 1e6:.1f} MB {rate / 1e6:.1f} MB/s"
            else:
                line = f"\r{self.label} {done / 1e6:.1f} MB {rate / 1e6:.1f} MB/s"
            sys.stderr.write(line)
            sys.stderr.flush()
            return
        decile = int(10 * done / total) if total else -1
        if decile > self.last_decile or now - self.last_log >= 5.0:
            self.last_decile = max(decile, self.last_decile)
            self.last_log = now
            percent = f"{100 * done / total:.0f}%" if total else "?%"
            log.info("downloading %s: %d bytes (%s) at %.1f MB/s", self.label, done, percent, rate / 1e6)

    def done(self, size: int) -> None:
        if self.tty:
            sys.stderr.write("\n")
        elapsed_ms = (time.monotonic() - self.started) * 1e3
        log.info("downloaded %s: %d bytes in %.0f ms", self.label, size, elapsed_ms)


# --- archives ---------------------------------------------------------------------------------------------


def safe_extract(archive: Path, fmt: str, dest: Path) -> None:
    """Extract `archive` into `dest` after checking every member; one unsafe member rejects it all."""
    dest = dest.resolve()
    if fmt == "zip":
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                mode = info.external_attr >> 16
                reason = _unsafe_path(info.filename, dest)
                if reason is None and stat.S_ISLNK(mode):
                    reason = "is a symlink (not allowed in zip archives)"
                elif reason is None and stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                    reason = "is a device or special file"
                if reason:
                    _reject(archive, info.filename, reason)
            zf.extractall(dest)
        return
    modes = {"tar.bz2": "r:bz2", "tar.gz": "r:gz"}
    if fmt not in modes:
        raise ModelError(f"unsupported archive format {fmt!r} for {archive.name}")
    try:
        with tarfile.open(archive, modes[fmt]) as tar:
            members = tar.getmembers()
            for member in members:
                reason = _unsafe_tar_member(member, dest)
                if reason:
                    _reject(archive, member.name, reason)
            # Our checks come first; the stdlib's "data" filter is a second line of defence.
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ModelError(f"cannot extract {archive.name}: {exc}; nothing was installed") from exc


def _reject(archive: Path, entry: str, reason: str) -> None:
    raise ModelError(f"unsafe archive {archive.name}: entry {entry!r} {reason}; nothing was installed")


def _unsafe_path(name: str, dest: Path) -> str | None:
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    if ".." in posix.parts:
        return "contains '..'"
    if not _inside(dest / posix, dest):
        return "escapes the target folder"
    return None


def _unsafe_tar_member(member: tarfile.TarInfo, dest: Path) -> str | None:
    reason = _unsafe_path(member.name, dest)
    if reason:
        return reason
    if member.issym():
        target = PurePosixPath(member.linkname)
        if target.is_absolute():
            return f"is a symlink to an absolute path ({member.linkname})"
        if not _inside(dest / PurePosixPath(member.name).parent / target, dest):
            return f"is a symlink pointing outside the archive ({member.linkname})"
    elif member.islnk():
        if _unsafe_path(member.linkname, dest):
            return f"is a hard link pointing outside the archive ({member.linkname})"
    elif member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        return "is a device or special file"
    elif not (member.isfile() or member.isdir()):
        return "has an unsupported type"
    return None


def _inside(path: Path, dest: Path) -> bool:
    # Lexical check (normpath, not resolve): nothing is on disk yet, and symlinks were vetted separately.
    normal = Path(os.path.normpath(path))
    return normal == dest or dest in normal.parents


# --- install ----------------------------------------------------------------------------------------------


def _replace_dir(staged: Path, target: Path) -> None:
    """Move `staged` to `target`, replacing an old install only once the new one is complete."""
    old = None
    if target.exists() or target.is_symlink():
        old = target.with_name(f".old-{target.name}-{os.getpid()}")
        if old.exists():  # left by a crashed run with a recycled pid
            shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    try:
        os.replace(staged, target)
    except OSError:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()
