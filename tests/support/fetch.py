"""What the model-fetch tests share: a 127.0.0.1 server on a thread, the files a fetch keeps in the models
folder, and the ones it must not leave."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

S = TypeVar("S", bound=http.server.HTTPServer)


@contextmanager
def serving(server: S) -> Iterator[S]:
    """`server` answering on its own thread until the block ends, then shut down and its socket closed."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def leftovers(models_dir: Path) -> list[str]:
    """Staging folders, .part files and old installs a fetch must not leave behind."""
    names = [p.name for p in models_dir.iterdir() if p.name.startswith((".fetch-", ".old-"))]
    downloads = models_dir / ".downloads"
    if downloads.exists():
        names += [p.name for p in downloads.iterdir()]
    return names


def part_file(models_dir: Path, url: str) -> Path:
    """Where a fetch of `url` keeps its partial download, named as assistant.models.fetch names it (these tests
    save each archive under the last part of its URL)."""
    url_id = hashlib.sha256(url.encode()).hexdigest()[:12]
    return models_dir / ".downloads" / f"{url_id}-{url.rsplit('/', 1)[-1]}.part"


def leave_part(models_dir: Path, url: str, data: bytes) -> None:
    """The partial download an interrupted fetch of `url` leaves behind, holding `data`."""
    part = part_file(models_dir, url)
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(data)
