"""SessionService.CreateSession: trade a client certificate for a short-lived bound token.

Authenticated by mTLS alone (the interceptor lists it as such). With a valid
current token in metadata it refreshes: same session, new token. Without one it
starts a new session, which supersedes the device's previous one.
"""

from __future__ import annotations

import logging

import grpc

from auth.errors import AuthError
from auth.tokens import bearer_token, issue_token, new_session_id
from comms.audio_format import FRAME_MS, LONG_FRAME_MS
from comms.gen import session_pb2 as spb
from comms.gen import session_pb2_grpc as spb_grpc
from server import metrics
from server.access.authn import Authenticator
from server.access.interceptor import abort_rejected, current_auth
from server.access.trust import TrustState
from server.devices.registry import DeviceRegistry

log = logging.getLogger(__name__)

CREATE_SESSION_METHOD = "/audio.session.v1.SessionService/CreateSession"


def frame_ms_for(request: spb.CreateSessionRequest) -> int:
    """60 ms packets for a device that can decode them, else today's 20 ms (fielded firmware sends 0)."""
    return LONG_FRAME_MS if request.max_frame_ms >= LONG_FRAME_MS else FRAME_MS


class SessionService(spb_grpc.SessionServiceServicer):
    def __init__(self, registry: DeviceRegistry, authenticator: Authenticator, trust: TrustState) -> None:
        self._registry = registry
        self._authenticator = authenticator
        self._trust = trust

    async def CreateSession(
        self, request: spb.CreateSessionRequest, context: grpc.aio.ServicerContext
    ) -> spb.CreateSessionResponse:
        peer = current_auth()
        try:
            token = bearer_token(context.invocation_metadata())
            if token is not None:
                refreshed = await self._authenticator.session(peer, token)
                assert refreshed.session_id is not None and refreshed.claims is not None
                session_id, kind, frame_ms = refreshed.session_id, "refresh", refreshed.claims.frame_ms
            else:
                session_id, kind, frame_ms = new_session_id(), "new", frame_ms_for(request)
                await self._registry.start_session(
                    peer.identity, session_id, peer.cert_serial, peer.cert_expires, peer.cert_issued
                )
        except AuthError as exc:
            await abort_rejected(
                context,
                exc,
                method=CREATE_SESSION_METHOD,
                tenant=peer.identity.tenant,
                device=peer.identity.device_id,
            )
        issued = issue_token(
            self._trust.keys,
            self._trust.policy,
            peer.identity,
            session_id,
            peer.thumbprint,
            frame_ms=frame_ms,
        )
        metrics.SESSIONS_CREATED.labels(kind=kind).inc()
        log.info(
            "session.token_issued",
            extra={
                "tenant": peer.identity.tenant,
                "device": peer.identity.device_id,
                "session": session_id,
                "kind": kind,
                "frame_ms": frame_ms,
                "kid": self._trust.keys.current.kid,
                "expires_at": issued.expires_at,
            },
        )
        return spb.CreateSessionResponse(
            token=issued.token,
            session_id=issued.session_id,
            expires_at_unix=issued.expires_at,
            refresh_after_unix=issued.refresh_after,
        )
