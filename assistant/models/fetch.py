"""Install the models listed in the manifest: stage, verify, install atomically, write a receipt.

Rules this module keeps:
- Nothing is used before its sha256 is checked; an entry without a published sha256 is refused unless the
  caller passes allow_unverified (the computed digest is then logged so it can be pinned).
- Downloads resume: bytes land in `<models_dir>/.downloads/<file>.part` (download.py) and an interrupted
  transfer continues with an HTTP Range request, in the same run (a few retries) or the next one.
- Archives are extracted by archive.py: no links, nothing written outside the staging folder, bounded size.
- Mirror folders are copied, never linked, and the copy is what gets hashed: a later edit of the mirror (or a
  swap between check and copy) cannot change an install.
- Installs are atomic: everything is staged in `<models_dir>/.fetch-<NAME>-<PID>-*` and renamed into
  `<models_dir>/<NAME>`; a failure leaves the previous install as it was and no half-written folder. SIGTERM
  during a fetch removes the staging folder; one left by a killed process (SIGKILL, power loss) is removed by
  the next fetch once its process is gone.

Why ~360 lines: stage, verify and install are one transaction, and the signal handling that guards it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import stat
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from assistant.errors import ModelError
from assistant.models.archive import ExtractLimits, check_contained, safe_extract
from assistant.models.download import (
    COPY_CHUNK,
    DownloadLimits,
    NotFound,
    check_digest,
    download,
    part_lock,
    sha256_file,
    verify_part,
)
from assistant.models.manifest import ModelEntry, get_entry, installed_dir, load_manifest

# The names callers and tests reach through `fetch`: loading the manifest and fetching go together.
__all__ = [
    "RECEIPT_NAME", "DownloadLimits", "ExtractLimits", "FetchOptions", "ModelEntry",
    "fetch_model", "get_entry", "installed_dir", "load_manifest", "safe_extract",
]  # fmt: skip

log = logging.getLogger(__name__)

RECEIPT_NAME = ".fetched.json"
STAGING_PREFIX = ".fetch-"


@dataclass(frozen=True)
class FetchOptions:
    models_dir: Path
    mirror: str | None = None  # a folder or an http(s):// URL laid out like ../shared/assets
    allow_unverified: bool = False
    progress: bool | None = None  # None: a bar on a TTY, log lines otherwise
    download: DownloadLimits = DownloadLimits()  # deadline (default: from the size) and stall timeout
    extract: ExtractLimits | None = None  # None: derived from the archive's size


class _NotInMirror(Exception):
    """The mirror does not hold a file in the layout being tried."""


# --- public entry point -----------------------------------------------------------------------------------


def fetch_model(entry: ModelEntry, options: FetchOptions) -> Path:
    """Install `entry` into `<models_dir>/<name>` and return that folder. Raises ModelError on failure."""
    models_dir = options.models_dir
    started = time.monotonic()
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(models_dir)
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{entry.name}-{os.getpid()}-", dir=models_dir))
    except OSError as exc:
        raise ModelError(f"cannot write to the models folder {models_dir}: {exc} (use --models-dir)") from exc
    try:
        with _sigterm_raises():
            root, source = _stage(entry, options, staging)
            missing = [name for name in entry.provides if not (root / name).exists()]
            if missing:
                raise ModelError(
                    f"{entry.name}: the download from {source} lacks {', '.join(missing)}; "
                    "the upstream layout may have changed: update the model manifest"
                )
            check_contained(staging)  # no links, no shared inodes, nothing resolving outside
            receipt = {
                "name": entry.name,
                "source": source,
                "files": {p.relative_to(root).as_posix(): sha256_file(p) for p in _files_under(root)},
            }
            (root / RECEIPT_NAME).write_text(json.dumps(receipt, indent=1, sort_keys=True) + "\n")
            target = models_dir / entry.name
            # Between its two renames the old install sits aside: a signal there would lose both copies.
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
            try:
                _replace_dir(root, target)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # a pending SIGTERM is handled now
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


# --- interruption -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into SystemExit(143) while fetching, so `finally` blocks remove the staging folder and
    release the .part lock (the .part itself stays: the next run resumes it). Main thread only: Python runs
    signal handlers there, and signal.signal refuses other threads."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def handler(signum: int, frame: object) -> None:
        nonlocal fired
        if fired:  # a second SIGTERM while cleaning up: let the cleanup finish
            return
        fired = True
        log.warning("fetch terminated (signal %d): removing the staging folder", signum)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _remove_stale_staging(models_dir: Path) -> None:
    """Remove `.fetch-<NAME>-<PID>-*` folders whose process is gone (killed with SIGKILL, or power loss)."""
    for path in models_dir.glob(f"{STAGING_PREFIX}*"):
        pid_text = path.name.rsplit("-", 2)[-2] if path.name.count("-") >= 3 else ""
        if not pid_text.isdigit() or not path.is_dir() or path.is_symlink():
            continue
        if _alive(int(pid_text)):
            continue  # another fetch is staging there right now
        log.info("removing %s, left by an interrupted fetch (process %s is gone)", path, pid_text)
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


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
            "logged so you can pin it in the model manifest)"
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
                root.rmdir()  # empty: the next layout tried stages into the same folder
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
    safe_extract(archive_path, entry.archive_format or "", extract_dir, options.extract)
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
        with part_lock(part):
            try:
                download(
                    location, part, size=size, limits=options.download, progress=options.progress, mirror=options.mirror
                )
            except NotFound as exc:
                raise _NotInMirror(str(exc)) from None
            verify_part(part, location, sha256=sha256, size=size)
            os.replace(part, dest)  # our own file, written under the lock: nobody else can change it
        return
    _copy_verified(Path(location), dest, sha256=sha256, size=size)


def _copy_verified(source: Path, dest: Path, *, sha256: str | None, size: int | None) -> None:
    """Copy a mirror file into staging, hashing the bytes as they are written: what is checked is the copy.

    Never a hard link: the mirror's owner could then change the installed model (the receipt would lie)."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block us
    except FileNotFoundError:
        raise _NotInMirror(str(source)) from None
    except OSError as exc:
        raise ModelError(f"cannot read mirror file {source}: {exc.strerror}") from None
    digest = hashlib.sha256()
    copied = 0
    limit = size + 1 if size is not None else None  # one byte more tells "too big" without reading it all
    with os.fdopen(fd, "rb") as src:
        if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
            raise _NotInMirror(f"{source} (not a regular file)")
        out_fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(out_fd, "wb") as out:
            while limit is None or copied < limit:
                block = src.read(COPY_CHUNK if limit is None else min(COPY_CHUNK, limit - copied))
                if not block:
                    break
                out.write(block)
                digest.update(block)
                copied += len(block)
    if size is not None and copied > size:
        problem: str | None = f"more than {size} bytes, expected {size}"
    else:
        problem = check_digest(str(source), actual_size=copied, digest=digest.hexdigest(), sha256=sha256, size=size)
    if problem:
        dest.unlink()  # the copy goes; a bad mirror file is reported, never deleted
        raise ModelError(f"checksum mismatch for {source}: {problem}; nothing was installed")
    log.info("copied %s from mirror (%d bytes)", dest.name, copied)


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


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
