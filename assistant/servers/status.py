"""The status page: GET / (one static HTML file, no CDN, no build step), GET /status (a JSON snapshot) and
GET /events (Server-Sent Events: the daemon's own events as they happen, and CPU/RSS every few seconds)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from importlib import resources

from aiohttp import web

from assistant.servers.http import HUB, SHARED, WORK

log = logging.getLogger(__name__)

STATS_EVERY_S = 2.0
PAGE = resources.files("assistant.servers").joinpath("status.html")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", page)
    app.router.add_get("/status", status)
    app.router.add_get("/events", events)


async def page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE.read_text(encoding="utf-8"), content_type="text/html",
                        headers={"Cache-Control": "no-cache"})


def _snapshot(app: web.Application) -> dict:
    hub, work, shared = app[HUB], app[WORK], app[SHARED]
    return hub.snapshot(model=shared.model_id, asr=shared.asr_name if shared.asr else None,
                        tts=shared.voice_name if shared.voice else None, jobs=work.jobs, done=work.done,
                        refused=dict(work.refused), held_s=round(work.gate.held_s, 2))


async def status(request: web.Request) -> web.Response:
    return web.json_response(_snapshot(request.app), dumps=lambda o: json.dumps(o, ensure_ascii=False))


async def events(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    await response.prepare(request)
    queue = hub.subscribe()
    try:
        snapshot = {"event": "snapshot", **_snapshot(request.app)}
        await response.write(f"data: {json.dumps(snapshot, ensure_ascii=False)}\n\n".encode())
        while True:
            try:
                line = await asyncio.wait_for(queue.get(), STATS_EVERY_S)
            except TimeoutError:
                snap = _snapshot(request.app)
                line = json.dumps({"event": "stats", "state": snap["state"], "cpu_percent": snap["cpu_percent"],
                                   "rss_mb": snap["rss_mb"], "jobs": snap["jobs"]})
            await response.write(f"data: {line}\n\n".encode())
    except (ConnectionResetError, ConnectionError):
        pass  # the page was closed
    finally:
        hub.unsubscribe(queue)
        with contextlib.suppress(Exception):
            await response.write_eof()
    return response
