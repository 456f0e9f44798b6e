"""The state store on Redis: several processes and replicas share every device's record.

One hash per device, ``audio:v1:device:<tenant>:<device>`` (ids are
``[a-z0-9_-]``, so ``:`` can never be part of one: keys are unambiguous). Each
intent is one Lua script, so it is atomic on the server whatever else writes:
``claim`` increments the epoch and names the session; ``set_mode`` and
``telemetry`` apply only while their session is still the device's
(compare-and-set), or unconditionally when called without a session.

``rediss://`` URLs use TLS (``ca_file`` verifies the server); a password comes
from a file, never from the URL in logs or settings dumps.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from auth.identity import Identity
from server.state.store import DeviceRecord, Intents, StateFileError, checked_changes, stored_value

KEY_PREFIX = "audio:v1:"
CONNECT_TIMEOUT_S = 3.0
COMMAND_TIMEOUT_S = 2.0  # a hung Redis fails calls in seconds: the guard and readiness take over
# After a Redis restart every pooled connection is dead and fails its first use: retry a connection
# error once, at once, on a fresh connection (a timeout is not retried: a hung Redis fails in seconds).
RECONNECT_RETRIES = 1

# KEYS[1] = device hash, KEYS[2] = the tenant's device index, KEYS[3] = the tenant index.
# ARGV[1] = session id, ARGV[2] = now, ARGV[3] = device id, ARGV[4] = tenant, then field/value pairs.
# A revoked device gets no session (0); the indexes list every device that ever claimed one.
_CLAIM = """
if redis.call('HGET', KEYS[1], 'revoked') == 'true' then return 0 end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'session_id', ARGV[1], 'updated_at', ARGV[2])
if #ARGV > 4 then redis.call('HSET', KEYS[1], unpack(ARGV, 5)) end
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
return epoch
"""
# KEYS[1] = device hash. ARGV[1] = session id or '' (unconditional), then field/value pairs.
_SET_IF_SESSION = """
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 'session_id') ~= ARGV[1] then
    return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""


TENANTS_KEY = f"{KEY_PREFIX}tenants"


def device_key(identity: Identity) -> str:
    return f"{KEY_PREFIX}device:{identity.tenant}:{identity.device_id}"


def tenant_devices_key(tenant: str) -> str:
    return f"{KEY_PREFIX}devices:{tenant}"


def redacted(url: str) -> str:
    """The URL without any password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _field(value: object) -> str:
    return json.dumps(value)


def _pairs(values: dict[str, object]) -> list[str]:
    pairs: list[str] = []
    for name, value in values.items():
        pairs += [name, _field(stored_value(name, value))]
    return pairs


def _record(identity: Identity, data: dict[Any, Any]) -> DeviceRecord | None:
    if not data:
        return None
    fields: dict[str, Any] = {
        str(name): value if name == "session_id" else json.loads(value) for name, value in data.items()
    }
    return DeviceRecord.from_fields(identity, fields)


class RedisStore(Intents):
    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self.client = client  # shared with the bus and presence (their own connections from its pool)
        self._claim = client.register_script(_CLAIM)
        self._set = client.register_script(_SET_IF_SESSION)

    @classmethod
    async def open(
        cls, url: str, ca_file: Path | None = None, password_file: Path | None = None
    ) -> RedisStore:
        """Connect and PING; a ``StateFileError`` (one clear line) if Redis cannot be used."""
        store = cls.connect(url, ca_file, password_file)
        try:
            await store.client.ping()
        except (RedisError, OSError) as exc:
            await store.close()
            raise StateFileError(
                f"cannot reach the Redis state store at {redacted(url)} ({type(exc).__name__}: {exc}); "
                "check --redis-url, the password file and that Redis is running"
            ) from None
        return store

    @classmethod
    def connect(cls, url: str, ca_file: Path | None = None, password_file: Path | None = None) -> RedisStore:
        """The client, without talking to Redis yet (the server may start before its Redis);
        a ``StateFileError`` (one clear line) for settings or files that cannot work."""
        options: dict[str, Any] = {
            "socket_connect_timeout": CONNECT_TIMEOUT_S,
            "socket_timeout": COMMAND_TIMEOUT_S,
            "health_check_interval": 10,
            "retry": Retry(NoBackoff(), RECONNECT_RETRIES, supported_errors=(RedisConnectionError,)),
            "retry_on_error": [RedisConnectionError],
            "decode_responses": True,
        }
        try:
            if password_file is not None:  # once, at start-up, before anything is served
                options["password"] = password_file.read_text().strip()
            if url.startswith("rediss://") and ca_file is not None:
                options["ssl_ca_certs"] = str(ca_file)
            client = aioredis.Redis.from_url(url, **options)
        except (OSError, ValueError) as exc:
            raise StateFileError(
                f"state store {redacted(url)}: {exc}; check --redis-url and its files"
            ) from None
        return cls(client)

    async def load(self, identity: Identity) -> DeviceRecord | None:
        return _record(identity, await self._redis.hgetall(device_key(identity)))

    async def list_devices(self, tenant: str | None) -> list[DeviceRecord]:
        tenants = (
            [tenant] if tenant is not None else sorted(map(str, await self._redis.smembers(TENANTS_KEY)))
        )
        identities = []
        for name in tenants:
            identities += [
                Identity(name, str(d)) for d in sorted(await self._redis.smembers(tenant_devices_key(name)))
            ]
        async with self._redis.pipeline(transaction=False) as pipe:
            for identity in identities:
                pipe.hgetall(device_key(identity))
            rows = await pipe.execute()
        records = [_record(identity, row) for identity, row in zip(identities, rows, strict=True)]
        return [r for r in records if r is not None and r.epoch > 0]

    async def claim_session(
        self, identity: Identity, session_id: str, facts: dict[str, object] | None = None
    ) -> int:
        keys = [device_key(identity), tenant_devices_key(identity.tenant), TENANTS_KEY]
        args = [session_id, _field(time.time()), identity.device_id, identity.tenant]
        args += _pairs(checked_changes(facts or {}))
        return int(await self._claim(keys=keys, args=args))

    async def update(self, identity: Identity, changes: dict[str, object], session_id: str | None) -> bool:
        return await self._set_if(identity, session_id, checked_changes(changes))

    async def _set_if(self, identity: Identity, session_id: str | None, values: dict[str, object]) -> bool:
        pairs = _pairs({**values, "updated_at": time.time()})
        applied = await self._set(keys=[device_key(identity)], args=[session_id or "", *pairs])
        return bool(applied)

    async def probe(self) -> None:
        await self._redis.set(f"{KEY_PREFIX}probe", _field(time.time()))

    async def close(self) -> None:
        await self._redis.aclose()
