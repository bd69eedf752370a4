"""Safe extraction of model archives (tar.bz2, tar.gz, zip) into a fresh folder.

Members are written by this module, never by `tarfile.extractall`/`zipfile.extractall`:
- `extractall(filter="data")` does not exist before Python 3.11.4 (Debian 12 and Raspberry Pi OS ship 3.11.2),
  and even where it exists, a chain of symlinks long enough to defeat its realpath check (the PATH_MAX trick)
  lets an archive write outside the destination.
- So links are refused outright, and every file is created relative to a directory descriptor of the
  destination with O_NOFOLLOW | O_EXCL, folder by folder: no path is ever resolved through a link, and no
  existing file is ever opened for writing.

Why refusing links costs nothing (the archives cannot be downloaded from here, so this is reasoned, not
measured): the official sherpa-onnx archives in manifest.yaml are folders of regular files and sub-folders
made by upstream release scripts from exported .onnx files, tokens and test wavs; the upstream docs list each
one after `tar xvf` with `ls -lh`, showing only `-` and `d` entries; the extracted copies in ../shared/assets
hold no links (`find -type l` finds none). Least certain is tts-en, which bundles espeak-ng-data from
upstream's espeak-ng-data.tar.bz2. Should an archive ever hold a link, the fetch fails naming the member,
which is safer than guessing what the link should mean.

The stdlib `data` filter, where this Python has it, is still applied to every tar member as a second check.
Limits (ExtractLimits) stop archive bombs: total unpacked bytes and member count.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from assistant.errors import ModelError

COPY_BYTES = 1 << 20
MAX_MEMBERS = 10_000  # the biggest model archive (Piper voice with espeak-ng-data) has a few hundred
MAX_UNPACKED_BYTES = 16 << 30
# ONNX weights barely compress, so a real model unpacks to ~1-3x its archive; text data (lexicons, espeak-ng
# dictionaries) to ~5x. 10x plus 256 MiB is far above any real model and far below what fills a Pi's card.
RATIO = 10
HEADROOM_BYTES = 256 << 20


@dataclass(frozen=True)
class ExtractLimits:
    max_bytes: int = MAX_UNPACKED_BYTES
    max_members: int = MAX_MEMBERS

    @classmethod
    def for_archive(cls, archive_bytes: int) -> ExtractLimits:
        return cls(max_bytes=min(MAX_UNPACKED_BYTES, RATIO * archive_bytes + HEADROOM_BYTES))


class _Rejected(Exception):
    def __init__(self, member: str, reason: str) -> None:
        super().__init__(reason)
        self.member = member
        self.reason = reason


def safe_extract(archive: Path, fmt: str, dest: Path, limits: ExtractLimits | None = None) -> None:
    """Extract `archive` into `dest` (created; must be empty). One bad member rejects the whole archive and
    leaves `dest` empty. Raises ModelError naming the archive and the member."""
    limits = limits or ExtractLimits.for_archive(archive.stat().st_size)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ModelError(f"cannot extract {archive.name}: {dest} is not empty")
    try:
        with _Writer(dest, limits) as writer:
            if fmt == "zip":
                _extract_zip(archive, writer)
            elif fmt in ("tar.bz2", "tar.gz"):
                _extract_tar(archive, fmt, writer)
            else:
                raise ModelError(f"unsupported archive format {fmt!r} for {archive.name}")
        check_contained(dest)
    except _Rejected as exc:
        _empty(dest)
        raise ModelError(
            f"unsafe archive {archive.name}: entry {exc.member!r} {exc.reason}; nothing was installed"
        ) from None
    except ModelError:
        _empty(dest)
        raise
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, RuntimeError,
            NotImplementedError) as exc:
        # Corrupt or truncated archives: bz2/gzip/zlib/zipfile each raise their own kind.
        _empty(dest)
        raise ModelError(f"cannot extract {archive.name}: {type(exc).__name__}: {exc}; nothing was installed") from exc


def check_contained(root: Path) -> None:
    """Every path under `root` is a plain folder or a regular file with one link, resolving inside `root`.

    Run after writing: a file that is a hard link (st_nlink > 1) or a symlink could let someone else change
    the install, and a path resolving outside means something escaped."""
    real_root = os.path.realpath(root)
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                raise ModelError(f"{path} is a symlink after extraction: refusing to install it")
            if stat.S_ISREG(info.st_mode) and info.st_nlink != 1:
                raise ModelError(f"{path} has {info.st_nlink} hard links after extraction: refusing to install it")
            if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                raise ModelError(f"{path} is not a regular file or folder: refusing to install it")
            if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
                raise ModelError(f"{path} resolves outside {root}: refusing to install it")


def _empty(dest: Path) -> None:
    # rmtree does not follow symlinks (and there are none: nothing here creates one).
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


# --- member checks ------------------------------------------------------------------------------------------


def _parts(name: str) -> tuple[str, ...]:
    """The path components of a member name, or _Rejected. Backslashes count as separators (zip from Windows)."""
    if not name or "\x00" in name:
        raise _Rejected(name, "has an empty or invalid name")
    text = name.replace("\\", "/")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise _Rejected(name, "has an absolute path")
    parts = tuple(p for p in PurePosixPath(text).parts if p != ".")
    if ".." in parts:
        raise _Rejected(name, "contains '..'")
    return parts


def _link_reason(name: str, target: str, *, hard: bool) -> str:
    kind = "hard link" if hard else "symlink"
    if target.startswith("/"):
        return f"is a {kind} to an absolute path ({target}); model archives must hold no links"
    base = PurePosixPath() if hard else PurePosixPath(name).parent
    depth = 0
    for part in (base / target).parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return f"is a {kind} pointing outside the archive ({target}); model archives must hold no links"
    # Even a link that looks inside is refused: a chain of them can resolve anywhere (see the module doc).
    return f"is a {kind} ({target}); model archives must hold no links"


# --- writing ------------------------------------------------------------------------------------------------


class _Writer:
    """Creates folders and files under one destination folder, through directory descriptors only."""

    def __init__(self, dest: Path, limits: ExtractLimits) -> None:
        self.limits = limits
        self.dest = str(dest)
        self.members = 0
        self.declared = 0  # sizes the headers claim
        self.bytes = 0  # bytes actually written
        self.root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.root_fd)

    def count(self, name: str, declared_size: int) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise _Rejected(name, f"is member number {self.members}: over the limit of {self.limits.max_members}")
        self.declared += declared_size
        if declared_size < 0 or self.declared > self.limits.max_bytes:
            raise _Rejected(name, f"declares {declared_size} bytes: the archive would unpack to more than "
                            f"{self.limits.max_bytes} bytes")

    @contextlib.contextmanager
    def _folder(self, name: str, parts: tuple[str, ...]) -> Iterator[int]:
        """A descriptor of the folder `parts` (created as needed), reached without following any link."""
        fd = os.dup(self.root_fd)
        try:
            for part in parts:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                except OSError as exc:
                    reason = f"needs folder {part[:80]!r}, which cannot be made ({exc.strerror})"
                    raise _Rejected(name, reason) from None
                try:
                    child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                except OSError as exc:
                    reason = f"needs folder {part[:80]!r}, which is not a plain folder ({exc.strerror})"
                    raise _Rejected(name, reason) from None
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    def folder(self, name: str, parts: tuple[str, ...]) -> None:
        with self._folder(name, parts):
            pass

    def file(self, name: str, parts: tuple[str, ...], source: IO[bytes], mode: int) -> None:
        if not parts:
            raise _Rejected(name, "is a file with an empty name")
        perms = 0o755 if mode & 0o111 else 0o644  # never setuid/setgid/sticky, never group/world-writable
        with self._folder(name, parts[:-1]) as parent:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                fd = os.open(parts[-1], flags, perms, dir_fd=parent)
            except FileExistsError:
                raise _Rejected(name, "appears twice in the archive (or clashes with a folder)") from None
            except OSError as exc:
                raise _Rejected(name, f"cannot be written: {exc.strerror}") from None
            with os.fdopen(fd, "wb") as out:
                while block := source.read(COPY_BYTES):
                    self.bytes += len(block)
                    if self.bytes > self.limits.max_bytes:
                        raise _Rejected(name, f"unpacks past the limit of {self.limits.max_bytes} bytes in total")
                    out.write(block)


# --- formats ------------------------------------------------------------------------------------------------


def _extract_tar(archive: Path, fmt: str, writer: _Writer) -> None:
    # One pass, in archive order: a bz2 stream is read once. A rejection empties what was written so far.
    data_filter = getattr(tarfile, "data_filter", None)  # 3.11.4+, 3.12+: a second line of defence
    with tarfile.open(archive, "r:bz2" if fmt == "tar.bz2" else "r:gz") as tar:
        for member in tar:
            parts = _parts(member.name)
            if member.issym() or member.islnk():
                raise _Rejected(member.name, _link_reason(member.name, member.linkname, hard=member.islnk()))
            if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
                raise _Rejected(member.name, "is a device or special file")
            if not (member.isfile() or member.isdir()):
                raise _Rejected(member.name, "has an unsupported type")
            writer.count(member.name, member.size if member.isfile() else 0)
            if data_filter is not None:
                try:
                    data_filter(member, writer.dest)
                except tarfile.FilterError as exc:
                    raise _Rejected(member.name, f"is refused by Python's data filter ({exc})") from None
            if member.isdir():
                writer.folder(member.name, parts)
                continue
            source = tar.extractfile(member)
            if source is None:
                raise _Rejected(member.name, "has no data")
            try:
                with source:
                    writer.file(member.name, parts, source, member.mode)
            except (tarfile.TarError, EOFError, zlib.error) as exc:
                raise _Rejected(member.name, f"is truncated or corrupt ({exc})") from None


def _extract_zip(archive: Path, writer: _Writer) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        # The central directory is read first, so every member is checked before anything is written.
        planned = []
        for info in infos:
            parts = _parts(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise _Rejected(info.filename, "is a symlink; model archives must hold no links")
            if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise _Rejected(info.filename, "is a device or special file")
            writer.count(info.filename, 0 if info.is_dir() else info.file_size)
            planned.append((info, parts, mode))
        for info, parts, mode in planned:
            if info.is_dir():
                writer.folder(info.filename, parts)
                continue
            try:
                with zf.open(info) as source:
                    writer.file(info.filename, parts, source, mode)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
                raise _Rejected(info.filename, f"is corrupt or unsupported ({exc})") from None
