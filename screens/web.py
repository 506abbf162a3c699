"""The screens' HTTP side (aiohttp): pages, live updates as server-sent events, the
touch rating, staff photos.

Routes (docs/screens.md):

- `GET /board`, `/board/{name}` — the hall board (综合屏), or a board of the site file;
- `GET /window/{n}` — a window screen (服务评价器); `POST /window/{n}/rate` its rating;
- `GET /t/{day}/{number}/{token}` — a ticket's phone page (wrong token: the 404 page);
- `GET /events/…` — the same paths' live stream: `text/event-stream`, a full snapshot
  on connect, then what changes (EventSource reconnects by itself);
- `GET /photo/{staff}` — a clerk's photo as the site file names it;
- `GET /status` — connected browsers (for operators and the benchmark).

Every browser is potentially hostile: a stream costs one queue and is dropped when its
browser falls behind or goes; past `[screens] max_clients` streams the answer is 503; a
request body is at most `MAX_BODY` bytes; the rating POST takes only JSON from a page of
this same origin (a cross-site form cannot send it: CSRF).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

log = logging.getLogger("quhao.screens.web")

PAGES = Path(__file__).resolve().parent / "pages"
MAX_BODY = 2048  # bytes: a rating is {"ticket", "level", "reason"}
QUEUE_DEPTH = 64  # messages a stream may fall behind before it is dropped
PING_S = 15.0  # a comment line this often: proxies keep the stream, dead ones are found
MAX_PHOTO = 2 << 20
PHOTO_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
}


def sse(event: str, data: Any) -> bytes:
    """One server-sent event (JSON has no raw newlines, so one data line)."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


@dataclass(eq=False)
class Stream:
    channel: str
    queue: asyncio.Queue[bytes | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_DEPTH))
    last: bytes = b""  # what it was last sent on its channel (ticket pages: only changes)


class Hub:
    """Who listens to what. Fan-out puts bytes in queues and never waits."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.channels: dict[str, set[Stream]] = {}
        # The keys of the channels listened to, by kind ("board:floor2" → kind "board",
        # key "floor2"): fan-out finds the few boards and windows without walking
        # thousands of ticket pages.
        self.keys: dict[str, set[str]] = {}
        self.count = 0
        self.refused = 0
        self.dropped = 0

    def join(self, channel: str) -> Stream | None:
        if self.count >= self.cap:
            self.refused += 1
            return None
        stream = Stream(channel)
        self.channels.setdefault(channel, set()).add(stream)
        kind, _, key = channel.partition(":")
        self.keys.setdefault(kind, set()).add(key)
        self.count += 1
        return stream

    def leave(self, stream: Stream) -> None:
        members = self.channels.get(stream.channel)
        if members is None or stream not in members:
            return
        members.discard(stream)
        self.count -= 1
        if not members:
            del self.channels[stream.channel]
            kind, _, key = stream.channel.partition(":")
            self.keys[kind].discard(key)

    def listened(self, kind: str) -> set[str]:
        """The keys of this kind's channels that have a stream now (a copy)."""
        return set(self.keys.get(kind, ()))

    def close_all(self) -> None:
        for members in list(self.channels.values()):
            for stream in list(members):
                self._drop(stream)

    def _drop(self, stream: Stream) -> None:
        self.leave(stream)
        with contextlib.suppress(asyncio.QueueEmpty):
            stream.queue.get_nowait()  # room for the end mark
        stream.queue.put_nowait(None)

    def send(self, channel: str, data: bytes, only_changed: bool = False) -> None:
        for stream in list(self.channels.get(channel, ())):
            if only_changed and stream.last == data:
                continue
            stream.last = data
            try:
                stream.queue.put_nowait(data)
            except asyncio.QueueFull:
                # A browser that cannot keep up must not hold memory: it is dropped
                # (EventSource reconnects and gets a fresh snapshot).
                self.dropped += 1
                self._drop(stream)


Snapshot = Callable[[], bytes]


class Site(Protocol):
    """What the routes need from the daemon (screens.daemon.ScreensDaemon)."""

    hub: Hub
    title: str

    def board_known(self, name: str) -> bool: ...
    def board_snapshot(self, name: str) -> bytes: ...
    def window_known(self, number: int) -> bool: ...
    def window_snapshot(self, number: int) -> bytes: ...
    def ticket_known(self, ticket_id: str, token: str) -> bool: ...
    def ticket_snapshot(self, ticket_id: str) -> bytes: ...
    def photo(self, staff: str) -> Path | None: ...
    async def rate(self, window: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]: ...


def build_app(site: Site) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[_not_found_page(site)])
    routes = _Routes(site)
    app.add_routes(
        [
            web.get("/", routes.home),
            web.get("/board", routes.board),
            web.get("/board/{name}", routes.board),
            web.get("/window/{n}", routes.window),
            web.post("/window/{n}/rate", routes.rate),
            web.get("/t/{day}/{number}/{token}", routes.ticket),
            web.get("/events/board", routes.board_events),
            web.get("/events/board/{name}", routes.board_events),
            web.get("/events/window/{n}", routes.window_events),
            web.get("/events/t/{day}/{number}/{token}", routes.ticket_events),
            web.get("/photo/{staff}", routes.photo),
            web.get("/status", routes.status),
            web.static("/static", PAGES / "static", append_version=False),
        ]
    )
    return app


def page(name: str, **values: str) -> str:
    """A page of pages/ with its {{KEY}} slots filled (HTML-escaped)."""
    text = (PAGES / name).read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", html.escape(value))
    return text


def not_found(site: Site) -> web.Response:
    return web.Response(
        status=404,
        text=page("notfound.html", HALL=site.title),
        content_type="text/html",
        headers={"Cache-Control": "no-store"},
    )


def _not_found_page(site: Site) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return not_found(site)

    return middleware


class _Routes:
    def __init__(self, site: Site) -> None:
        self.site = site

    async def home(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/board")

    # ---- pages ------------------------------------------------------------

    async def board(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("name", "")
        if not self.site.board_known(name):
            return not_found(self.site)
        stream = "/events/board" + (f"/{name}" if name else "")
        return _html(page("board.html", HALL=self.site.title, STREAM=stream))

    async def window(self, request: web.Request) -> web.StreamResponse:
        number = _number(request.match_info["n"])
        if number is None or not self.site.window_known(number):
            return not_found(self.site)
        return _html(
            page(
                "window.html",
                HALL=self.site.title,
                WINDOW=str(number),
                STREAM=f"/events/window/{number}",
                RATE=f"/window/{number}/rate",
            )
        )

    async def ticket(self, request: web.Request) -> web.StreamResponse:
        ticket_id, token = _ticket(request)
        if not self.site.ticket_known(ticket_id, token):
            return not_found(self.site)  # a wrong token and an unknown ticket look the same
        return _html(
            page(
                "ticket.html",
                HALL=self.site.title,
                NUMBER=ticket_id.split("/")[1],
                STREAM=f"/events/t/{ticket_id}/{token}",
            )
        )

    # ---- live streams -----------------------------------------------------

    async def board_events(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("name", "")
        if not self.site.board_known(name):
            return not_found(self.site)
        return await self._stream(request, f"board:{name}", lambda: self.site.board_snapshot(name))

    async def window_events(self, request: web.Request) -> web.StreamResponse:
        number = _number(request.match_info["n"])
        if number is None or not self.site.window_known(number):
            return not_found(self.site)
        return await self._stream(
            request, f"window:{number}", lambda: self.site.window_snapshot(number)
        )

    async def ticket_events(self, request: web.Request) -> web.StreamResponse:
        ticket_id, token = _ticket(request)
        if not self.site.ticket_known(ticket_id, token):
            return not_found(self.site)
        return await self._stream(
            request, f"ticket:{ticket_id}", lambda: self.site.ticket_snapshot(ticket_id)
        )

    async def _stream(
        self, request: web.Request, channel: str, snapshot: Snapshot
    ) -> web.StreamResponse:
        hub = self.site.hub
        stream = hub.join(channel)
        if stream is None:
            return web.Response(
                status=503, text="too many screens connected", headers={"Retry-After": "10"}
            )
        try:
            response = web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream; charset=utf-8",
                    "Cache-Control": "no-store",
                    "X-Accel-Buffering": "no",
                }
            )
            await response.prepare(request)
            first = snapshot()
            stream.last = first
            await response.write(b"retry: 1000\n\n" + first)
            while True:
                try:
                    data = await asyncio.wait_for(stream.queue.get(), PING_S)
                except TimeoutError:
                    data = b": ping\n\n"
                if data is None:
                    break  # dropped for falling behind
                await response.write(data)
        except (ConnectionResetError, ConnectionError):
            pass  # the browser went
        finally:
            hub.leave(stream)
        return response

    # ---- the touch rating -------------------------------------------------

    async def rate(self, request: web.Request) -> web.StreamResponse:
        number = _number(request.match_info["n"])
        if number is None or not self.site.window_known(number):
            return not_found(self.site)
        origin = request.headers.get("Origin")
        if origin is None or origin != _own_origin(request):
            return web.json_response({"ok": False, "error": "cross-origin"}, status=403)
        if request.content_type != "application/json":
            return web.json_response({"ok": False, "error": "JSON only"}, status=415)
        if (request.content_length or 0) > MAX_BODY:
            return web.json_response({"ok": False, "error": "too large"}, status=413)
        try:
            body = await request.json()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"ok": False, "error": "too large"}, status=413)
        except (ValueError, UnicodeDecodeError):
            return web.json_response({"ok": False, "error": "not JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"ok": False, "error": "not an object"}, status=400)
        status, answer = await self.site.rate(number, body)
        return web.json_response(answer, status=status)

    # ---- the rest ---------------------------------------------------------

    async def photo(self, request: web.Request) -> web.StreamResponse:
        path = self.site.photo(request.match_info["staff"])
        if path is None:
            return not_found(self.site)
        return web.FileResponse(
            path,
            headers={
                "Content-Type": PHOTO_TYPES[path.suffix.lower()],
                "Cache-Control": "max-age=300",
            },
        )

    async def status(self, request: web.Request) -> web.StreamResponse:
        hub = self.site.hub
        return web.json_response(
            {
                "clients": hub.count,
                "channels": len(hub.channels),
                "refused": hub.refused,
                "dropped": hub.dropped,
            }
        )


def _html(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-store"})


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) <= 6 else None


def _ticket(request: web.Request) -> tuple[str, str]:
    info = request.match_info
    return f"{info['day']}/{info['number']}", info["token"]


def _own_origin(request: web.Request) -> str:
    host = request.headers.get("Host", "")
    return f"{request.scheme}://{host}"
