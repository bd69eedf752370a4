"""`assistant models list | fetch NAME... | path NAME`: what is installed, and getting the rest."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from assistant.errors import ModelError
from assistant.models import fetch
from assistant.settings import find_config, load_settings

log = logging.getLogger(__name__)



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="where models are installed (else paths.models_dir of the config, else env ASSISTANT_MODELS_DIR, "
        "else models/)",
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        default=None,
        help="model manifest (default: the one shipped in the package, assistant/models/manifest.yaml)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="settings whose paths.models_dir and paths.mirror apply when the flags are not given "
        "(default: ./config.yaml if it exists, as for the daemon)",
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="{list,fetch,path}")
    listing = sub.add_parser("list", help="show every known model, installed or not")
    listing.add_argument("--json", action="store_true", help="one JSON array on stdout")
    getting = sub.add_parser("fetch", help="download, verify and install models")
    getting.add_argument("names", nargs="+", metavar="NAME")
    getting.add_argument(
        "--mirror",
        default=None,
        help="a folder or http:// URL laid out like ../shared/assets, for offline installs "
        "(env ASSISTANT_MIRROR)",
    )
    getting.add_argument(
        "--allow-unverified",
        action="store_true",
        help="install downloads that have no published sha256 (the computed one is logged)",
    )
    locate = sub.add_parser("path", help="print the folder of an installed model")
    locate.add_argument("name", metavar="NAME")
    # argparse puts a sub-parser's own --models-dir default over the parent's value: accept it in both places.
    for child in (listing, getting, locate):
        child.add_argument("--models-dir", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        child.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    manifest = fetch.load_manifest(args.manifest)
    # The daemon's own rule for where models live and where they come from (settings.py: flag, config key,
    # environment variable, default), so `models fetch` installs where `run` and `ask` look.
    overrides = {"paths.models_dir": args.models_dir, "paths.mirror": getattr(args, "mirror", None)}
    settings = load_settings(find_config(args.config), overrides)
    models_dir = settings.paths.models_dir.expanduser()
    if args.action == "list":
        return _list(manifest, models_dir, as_json=args.json)
    if args.action == "path":
        entry = fetch.get_entry(manifest, args.name)
        found = fetch.installed_dir(entry, models_dir)
        if found is None:
            raise ModelError(
                f"{entry.name} is not installed in {models_dir}: run `assistant models fetch {entry.name}`"
            )
        print(found)
        return 0
    # Unknown names fail before anything is downloaded.
    entries = [fetch.get_entry(manifest, name) for name in args.names]
    options = fetch.FetchOptions(
        models_dir=models_dir,
        mirror=settings.mirror(),
        allow_unverified=args.allow_unverified,
    )
    for entry in entries:
        target = fetch.fetch_model(entry, options)
        if entry.note:
            log.info("%s: %s", entry.name, entry.note)
        print(target)
    return 0


def _list(manifest: dict[str, fetch.ModelEntry], models_dir: Path, *, as_json: bool) -> int:
    rows = []
    for entry in manifest.values():
        found = fetch.installed_dir(entry, models_dir)
        rows.append(
            {
                "name": entry.name,
                "installed": found is not None,
                "path": str(found) if found else None,
                "bytes": entry.download_bytes,
                "license": entry.license,
                "kind": entry.kind,
                "description": entry.description,
            }
        )
    if as_json:
        print(json.dumps(rows, ensure_ascii=False))
        return 0
    print(f"models in {models_dir}")
    for row in rows:
        size = f"{row['bytes'] / 1e6:.1f} MB" if row["bytes"] else "? MB"
        state = "installed" if row["installed"] else "-"
        print(f"  {row['name']:16s} {state:10s} {size:>9s}  {row['license']}")
    return 0
