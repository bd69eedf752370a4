"""HTTP downloads into a `.part` file: resume with Range, bounded in size and time, one writer at a time.

urllib from the standard library does the HTTP: it handles Range, redirects (GitHub and Hugging Face both
redirect to a CDN) and HTTPS, and keeps `requests` out of the Pi's runtime dependencies.

Bounds, so a broken or hostile server cannot fill the disk or hang a fetch forever:
- a body is never written past the manifest's `bytes` (or MAX_UNKNOWN_BYTES when the size is unknown);
- every read waits at most `stall_s`, and the whole download has a deadline (`deadline_s`, by default derived
  from the size at a pessimistic rate) that a server trickling one byte every few seconds still hits;
- a `.part` is written by one process only: an flock on `<part>.lock`; a second fetch fails at once, naming it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import logging
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from assistant.errors import ModelError

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024  # one network read at most
COPY_CHUNK = 1 << 20  # file-to-file copies
RETRIES = 5  # attempts per download; each retry resumes with Range
USER_AGENT = "edge-assistant-fetch/1"
STALL_S = 30.0  # longest wait for the next bytes
# Deadline = DEADLINE_BASE_S + size / SLOWEST_RATE: 30 minutes for the 490 MB ASR model at 2.5 Mbit/s is
# generous for a Pi on Wi-Fi, and a trickling server (1 byte every 3 s) is cut off instead of running for days.
DEADLINE_BASE_S = 300.0
SLOWEST_RATE = 300_000  # bytes/s
MAX_UNKNOWN_BYTES = 4 << 30  # manifest entries without `bytes`: the largest real model is ~0.5 GB
UNKNOWN_DEADLINE_S = DEADLINE_BASE_S + MAX_UNKNOWN_BYTES / SLOWEST_RATE


@dataclass(frozen=True)
class DownloadLimits:
    deadline_s: float | None = None  # None: derived from the size (default_deadline)
    stall_s: float = STALL_S

    def deadline_for(self, size: int | None) -> float:
        return self.deadline_s if self.deadline_s is not None else default_deadline(size)


def default_deadline(size: int | None) -> float:
    return UNKNOWN_DEADLINE_S if size is None else DEADLINE_BASE_S + size / SLOWEST_RATE


class NotFound(Exception):
    """HTTP 404 from a mirror: the caller tries another layout."""


class _BadRange(Exception):
    """The server answered a Range request with other bytes: the .part cannot be continued."""


# --- one writer per .part -----------------------------------------------------------------------------------


@contextlib.contextmanager
def part_lock(part: Path) -> Iterator[None]:
    """Hold an exclusive flock on `<part>.lock` (two fetches appending to one .part would corrupt it)."""
    lock_path = part.with_name(part.name + ".lock")
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ModelError(
                f"another fetch is downloading into {part} (it holds the lock {lock_path}); "
                "let it finish, then run this again"
            ) from None
        # The holder unlinks the lock file on release: if it did so between our open and flock, we locked a
        # file nobody else will open. Lock the one at the path instead.
        try:
            same = os.stat(lock_path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        os.close(fd)


# --- the transfer -------------------------------------------------------------------------------------------


def download(
    url: str,
    part: Path,
    *,
    size: int | None,
    limits: DownloadLimits,
    progress: bool | None,
    mirror: str | None,
) -> None:
    """Fill `part` with the bytes at `url`, resuming from what it already holds. Call under part_lock(part)."""
    hint = "" if mirror else "; check the network, or fetch from a local mirror with --mirror DIR_OR_URL"
    cap = size if size is not None else MAX_UNKNOWN_BYTES
    budget_s = limits.deadline_for(size)
    deadline = time.monotonic() + budget_s
    reporter = Progress(PurePosixPath(urllib.parse.urlsplit(url).path).name, size, tty=progress)
    for attempt in range(1, RETRIES + 1):
        offset = part.stat().st_size if part.exists() else 0
        if size is not None and offset == size:
            break
        if offset > cap:
            log.warning("discarding %s: %d bytes, more than the expected %d", part, offset, cap)
            part.unlink()
            offset = 0
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _deadline_error(url, part, budget_s)
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            with urllib.request.urlopen(request, timeout=min(limits.stall_s, remaining)) as response:
                total = _copy_response(response, part, offset, reporter, cap=cap, deadline=deadline)
            if total is None or part.stat().st_size >= total:
                break
            raise http.client.IncompleteRead(b"", total - part.stat().st_size)
        except TimeoutError as exc:
            if time.monotonic() >= deadline:
                raise _deadline_error(url, part, budget_s) from exc
            reason: object = f"no data for {limits.stall_s:.0f} s"
            if attempt == RETRIES:
                raise ModelError(f"cannot download {url}: {reason}{hint}") from exc
        except _BadRange as exc:
            # Starting over is always correct; refusing would fail every later run on the same .part.
            log.warning("%s: discarding %s and starting over", exc, part)
            part.unlink(missing_ok=True)
            reason = exc
            if attempt == RETRIES:
                raise ModelError(f"cannot download {url}: {exc}{hint}") from exc
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:  # our .part already holds everything the server has
                break
            if exc.code == 404 and mirror:
                raise NotFound(url) from exc
            raise ModelError(f"download failed: {url}: HTTP {exc.code} {exc.reason}{hint}") from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            if attempt == RETRIES or (isinstance(exc, urllib.error.URLError) and not part.exists()):
                raise ModelError(f"cannot download {url}: {reason}{hint}") from exc
        log.warning("download of %s interrupted (%s); resuming (attempt %d/%d)", url, reason, attempt + 1, RETRIES)
        time.sleep(0.2 * attempt)
    reporter.done(part.stat().st_size if part.exists() else 0)


def _deadline_error(url: str, part: Path, budget_s: float) -> ModelError:
    got = part.stat().st_size if part.exists() else 0
    return ModelError(
        f"download of {url} did not finish within {budget_s:.0f} s ({got} bytes so far, kept in {part}: "
        "the next run resumes from there)"
    )


def _int_header(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _copy_response(
    response: http.client.HTTPResponse,
    part: Path,
    offset: int,
    reporter: Progress,
    *,
    cap: int,
    deadline: float,
) -> int | None:
    """Append or write the body to `part`; return the full file size the server announced, if any."""
    length = _int_header(response.headers.get("Content-Length"))
    if offset and response.status == 206:
        start = _content_range_start(response.headers.get("Content-Range", ""))
        if start != offset:
            raise _BadRange(f"server answered a Range request for byte {offset} with byte {start}")
        mode = "ab"
        total = offset + length if length is not None else None
    else:
        mode = "wb"  # a 200 to a Range request means the server ignores Range: start over
        offset = 0
        total = length
    url = response.geturl()
    if total is not None and total > cap:
        part.unlink(missing_ok=True)
        raise _too_large(url, part, cap, total)
    written = offset
    with part.open(mode) as f:
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError("download deadline passed")
            # read1: one socket read at most, so a trickling server cannot keep us past the deadline.
            block = response.read1(CHUNK_BYTES)
            if not block:
                break
            if written + len(block) > cap:
                f.close()
                part.unlink(missing_ok=True)
                raise _too_large(url, part, cap, None)
            f.write(block)
            written += len(block)
            reporter.update(written, total)
    return total


def _too_large(url: str, part: Path, cap: int, announced: int | None) -> ModelError:
    said = f"announced {announced} bytes" if announced is not None else f"sent more than {cap} bytes"
    return ModelError(
        f"download of {url} is larger than expected: the server {said}, the limit is {cap} (the manifest's "
        f"`bytes`); discarded {part}, nothing was installed"
    )


def _content_range_start(header: str) -> int | None:
    # "bytes START-END/TOTAL"
    try:
        return int(header.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


# --- checking what arrived ----------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_digest(origin: str, *, actual_size: int, digest: str, sha256: str | None, size: int | None) -> str | None:
    """The problem with these bytes, or None; logs the verified (or UNVERIFIED) digest when they are fine."""
    if size is not None and actual_size != size:
        return f"size {actual_size} bytes, expected {size}"
    if sha256 is not None and digest != sha256:
        return f"sha256 {digest}, expected {sha256}"
    if sha256 is None:
        log.warning("installing UNVERIFIED %s (no published sha256): sha256=%s bytes=%d", origin, digest, actual_size)
    else:
        log.info("verified %s sha256=%s", origin, digest)
    return None


def verify_part(part: Path, origin: str, *, sha256: str | None, size: int | None) -> None:
    """Check a finished download; a bad one is deleted, so the next run starts from scratch."""
    problem = check_digest(
        origin, actual_size=part.stat().st_size, digest=sha256_file(part), sha256=sha256, size=size
    )
    if problem:
        part.unlink(missing_ok=True)
        raise ModelError(f"checksum mismatch for {origin}: {problem}; nothing was installed")


# --- progress -----------------------------------------------------------------------------------------------


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
