"""How every operator call is run: least role per method, refusals and changes audited, errors mapped.

``OperatorCalls`` is shared by the two ways into ``FleetService``: the gRPC
listener (the interceptor checks the role, then the handler runs through
``run``) and in-process callers such as the console (``authorise`` first, then
the same handler with a ``LocalContext``). Either way a refusal is counted,
audited and answered with its status; a change is audited once it is done.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NoReturn, TypeVar

import grpc
from redis.exceptions import RedisError

from auth.operators import Role
from auth.reasons import Reason
from server import metrics
from server.access.authn import OperatorAuth
from server.access.interceptor import (
    BAD_MESSAGE_TEXT,
    OperatorCall,
    OperatorPolicy,
    Rejected,
    check_role,
    current_operator,
)
from server.errors import MalformedRequest, StoreUnavailable, abort
from server.operator.audit import AuditEvent, AuditLog

log = logging.getLogger(__name__)

T = TypeVar("T")
INTERNAL_TEXT = "internal error; the server's log has the details"
SERVICE = "audio.admin.v1.FleetService"
LEAST_ROLE = {
    "ListDevices": Role.VIEWER,
    "GetDevice": Role.VIEWER,
    "WatchDevices": Role.VIEWER,
    "ListDeviceEvents": Role.VIEWER,
    "ListAuditEvents": Role.VIEWER,
    "ListSounds": Role.VIEWER,
    "CreateConsoleLogin": Role.VIEWER,
    "SetMode": Role.OPERATOR,
    "Play": Role.OPERATOR,
    "Stop": Role.OPERATOR,
    "Disconnect": Role.OPERATOR,
    "UploadSound": Role.OPERATOR,
    "ResetSound": Role.OPERATOR,
    "CreateEnrollments": Role.OPERATOR,
    "ListEnrollments": Role.OPERATOR,
    "CancelEnrollment": Role.OPERATOR,
    "GetClaimCode": Role.OPERATOR,  # open enrolment: see operator/claims.py for why these roles
    "ListPendingEnrollments": Role.OPERATOR,
    "ApproveEnrollment": Role.OPERATOR,
    "DenyEnrollment": Role.OPERATOR,
    "SetClaimCode": Role.ADMIN,
    "DisableClaimCode": Role.ADMIN,
    "RevokeDevice": Role.ADMIN,
    "UnrevokeDevice": Role.ADMIN,
    # groups and announcements (issue 21)
    "SetLabels": Role.OPERATOR,
    "Announce": Role.OPERATOR,
    "CreateSchedule": Role.OPERATOR,
    "ListSchedules": Role.VIEWER,
    "GetSchedule": Role.VIEWER,
    "PauseSchedule": Role.OPERATOR,
    "ResumeSchedule": Role.OPERATOR,
    "DeleteSchedule": Role.OPERATOR,
    "Talk": Role.OPERATOR,
}
METHOD_ROLES = {f"/{SERVICE}/{name}": role for name, role in LEAST_ROLE.items()}


class ApiError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def not_found(what: str) -> ApiError:
    return ApiError(grpc.StatusCode.NOT_FOUND, f"{what} not found")


class LocalContext:
    """What a handler needs of a ``ServicerContext`` when called in-process (the console):
    ``abort`` raises ``ApiError`` instead of ending an RPC."""

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise ApiError(code, details)

    def peer(self) -> str:
        return "console"


@dataclass
class Note:
    """What an audit event says about the call; filled in as the request is understood."""

    tenant: str = ""
    target: str = ""
    parameters: dict[str, object] = field(default_factory=dict)


class OperatorCalls:
    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    def policy(self) -> OperatorPolicy:
        """For the interceptor of the operator listener."""
        return OperatorPolicy(METHOD_ROLES, self.refused)

    async def _write(
        self,
        auth: OperatorAuth | None,
        action: str,
        code: grpc.StatusCode,
        message: str,
        request_id: str,
        note: Note | None = None,
    ) -> None:
        operator = auth.operator if auth is not None else None
        note = note or Note()
        await self._audit.record(
            AuditEvent(
                operator=auth.spiffe_id if auth is not None else "",
                role=operator.role.label if operator is not None else "",
                tenant=note.tenant or ((operator.tenant or "") if operator is not None else ""),
                action=action[:80],
                target=note.target,
                parameters=note.parameters,
                result=code.name,
                message=message,
                request_id=request_id,
            )
        )

    async def refused(
        self, method: str, rejected: Rejected, auth: OperatorAuth | None, request_id: str
    ) -> None:
        """A call refused before its handler ran: audited (under the operator's tenant, if known)."""
        action = method.rsplit("/", 1)[-1]
        note = Note(parameters={"reason": rejected.reason})
        await self._write(auth, action, rejected.code, rejected.message, request_id, note)
        metrics.ADMIN_CALLS.labels(method=action, code=rejected.code.name).inc()

    async def authorise(self, call: OperatorCall, action: str) -> None:
        """The interceptor's role check for callers that do not come through it; refusals are
        counted and audited the same way."""
        try:
            check_role(call.operator, LEAST_ROLE[action], action)
        except Rejected as rejected:
            metrics.AUTH_FAILURES.labels(reason=rejected.reason).inc()
            await self.refused(f"/{SERVICE}/{action}", rejected, call.auth, call.request_id)
            raise ApiError(rejected.code, rejected.message) from None

    async def console_event(self, call: OperatorCall, action: str, refused_because: str = "") -> None:
        """What the console does outside the methods (sign-in, sign-out) or refuses before one
        (a missing CSRF token): audited like the rest."""
        if refused_because:
            note = Note(parameters={"reason": refused_because})
            code, message = grpc.StatusCode.PERMISSION_DENIED, f"refused: {refused_because}"
        else:
            note, code, message = Note(), grpc.StatusCode.OK, ""
        await self._write(call.auth, action, code, message, call.request_id, note)

    async def run(
        self,
        context: grpc.aio.ServicerContext,
        action: str,
        work: Callable[[OperatorCall, Note], Awaitable[T]],
        changes: bool,
    ) -> T:
        """Run one call: refusals become their status (audited); changes are audited when done."""
        call, note = current_operator(), Note()
        try:
            result = await work(call, note)
        except ApiError as exc:
            await self._write(call.auth, action, exc.code, exc.message, call.request_id, note)
            metrics.ADMIN_CALLS.labels(method=action, code=exc.code.name).inc()
            await abort(context, exc.code, exc.message)
        except StoreUnavailable:
            await self._unavailable(call, action, note)
            raise
        except MalformedRequest as exc:  # a streamed request message that does not parse
            invalid = grpc.StatusCode.INVALID_ARGUMENT
            note.parameters["reason"] = Reason.MALFORMED_REQUEST.value
            await self._write(call.auth, action, invalid, BAD_MESSAGE_TEXT, call.request_id, note)
            metrics.ADMIN_CALLS.labels(method=action, code=invalid.name).inc()
            exc.audited = True
            raise
        except (RedisError, OSError, sqlite3.Error) as exc:  # a store use that skipped its mapping
            log.warning("admin.store_failed", extra={"action": action, "error": type(exc).__name__})
            await self._unavailable(call, action, note)
            raise StoreUnavailable("state store unavailable") from None
        except grpc.aio.AbortError:
            raise
        except Exception:  # a bug: the traceback in our log, nothing of it on the wire
            log.exception("admin.internal_error", extra={"action": action, "request_id": call.request_id})
            internal = grpc.StatusCode.INTERNAL
            await self._write(call.auth, action, internal, INTERNAL_TEXT, call.request_id, note)
            metrics.ADMIN_CALLS.labels(method=action, code=internal.name).inc()
            await abort(context, internal, INTERNAL_TEXT)
        if changes:
            await self._write(call.auth, action, grpc.StatusCode.OK, "", call.request_id, note)
        metrics.ADMIN_CALLS.labels(method=action, code="OK").inc()
        return result

    async def cancelled(self, call: OperatorCall, action: str, note: Note) -> None:
        """A call whose caller went away (a talk's browser closed): audited as CANCELLED."""
        cancelled = grpc.StatusCode.CANCELLED
        await self._write(call.auth, action, cancelled, "the caller went away", call.request_id, note)
        metrics.ADMIN_CALLS.labels(method=action, code=cancelled.name).inc()

    async def _unavailable(self, call: OperatorCall, action: str, note: Note) -> None:
        unavailable = grpc.StatusCode.UNAVAILABLE
        await self._write(call.auth, action, unavailable, "state store unavailable", call.request_id, note)
        metrics.ADMIN_CALLS.labels(method=action, code=unavailable.name).inc()
