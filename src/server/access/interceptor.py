"""The one place where calls are authenticated.

``intercept_service`` only sees the method name and metadata, not the peer
certificate, so it wraps the method handler: the check runs inside the call,
where ``context.auth_context()`` holds the TLS-verified peer certificate. All
four handler kinds are wrapped, so streaming calls are refused exactly like
unary ones. Methods listed as mTLS-only (CreateSession) need the client
certificate; every other method also needs a valid session token. Handlers
read the verified facts from ``current_auth()``, which fails closed if unset.

The operator API's listener has its own instance with an ``OperatorPolicy``:
there every call needs an operator certificate (device certificates are
refused, ``cert_not_an_operator``), the operator's signed role must reach the
method's least role (``role_insufficient``), and every refusal is audited.

Request bytes are parsed only after authentication (the wrapped handler gets
raw bytes), so an unauthenticated caller learns nothing but UNAUTHENTICATED,
and bytes that do not parse are the client's fault: INVALID_ARGUMENT, counted.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc

from auth.errors import AuthError, CertificateRevoked, IdentityError, RoleInsufficient, TokenError
from auth.operators import OperatorIdentity, Role
from auth.reasons import Reason
from auth.tokens import bearer_token
from comms.log_sampling import SampledLog
from server import metrics
from server.access.authn import Authenticator, CallAuth, OperatorAuth
from server.access.handshakes import HandshakeMonitor
from server.errors import STORE_UNAVAILABLE_TEXT, MalformedRequest, StoreUnavailable, abort
from server.limits import CallLimiter

log = logging.getLogger(__name__)

BAD_MESSAGE_TEXT = "request message could not be parsed"
AUTH_FAILED_TEXT = "authentication failed"
INTERNAL_ERROR_TEXT = "internal error; the server logged the details"
# One client refused hundreds of times writes a few lines a minute; the metric counts every one.
_rejections_log = SampledLog()
_bad_messages_log = SampledLog()

LEGACY_DEVICE_ID_KEY = "device_id"
_call_auth: contextvars.ContextVar[CallAuth | None] = contextvars.ContextVar("call_auth", default=None)
_operator_auth: contextvars.ContextVar[OperatorCall | None] = contextvars.ContextVar(
    "operator_auth", default=None
)
REQUEST_ID_KEY = "x-request-id"


def current_auth() -> CallAuth:
    """The authenticated facts of the running call. Raises if the interceptor did not run."""
    auth = _call_auth.get()
    if auth is None:
        raise RuntimeError("no authenticated identity: handler ran outside the auth interceptor")
    return auth


@dataclass(frozen=True)
class OperatorCall:
    """An authenticated operator call: who, and the request id its audit events carry."""

    auth: OperatorAuth
    request_id: str

    @property
    def operator(self) -> OperatorIdentity:
        return self.auth.operator


def check_role(operator: OperatorIdentity, needed: Role, action: str) -> None:
    """``Rejected`` (PERMISSION_DENIED, naming the role needed) unless ``operator`` may ``action``."""
    if operator.role < needed:
        raise Rejected(
            grpc.StatusCode.PERMISSION_DENIED,
            RoleInsufficient.reason,
            f"permission denied: {action} needs the {needed.label} role; you are {operator.role.label}",
        )


@contextlib.contextmanager
def acting_as(call: OperatorCall) -> Iterator[None]:
    """Run FleetService handlers in-process (the console) as ``call``'s operator; the caller has
    authenticated and authorised it (``FleetAdmin.invoke``)."""
    token = _operator_auth.set(call)
    try:
        yield
    finally:
        _operator_auth.reset(token)


def current_operator() -> OperatorCall:
    """The operator of the running call. Raises if the operator interceptor did not run."""
    call = _operator_auth.get()
    if call is None:
        raise RuntimeError("no authenticated operator: handler ran outside the operator interceptor")
    return call


Refused = Callable[[str, "Rejected", OperatorAuth | None, str], Awaitable[None]]


@dataclass(frozen=True)
class OperatorPolicy:
    """How the operator API's listener authorises: the least role per method, and who hears of
    refusals (the audit log: method, rejection, the operator if known, request id)."""

    roles: Mapping[str, Role]
    on_refused: Refused


class Rejected(Exception):
    def __init__(self, code: grpc.StatusCode, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def rejection(exc: AuthError) -> Rejected:
    """Map an auth failure to its status code, a stable reason label and a clear message."""
    if isinstance(exc, CertificateRevoked):
        return Rejected(grpc.StatusCode.PERMISSION_DENIED, exc.reason, str(exc))
    if isinstance(exc, TokenError):
        code = grpc.StatusCode.PERMISSION_DENIED if exc.forbidden else grpc.StatusCode.UNAUTHENTICATED
        return Rejected(code, exc.reason, str(exc))
    if isinstance(exc, IdentityError):
        return Rejected(
            grpc.StatusCode.UNAUTHENTICATED,
            exc.reason,
            f"client certificate carries no valid device identity: {exc}",
        )
    return Rejected(grpc.StatusCode.UNAUTHENTICATED, Reason.AUTH_ERROR, str(exc))


async def abort_rejected(
    context: grpc.aio.ServicerContext, failure: Rejected | AuthError, **log_fields: object
) -> NoReturn:
    """The one way a call is refused: counted by reason, logged, ended with its status code."""
    rejected = failure if isinstance(failure, Rejected) else rejection(failure)
    metrics.AUTH_FAILURES.labels(reason=rejected.reason).inc()
    who = log_fields.get("device") or _peer_host(context)
    held_back = _rejections_log.admit((rejected.reason, log_fields.get("tenant"), who))
    if held_back is not None:
        log.warning(
            "auth.rejected",
            extra={
                **log_fields,
                "reason": rejected.reason,
                "code": rejected.code.name,
                "suppressed": held_back,
            },
        )
    await abort(context, rejected.code, rejected.message)


@contextlib.contextmanager
def _refusals(method: str) -> Iterator[None]:
    """What authenticating a call may raise, as the ``Rejected`` that answers it."""
    try:
        yield
    except AuthError as exc:
        raise rejection(exc) from None
    except StoreUnavailable:
        raise Rejected(
            grpc.StatusCode.UNAVAILABLE, Reason.STORE_UNAVAILABLE, STORE_UNAVAILABLE_TEXT
        ) from None
    except Exception:
        # A bug in our checks: fail closed, keep the story in our log, say nothing on the wire.
        log.exception("auth.error", extra={"method": method})
        raise Rejected(grpc.StatusCode.UNAUTHENTICATED, Reason.AUTH_INTERNAL, AUTH_FAILED_TEXT) from None


class OpenInterceptor(grpc.aio.ServerInterceptor):
    """Every listener's handling of requests: bytes parsed by us (INVALID_ARGUMENT in our words,
    counted), a store outage UNAVAILABLE, a bug INTERNAL with the story in the log only, all
    inside ``_admit``. Used as is where callers have no certificate yet (enrolment), which admits
    everyone; ``AuthInterceptor`` admits only authenticated callers."""

    @contextlib.asynccontextmanager
    async def _admit(self, context: grpc.aio.ServicerContext, method: str) -> AsyncIterator[None]:
        yield

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        return _wrap(handler, lambda context: self._admit(context, method), method)


class AuthInterceptor(OpenInterceptor):
    """Authenticate every call; hand the handler a ``CallAuth``; cap concurrent calls per identity."""

    def __init__(
        self,
        authenticator: Authenticator,
        limiter: CallLimiter,
        mtls_only_methods: frozenset[str],
        handshakes: HandshakeMonitor | None = None,
        operators: OperatorPolicy | None = None,
    ) -> None:
        self._handshakes = handshakes
        self._authenticator = authenticator
        self._limiter = limiter
        self._mtls_only = mtls_only_methods
        self._operators = operators

    def _peer_pem(self, context: grpc.aio.ServicerContext) -> bytes:
        pems = context.auth_context().get("x509_pem_cert") or []
        if len(pems) != 1:
            raise Rejected(
                grpc.StatusCode.UNAUTHENTICATED, Reason.NO_CLIENT_CERT, "a client certificate is required"
            )
        return bytes(pems[0])

    @staticmethod
    def _peer_chain(context: grpc.aio.ServicerContext) -> list[bytes]:
        """What the client sent after its leaf (an issuing CA), as the handshake verified it."""
        return [bytes(pem) for pem in context.auth_context().get("x509_pem_cert_chain") or []]

    def _authenticate_operator(self, context: grpc.aio.ServicerContext, method: str) -> OperatorAuth:
        pem = self._peer_pem(context)
        with _refusals(method):
            return self._authenticator.operator(pem)
        raise AssertionError("unreachable: the block returns or raises")  # pragma: no cover

    def _authorise(self, auth: OperatorAuth, method: str) -> None:
        assert self._operators is not None
        needed = self._operators.roles.get(method)
        if needed is None:  # a method nobody listed: nobody may call it
            raise Rejected(grpc.StatusCode.PERMISSION_DENIED, Reason.METHOD_NOT_ALLOWED, "method not allowed")
        check_role(auth.operator, needed, method.rsplit("/", 1)[-1])

    async def _authenticate(self, context: grpc.aio.ServicerContext, method: str) -> CallAuth:
        pem = self._peer_pem(context)
        with _refusals(method):
            peer = self._authenticator.peer(pem, self._peer_chain(context))
            if method in self._mtls_only:
                return peer
            return await self._authenticator.session(peer, bearer_token(context.invocation_metadata()))
        raise AssertionError("unreachable: the block returns or raises")  # pragma: no cover

    def _check_legacy_metadata(self, context: grpc.aio.ServicerContext, auth: CallAuth, method: str) -> None:
        """Old firmware sends ``device_id``: never an identity; a mismatch is only logged."""
        for key, value in context.invocation_metadata() or ():
            if key == LEGACY_DEVICE_ID_KEY and value != auth.identity.device_id:
                log.warning(
                    "auth.device_id_metadata_mismatch",
                    extra={
                        "tenant": auth.identity.tenant,
                        "device": auth.identity.device_id,
                        "method": method,
                        "claimed": str(value)[:64],
                    },
                )

    def _acquire(self, who: Hashable, kind: str) -> None:
        """One more concurrent call of ``who``, or RESOURCE_EXHAUSTED (released by the caller)."""
        if not self._limiter.acquire(who):
            raise Rejected(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                Reason.TOO_MANY_CALLS,
                f"too many concurrent calls for this {kind} (limit {self._limiter.limit})",
            )

    @contextlib.asynccontextmanager
    async def _admit_operator(self, context: grpc.aio.ServicerContext, method: str) -> AsyncIterator[None]:
        assert self._operators is not None
        request_id = uuid.uuid4().hex
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        auth: OperatorAuth | None = None
        try:
            auth = self._authenticate_operator(context, method)
            self._authorise(auth, method)
            self._acquire(auth.spiffe_id, "operator")
        except Rejected as rejected:
            await self._operators.on_refused(method, rejected, auth, request_id)
            operator = auth.spiffe_id if auth is not None else ""
            await abort_rejected(context, rejected, method=method, peer=context.peer(), operator=operator)
        _operator_auth.set(OperatorCall(auth, request_id))
        try:
            yield
        except MalformedRequest as exc:  # bytes that do not parse: refused, counted and audited too
            if not exc.audited:
                malformed = Rejected(
                    grpc.StatusCode.INVALID_ARGUMENT, Reason.MALFORMED_REQUEST, BAD_MESSAGE_TEXT
                )
                await self._operators.on_refused(method, malformed, auth, request_id)
            raise
        finally:
            self._limiter.release(auth.spiffe_id)

    @contextlib.asynccontextmanager
    async def _admit(self, context: grpc.aio.ServicerContext, method: str) -> AsyncIterator[None]:
        if self._handshakes is not None:  # this call's connection got through its handshake
            self._handshakes.call_from(str(context.peer()))
        if self._operators is not None:
            async with self._admit_operator(context, method):
                yield
            return
        try:
            auth = await self._authenticate(context, method)
            self._acquire(auth.identity, "device")
        except Rejected as rejected:
            await abort_rejected(context, rejected, method=method, peer=context.peer())
        self._check_legacy_metadata(context, auth, method)
        _call_auth.set(auth)  # each RPC runs in its own task, so this never leaks across calls
        try:
            yield
        finally:
            self._limiter.release(auth.identity)


Admit = Callable[[grpc.aio.ServicerContext], contextlib.AbstractAsyncContextManager[None]]
Deserializer = Callable[[bytes], Any] | None


def _parse(deserializer: Deserializer, raw: Any) -> Any:
    if deserializer is None:
        return raw
    try:
        return deserializer(raw)
    except Exception:  # protobuf's DecodeError and friends: bytes the client chose
        raise MalformedRequest from None


async def _parsed(deserializer: Deserializer, raw_requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for raw in raw_requests:
        yield _parse(deserializer, raw)


async def _refuse_malformed(context: grpc.aio.ServicerContext, method: str) -> NoReturn:
    metrics.BAD_MESSAGES.labels(method=method.rsplit("/", 1)[-1]).inc()
    held_back = _bad_messages_log.admit((method, _peer_host(context)))
    if held_back is not None:
        log.warning(
            "request.malformed", extra={"method": method, "peer": context.peer(), "suppressed": held_back}
        )
    await abort(context, grpc.StatusCode.INVALID_ARGUMENT, BAD_MESSAGE_TEXT)


async def _store_unavailable(context: grpc.aio.ServicerContext, method: str) -> NoReturn:
    """The call needed the state store and it is down: the caller may retry (readiness says so too)."""
    log.warning("request.store_unavailable", extra={"method": method})
    await abort(context, grpc.StatusCode.UNAVAILABLE, STORE_UNAVAILABLE_TEXT)


@contextlib.asynccontextmanager
async def _answering_client_faults(context: grpc.aio.ServicerContext, method: str) -> AsyncIterator[None]:
    """Bad bytes (INVALID_ARGUMENT) and a store outage (UNAVAILABLE) are answered, never bugs."""
    try:
        yield
    except MalformedRequest:
        await _refuse_malformed(context, method)
    except StoreUnavailable:
        await _store_unavailable(context, method)
    except grpc.aio.AbortError:
        raise  # the handler answered on purpose
    except grpc.aio.InternalError:
        if context.done():
            # gRPC failed to send on a call that is over (the device left before its status):
            # gRPC ignores that for a call its client closed; nothing is left to tell anyone.
            raise
        _internal_error(method)
        await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_ERROR_TEXT)
    except Exception:  # a bug the handler did not catch: our words on the wire, the story in the log
        _internal_error(method)
        await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_ERROR_TEXT)


def _internal_error(method: str) -> None:
    log.exception("request.internal_error", extra={"method": method})


def _peer_host(context: grpc.aio.ServicerContext) -> str:
    """``ipv4:1.2.3.4:5678`` -> ``ipv4:1.2.3.4``: one key per client host, not per connection."""
    return str(context.peer()).rpartition(":")[0]


def _wrap(handler: grpc.RpcMethodHandler, admit: Admit, method: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind that parses requests and runs its behaviour only inside ``admit``."""
    deserializer: Deserializer = handler.request_deserializer

    def guard(behavior: Callable[..., Any], streaming_request: bool) -> Callable[..., Any]:
        def requests(raw: Any) -> Any:
            return _parsed(deserializer, raw) if streaming_request else _parse(deserializer, raw)

        if inspect.isasyncgenfunction(behavior):

            async def stream_out(raw: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                async with _answering_client_faults(context, method), admit(context):
                    async for response in behavior(requests(raw), context):
                        yield response

            return stream_out

        async def call(raw: Any, context: grpc.aio.ServicerContext) -> Any:
            async with _answering_client_faults(context, method), admit(context):  # admit sees faults first
                return await behavior(requests(raw), context)
            raise AssertionError("unreachable: the block returns or aborts")  # pragma: no cover

        return call

    kinds = (
        ("unary_unary", grpc.unary_unary_rpc_method_handler, False),
        ("unary_stream", grpc.unary_stream_rpc_method_handler, False),
        ("stream_unary", grpc.stream_unary_rpc_method_handler, True),
        ("stream_stream", grpc.stream_stream_rpc_method_handler, True),
    )
    for attr, factory, streaming_request in kinds:
        behavior = getattr(handler, attr)
        if behavior is not None:
            return factory(
                guard(behavior, streaming_request),
                request_deserializer=None,  # parsed inside ``admit``, after authentication
                response_serializer=handler.response_serializer,
            )
    raise ValueError("handler has no behaviour")  # pragma: no cover
