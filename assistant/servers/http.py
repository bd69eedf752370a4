"""The HTTP server: the OpenAI-compatible API (openai_api.py) and the status page (status.py) on one aiohttp app.

Why aiohttp: it is asyncio-native and runs inside the daemon's own event loop with `AppRunner`/`TCPSite` (no
second loop, no thread, no uvicorn process model), streams responses (SSE) with backpressure, parses multipart
uploads with a size limit, and is one pure dependency with wheels for the Pi. Starlette/FastAPI would add
uvicorn and pydantic for the same four routes.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

from aiohttp import web

from assistant.servers.hub import EventHub
from assistant.servers.shared import Answerer, Shared
from assistant.servers.work import Busy, ModelWork
from assistant.settings import ServerLimits

log = logging.getLogger(__name__)

# Routes that a browser opens directly (EventSource cannot send headers): they also take ?token=.
PAGE_ROUTES = ("/", "/status", "/events")
UPLOAD_ROUTES = ("/v1/audio/transcriptions",)

RETRY_AFTER_S = 1  # seconds a refused (429/503) client is asked to wait
SHARED = web.AppKey("shared", Shared)
WORK = web.AppKey("work", ModelWork)
HUB = web.AppKey("hub", EventHub)
ANSWERER = web.AppKey("answerer", Answerer)
LIMITS = web.AppKey("limits", ServerLimits)

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
          405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
          500: "server_error", 503: "server_error"}
_CODES = {401: "invalid_api_key", 404: "not_found", 413: "request_too_large", 429: "rate_limit_exceeded",
          503: "server_busy"}


def error(status: int, message: str, *, param: str | None = None, code: str | None = None) -> web.Response:
    """OpenAI's error body: {"error": {"message", "type", "param", "code"}}."""
    body = {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"), "param": param,
                      "code": code or _CODES.get(status)}}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status in (429, 503):
        # The official clients wait this long before a retry: refused clients then do not spin on the loop
        # the voice path shares.
        headers = {"Retry-After": str(RETRY_AFTER_S)}
    return web.json_response(body, status=status, headers=headers, dumps=lambda o: json.dumps(o, ensure_ascii=False))


class RequestError(Exception):
    """A bad request found while reading it: becomes error(status, message, param)."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code


def client_of(request: web.Request) -> str:
    return request.remote or "unknown"


def make_app(shared: Shared, work: ModelWork, hub: EventHub, answerer: Answerer, token: str | None) -> web.Application:
    limits = work.limits

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if token is not None:
            given = request.headers.get("Authorization", "")
            supplied = given[7:].strip() if given.lower().startswith("bearer ") else None
            if supplied is None and request.path in PAGE_ROUTES:
                supplied = request.query.get("token")
            if supplied is None:
                return error(401, "missing bearer token: send Authorization: Bearer TOKEN")
            if not hmac.compare_digest(supplied.encode(), token.encode()):
                return error(401, "invalid bearer token")
        size_limit = limits.max_upload_bytes if request.path in UPLOAD_ROUTES else limits.max_body_bytes
        if request.content_length is not None and request.content_length > size_limit:
            return error(413, f"request body of {request.content_length} bytes is larger than the limit of "
                              f"{size_limit} bytes (servers.limits)")
        try:
            return await handler(request)
        except RequestError as exc:
            return error(exc.status, str(exc), param=exc.param, code=exc.code)
        except Busy as exc:
            return error(exc.status, str(exc))
        except web.HTTPRequestEntityTooLarge:
            return error(413, f"request body is larger than the limit of {size_limit} bytes (servers.limits)")
        except web.HTTPException as exc:
            if exc.status >= 400:
                return error(exc.status, exc.reason)
            raise
        except (ConnectionResetError, ConnectionError):
            raise
        except Exception as exc:  # noqa: BLE001 - one bad request must not take the server down
            log.exception("HTTP %s %s failed", request.method, request.path)
            return error(500, f"internal error: {type(exc).__name__}: {exc}")

    app = web.Application(middlewares=[guard], client_max_size=max(limits.max_upload_bytes, limits.max_body_bytes))
    app[SHARED] = shared
    app[WORK] = work
    app[HUB] = hub
    app[ANSWERER] = answerer
    app[LIMITS] = limits
    from assistant.servers import openai_api, status

    openai_api.add_routes(app)
    status.add_routes(app)
    return app


async def start_http(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving in the running loop; returns the runner and the port bound (port 0: a free one)."""
    # handler_cancellation: a client that goes away cancels its handler, and with it the generation.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    bound = server.sockets[0].getsockname()[1] if server is not None and server.sockets else port
    shown = f"[{host}]" if ":" in host else host
    log.info("listening on http://%s:%d", shown, bound)
    return runner, bound
