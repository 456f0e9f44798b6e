"""Console sign-in without passwords: one-time links made for a certificate-authenticated operator.

``audio-admin console login`` calls ``FleetService.CreateConsoleLogin`` with the
operator's certificate; ``create_login`` stores a random one-time token (only
its SHA-256, in the shared store, so any replica or worker can redeem it) and
returns it for the link. ``redeem`` takes it at most once, within
``LOGIN_TTL_S``, and opens a session: a second random id (the ``HttpOnly``
cookie; again only its hash is stored) carrying the operator's identity,
tenant and role as they were authenticated, and a CSRF token for forms.
Nothing else opens a session.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from auth.operators import OperatorIdentity, Role
from server.access.authn import OperatorAuth
from server.state.shared_data import SharedData

LOGIN_TTL_S = 300.0  # the link: valid 5 minutes, usable once
LOGINS = "console:logins"
SESSIONS = "console:sessions"


def _capped(expires: float, cert_expires: float) -> float:
    """A login or session ends when its operator certificate does, if that comes first."""
    return min(expires, cert_expires) if cert_expires > 0 else expires


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class ConsoleSession:
    spiffe_id: str
    name: str
    role: str
    tenant: str | None
    expires: float
    csrf: str
    cert_serial: int = 0  # the certificate the link was made with: revoking it ends the session
    cert_expires: float = 0.0  # and its notAfter: the session ends then at the latest (0: unknown)

    @property
    def auth(self) -> OperatorAuth:
        return OperatorAuth(
            OperatorIdentity(self.name, Role.parse(self.role), self.tenant),
            self.cert_serial,
            self.spiffe_id,
            self.cert_expires,
        )

    def csrf_ok(self, given: str) -> bool:
        return bool(given) and hmac.compare_digest(given, self.csrf)

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def decode(cls, raw: str) -> ConsoleSession:
        data = json.loads(raw)
        return cls(
            str(data["spiffe_id"]),
            str(data["name"]),
            str(data["role"]),
            data.get("tenant") or None,
            float(data["expires"]),
            str(data["csrf"]),
            int(data.get("cert_serial") or 0),
            float(data.get("cert_expires") or 0.0),
        )


class ConsoleSessions:
    def __init__(
        self, data: SharedData, session_ttl_s: float, is_revoked: Callable[[int], bool] = lambda serial: False
    ) -> None:
        self._data = data
        self.session_ttl_s = session_ttl_s
        self._is_revoked = is_revoked  # the operator certificate, in the CRL since sign-in?

    async def create_login(self, auth: OperatorAuth) -> tuple[str, float]:
        """A one-time token for ``auth``'s operator and when it expires."""
        token = secrets.token_urlsafe(32)
        expires = _capped(time.time() + LOGIN_TTL_S, auth.cert_expires)
        operator = auth.operator
        record = {
            "spiffe_id": auth.spiffe_id,
            "name": operator.name,
            "role": operator.role.label,
            "tenant": operator.tenant,
            "expires": expires,
            "cert_serial": auth.cert_serial,
            "cert_expires": auth.cert_expires,
        }
        await self._data.set_entry(LOGINS, _digest(token), json.dumps(record))
        return token, expires

    async def redeem(self, token: str) -> tuple[str, ConsoleSession] | None:
        """The login's new session (cookie value, session), or None if used, expired or unknown."""
        raw = await self._data.take_entry(LOGINS, _digest(token)) if token else None
        if raw is None:
            return None
        login = json.loads(raw)
        serial = int(login.get("cert_serial") or 0)
        if float(login["expires"]) < time.time() or self._is_revoked(serial):
            return None
        session_id = secrets.token_urlsafe(32)
        cert_expires = float(login.get("cert_expires") or 0.0)
        session = ConsoleSession(
            str(login["spiffe_id"]),
            str(login["name"]),
            str(login["role"]),
            login.get("tenant") or None,
            _capped(time.time() + self.session_ttl_s, cert_expires),
            secrets.token_urlsafe(24),
            serial,
            cert_expires,
        )
        await self._data.set_entry(SESSIONS, _digest(session_id), session.encode())
        return session_id, session

    async def get(self, session_id: str) -> ConsoleSession | None:
        if not session_id:
            return None
        raw = await self._data.get_entry(SESSIONS, _digest(session_id))
        if raw is None:
            return None
        session = ConsoleSession.decode(raw)
        now = time.time()
        expired = session.expires < now or 0 < session.cert_expires <= now
        if expired or self._is_revoked(session.cert_serial):
            await self._data.take_entry(SESSIONS, _digest(session_id))
            return None
        return session

    async def end(self, session_id: str) -> None:
        await self._data.take_entry(SESSIONS, _digest(session_id))
