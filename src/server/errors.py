"""Exceptions of the server package. Converted to gRPC status codes only at the call boundary."""

from __future__ import annotations

from typing import NoReturn

import grpc

STORE_UNAVAILABLE_TEXT = "state store unavailable; try again shortly"


ERROR_TEXT_LIMIT = 200  # a log field, not a dump


def describe(exc: BaseException) -> str:
    """An exception as one bounded log field: its type and text. For our logs only, never a caller:
    a store's error text may carry an internal address."""
    return f"{type(exc).__name__}: {exc}"[:ERROR_TEXT_LIMIT]


async def abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    """End the call with ``code`` and ``message``: grpc's ``abort`` raises, but is not typed so."""
    await context.abort(code, message)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


class ServerError(Exception):
    """Base class of the server's own failures."""


class MalformedRequest(ServerError, ValueError):
    """A request message that does not parse: the client's fault (INVALID_ARGUMENT), never a bug."""

    audited = False  # set once an operator call's audit event records it (exactly one event per call)


class StoreUnavailable(ServerError, ConnectionError):
    """The state store cannot be read or written right now (UNAVAILABLE; the caller may retry)."""


class StoreResetting(StoreUnavailable):
    """The shared store lost its data and this node is restoring it: no new sessions yet
    (UNAVAILABLE, but the store itself answers: not a store failure)."""


class StreamEnded(ServerError):
    """The server ended one stream on purpose, with a status for the device (e.g. replaced)."""

    def __init__(
        self, code: grpc.StatusCode, message: str, *, end_session: bool = False, why: str = "ended"
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.end_session = end_session  # the whole session ends with this status, not only the stream
        self.why = why


DEVICE_REVOKED_TEXT = "device revoked by an operator"
