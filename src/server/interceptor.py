"""The one place where calls are authenticated.

``intercept_service`` only sees the method name and metadata, not the peer
certificate, so it wraps the method handler: the check runs inside the call,
where ``context.auth_context()`` holds the TLS-verified peer certificate. All
four handler kinds are wrapped, so streaming calls are refused exactly like
unary ones. A handler never runs unauthenticated: it reads the verified
identity from ``current_identity()``, which fails closed if unset.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from auth.errors import IdentityError
from auth.identity import Identity, identity_from_pem
from server import metrics

log = logging.getLogger(__name__)

LEGACY_DEVICE_ID_KEY = "device_id"
_identity: contextvars.ContextVar[Identity | None] = contextvars.ContextVar("identity", default=None)


def current_identity() -> Identity:
    """The authenticated identity of the running call. Raises if the interceptor did not run."""
    identity = _identity.get()
    if identity is None:
        raise RuntimeError("no authenticated identity: handler ran outside the auth interceptor")
    return identity


class AuthenticationFailed(Exception):
    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def _reason(exc: IdentityError) -> str:
    return type(exc).__name__.replace("Identity", "").lower() or "identity"


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Derive ``Identity`` from the client certificate's SPIFFE URI SAN for every call."""

    def __init__(self, trust_domain: str, exempt_methods: frozenset[str] = frozenset()) -> None:
        self._trust_domain = trust_domain
        self._exempt = exempt_methods

    def authenticate(self, context: grpc.aio.ServicerContext) -> Identity:
        auth = context.auth_context()
        pems = auth.get("x509_pem_cert") or []
        if len(pems) != 1:
            raise AuthenticationFailed(
                grpc.StatusCode.UNAUTHENTICATED,
                "no_client_cert",
                "a client certificate is required",
            )
        try:
            return identity_from_pem(pems[0], self._trust_domain)
        except IdentityError as exc:
            raise AuthenticationFailed(
                grpc.StatusCode.UNAUTHENTICATED,
                _reason(exc),
                f"client certificate carries no valid device identity: {exc}",
            ) from None

    def _check_legacy_metadata(
        self, context: grpc.aio.ServicerContext, identity: Identity, method: str
    ) -> None:
        """Old firmware sends ``device_id``: never an identity; a mismatch is only logged."""
        for key, value in context.invocation_metadata() or ():
            if key == LEGACY_DEVICE_ID_KEY and value != identity.device_id:
                log.warning(
                    "auth.device_id_metadata_mismatch",
                    extra={
                        "tenant": identity.tenant,
                        "device": identity.device_id,
                        "method": method,
                        "claimed": str(value)[:64],
                    },
                )

    async def _admit(self, context: grpc.aio.ServicerContext, method: str) -> None:
        try:
            identity = self.authenticate(context)
        except AuthenticationFailed as failure:
            metrics.AUTH_FAILURES.labels(reason=failure.reason).inc()
            log.warning(
                "auth.rejected",
                extra={"method": method, "reason": failure.reason, "peer": context.peer()},
            )
            await context.abort(failure.code, failure.message)
            raise AssertionError("unreachable: abort raises") from None  # pragma: no cover
        self._check_legacy_metadata(context, identity, method)
        _identity.set(identity)  # each RPC runs in its own task, so this never leaks across calls

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method in self._exempt:
            return handler
        return _wrap(handler, lambda context: self._admit(context, method))


Admit = Callable[[grpc.aio.ServicerContext], Awaitable[None]]


def _wrap(handler: grpc.RpcMethodHandler, admit: Admit) -> grpc.RpcMethodHandler:
    """Return a handler of the same kind whose behaviour runs only after ``admit``."""

    def guard(behavior: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(behavior):

            async def stream_out(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                await admit(context)
                async for response in behavior(request, context):
                    yield response

            return stream_out

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await admit(context)
            return await behavior(request, context)

        return call

    kinds = (
        ("unary_unary", grpc.unary_unary_rpc_method_handler),
        ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ("stream_unary", grpc.stream_unary_rpc_method_handler),
        ("stream_stream", grpc.stream_stream_rpc_method_handler),
    )
    for attr, factory in kinds:
        behavior = getattr(handler, attr)
        if behavior is not None:
            return factory(
                guard(behavior),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    raise ValueError("handler has no behaviour")  # pragma: no cover
