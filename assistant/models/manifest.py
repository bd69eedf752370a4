"""The model manifest: what can be downloaded, from where, with which sha256, and what an install provides.

The manifest ships inside the package (assistant/models/manifest.yaml, package data) and is read through
importlib.resources, so a wheel or `pip install .` finds it as a checkout does.
"""

from __future__ import annotations

import importlib.resources
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from assistant.errors import ConfigError, ModelError

ARCHIVE_FORMATS = ("tar.bz2", "tar.gz", "zip")
MANIFEST_RESOURCE = "manifest.yaml"  # beside this module, in the installed package too


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


def load_manifest(path: Path | None = None) -> dict[str, ModelEntry]:
    """Parse `path`, or the manifest shipped with the package when None."""
    if path is None:
        resource = importlib.resources.files("assistant.models").joinpath(MANIFEST_RESOURCE)
        where = str(resource)
        reader = resource.read_text
    else:
        where = str(path)
        reader = path.read_text
    try:
        raw = yaml.safe_load(reader(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"model manifest not found: {where}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"model manifest {where} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), dict):
        raise ConfigError(f"model manifest {where}: expected a top-level `models:` mapping")
    return {name: _parse_entry(where, name, spec) for name, spec in raw["models"].items()}


def get_entry(manifest: dict[str, ModelEntry], name: str) -> ModelEntry:
    if name not in manifest:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(manifest)}")
    return manifest[name]


def installed_dir(entry: ModelEntry, models_dir: Path) -> Path | None:
    """The install folder when every file the entry provides is there, else None."""
    target = models_dir / entry.name
    if target.is_dir() and all((target / name).exists() for name in entry.provides):
        return target
    return None


def _sha(value: object, where: str) -> str | None:
    if value is None:
        return None
    text = str(value).lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ConfigError(f"{where}: sha256 must be 64 hex digits or null, got {value!r}")
    return text


def _size(value: object, where: str) -> int | None:
    # The size bounds every download (a body larger than this is refused), so it must be a real count.
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{where}: bytes must be a positive integer or null, got {value!r}")
    return value


def _parse_entry(path: str, name: str, spec: object) -> ModelEntry:
    where = f"model manifest {path}, models.{name}"
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        # The name is a folder under models_dir: nothing that could name a path elsewhere.
        raise ConfigError(f"{where}: a model name is letters, digits, '.', '_' and '-' only")
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
            bytes=_size(a.get("bytes"), f"{where}.archive"),
        )
    for file_name, f in (spec.get("files") or {}).items():
        files.append(
            Download(
                name=file_name,
                url=f.get("url") or "",
                sha256=_sha(f.get("sha256"), f"{where}.files.{file_name}"),
                bytes=_size(f.get("bytes"), f"{where}.files.{file_name}"),
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
            bytes=_size((f or {}).get("bytes"), f"{where}.mirror.files.{file_name}"),
        )
        for file_name, f in (mirror.get("files") or {}).items()
    )
    for name_ in [f.name for f in files] + [f.name for f in mirror_files]:
        # Installed as <models_dir>/<entry>/<name>: a name with a folder or `..` would write elsewhere.
        if not name_ or "/" in name_ or "\\" in name_ or name_ in (".", ".."):
            raise ConfigError(f"{where}: file name {name_!r} must be a plain file name")
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
