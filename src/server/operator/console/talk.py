"""The console's push-to-talk: a WebSocket on the console's origin carrying the page's microphone.

``GET /talk?csrf=...&tenant=T&device=ID`` (a device page) or ``...&selector=S``
(the fleet page's filter) upgrades to a WebSocket, but only after the checks a
form POST gets: the session cookie (the middleware: 401 without), the session's
CSRF token and a same-origin ``Origin`` (403, audited) and the operator role
(403, audited). Then the socket is the ``Talk`` call run in-process as the
session's operator (``FleetAdmin.talk``: the same scope and audit as gRPC):

* page -> server: binary messages of one 20 ms frame each (960 samples of
  48 kHz mono int16, 1920 bytes; the page's AudioWorklet makes them), then the
  text ``end`` when the button is released;
* server -> page: ``{"type": "started", "started": n, "busy": n, ...}`` as the
  talk starts, ``{"type": "ended", ...}`` at its end, or
  ``{"type": "refused", "status": 409, "message": ...}`` (all busy, a bad
  frame, ...); the socket then closes with the message as its reason.

A socket that closes without ``end`` (a tab closed, a browser gone) ends the
talk at once; a browser that vanishes without closing is ended by the nodes'
one-second idle rule (``server.announce.talk``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp
import grpc
from aiohttp import web

from auth.reasons import Reason
from comms.gen import admin_pb2 as apb
from server.errors import STORE_UNAVAILABLE_TEXT, StoreUnavailable
from server.fleet.labels import MAX_SELECTOR
from server.operator.calls import ApiError
from server.operator.talking import Metadata

if TYPE_CHECKING:
    from server.operator.console.web import Console

log = logging.getLogger(__name__)

MAX_MESSAGE = 4096  # one frame is 1920 bytes
CLOSE_REFUSED = 4000  # + the HTTP status of the refusal (4409: busy, 4400: a bad frame, 4403)
CLOSE_REASON = 120  # bytes a close reason may carry (the protocol allows 123)
NOT_A_SOCKET_TEXT = "The talk is a WebSocket: hold the Talk button on a device or fleet page."
ORIGIN_TEXT = "Refused: the talk must come from a page of this console."


class TalkSocket:
    def __init__(self, console: Console) -> None:
        self._console = console

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/talk", self.talk)

    async def talk(self, request: web.Request) -> web.StreamResponse:
        from server.operator.console.web import CALL, CSRF_TEXT, HTTP_STATUS, SESSION

        console = self._console
        session, call = request[SESSION], request[CALL]
        calls = console.admin.calls
        if not session.csrf_ok(request.query.get("csrf", "")):
            await calls.console_event(call, "console:/talk", Reason.CONSOLE_CSRF)
            return console.page("message.html", 403, title="Refused", message=CSRF_TEXT)
        origin = request.headers.get("Origin", "")
        if origin and urlsplit(origin).netloc != request.host:
            await calls.console_event(call, "console:/talk", Reason.CONSOLE_CSRF)
            return console.page("message.html", 403, title="Refused", message=ORIGIN_TEXT)
        try:
            await calls.authorise(call, "Talk")  # refused before the upgrade: a 403 page, audited
        except ApiError as exc:
            return console.error(request, exc)
        start = apb.TalkStart(tenant=request.query.get("tenant", "")[:64])
        if "selector" in request.query:
            start.selector = request.query["selector"][: MAX_SELECTOR + 1]
        start.device_ids.extend(d[:65] for d in request.query.getall("device", [])[:1001])
        socket = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, heartbeat=5.0)
        if not socket.can_prepare(request).ok:
            return console.page("message.html", 400, title="Could not do that", message=NOT_A_SOCKET_TEXT)
        await socket.prepare(request)

        async def started(metadata: Metadata) -> None:
            values = dict(metadata)
            counts = {k.removeprefix("talk-"): int(v) for k, v in values.items() if k != "talk-id"}
            await socket.send_json({"type": "started", "talk": values.get("talk-id", ""), **counts})

        try:
            try:
                result = await console.admin.talk(call, self._requests(start, socket), started)
            except StoreUnavailable:  # audited by the call
                raise ApiError(grpc.StatusCode.UNAVAILABLE, STORE_UNAVAILABLE_TEXT) from None
        except ApiError as exc:
            status = HTTP_STATUS.get(exc.code, 500)
            if not socket.closed:
                await socket.send_json({"type": "refused", "status": status, "message": exc.message})
                await socket.close(code=CLOSE_REFUSED + status, message=_reason(exc.message))
            return socket
        if not socket.closed:
            await socket.send_json(
                {
                    "type": "ended",
                    "ended": result.ended,
                    "seconds": round(result.seconds, 1),
                    "started": len(result.started),
                    "busy": len(result.busy),
                    "offline": len(result.offline),
                    "refused": len(result.refused),
                }
            )
            await socket.close(message=_reason(f"talk ended ({result.ended})"))
        return socket

    @staticmethod
    async def _requests(
        start: apb.TalkStart, socket: web.WebSocketResponse
    ) -> AsyncIterator[apb.TalkRequest]:
        """The socket as the ``Talk`` stream: the start, the page's frames, ``end`` on release."""
        yield apb.TalkRequest(start=start)
        async for message in socket:
            if message.type == aiohttp.WSMsgType.BINARY:
                yield apb.TalkRequest(pcm=message.data)
            elif message.type == aiohttp.WSMsgType.TEXT and message.data == "end":
                yield apb.TalkRequest(end=True)
                return
            else:  # anything else is not a frame: the talk refuses it in its own words
                yield apb.TalkRequest(pcm=b"")
        # closed without "end": the caller went away


def _reason(text: str) -> bytes:
    return text.encode()[:CLOSE_REASON]
