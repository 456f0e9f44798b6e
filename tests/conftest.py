"""Fixtures: an ephemeral CA, the shared audio library, real servers on 127.0.0.1:0."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from admin.client import FleetClient
from auth.tls import TlsMaterial
from device.audio_sink import RecordingSink
from device.client import DeviceClient
from server.app import AudioServer, start_server
from server.audio.library import AudioLibrary, load_library
from server.runtime.settings import ServerSettings
from tests.helpers import EphemeralPki
from tests.redis_server import RedisServer

MODE_COUNT = 5


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> EphemeralPki:
    return EphemeralPki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def library(tmp_path_factory: pytest.TempPathFactory) -> AudioLibrary:
    return load_library(MODE_COUNT, cache_dir=tmp_path_factory.mktemp("clip-cache"))


def make_settings(pki: EphemeralPki, tmp_path: Path, **overrides: Any) -> ServerSettings:
    values: dict[str, Any] = {
        "bind": "127.0.0.1:0",
        "health_bind": "127.0.0.1:0",
        "admin_bind": "127.0.0.1:0",
        "metrics_bind": "",  # one test turns it on: its HTTP server takes 0.5 s to shut down
        "pki_dir": pki.root,
        "state_backend": "memory",
        "state_path": tmp_path / "devices.sqlite3",
        "cache_dir": None,
        "mode_count": MODE_COUNT,
        "shutdown_grace_s": 2.0,
    }
    values.update(overrides)
    return ServerSettings(**values)


ServerFactory = Callable[..., Awaitable[AudioServer]]


@pytest.fixture
async def server_factory(
    pki: EphemeralPki, library: AudioLibrary, tmp_path: Path
) -> AsyncIterator[ServerFactory]:
    started: list[AudioServer] = []

    async def start(**overrides: Any) -> AudioServer:
        app = await start_server(make_settings(pki, tmp_path, **overrides), library)
        started.append(app)
        return app

    yield start
    for app in started:
        await app.stop(grace_s=1.0)


@pytest.fixture
async def server(server_factory: ServerFactory) -> AudioServer:
    return await server_factory()


@pytest.fixture
async def console(server_factory: ServerFactory) -> AudioServer:
    """A server with the web console on a port of its own."""
    return await server_factory(console_bind="127.0.0.1:0")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client for the console (it keeps the session cookie, as a browser does)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


Connect = Callable[..., AbstractAsyncContextManager[DeviceClient]]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server of this test's own, on a free port."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def connect(pki: EphemeralPki) -> Connect:
    """``async with connect(server, "acme", "dev-1") as client`` -> a connected headless device."""

    @asynccontextmanager
    async def _connect(
        app: AudioServer,
        tenant: str = "acme",
        device: str = "dev-1",
        *,
        tls: TlsMaterial | None = None,
        sink: RecordingSink | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[DeviceClient]:
        client = DeviceClient(
            f"127.0.0.1:{app.port}",
            tls or pki.device_tls(tenant, device),
            sink or RecordingSink(),
            **kwargs,
        )
        await client.connect()
        try:
            yield client
        finally:
            await client.close()

    return _connect


Admin = Callable[..., AbstractAsyncContextManager[Any]]


@pytest.fixture
def admin(pki: EphemeralPki) -> Admin:
    """``async with admin(app, "acme", role="viewer") as stub`` -> a FleetService stub as that operator."""

    @asynccontextmanager
    async def _admin(
        app: AudioServer, tenant: str | None = "acme", role: str = "admin", name: str = "ops",
        tls: TlsMaterial | None = None,
    ) -> AsyncIterator[Any]:  # fmt: skip
        async with FleetClient(
            f"127.0.0.1:{app.admin_port}", tls or pki.operator_tls(tenant, name, role)
        ) as c:
            yield c.stub

    return _admin


@pytest.fixture(scope="session")
def device_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Pi client's own wheel (pi/client), built once per run from this checkout."""
    client = Path(__file__).resolve().parent.parent / "pi" / "client"
    out = tmp_path_factory.mktemp("device-wheel")
    shutil.rmtree(client / "build", ignore_errors=True)  # a stale build/lib would leak removed modules
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, client],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("pi_audio_device-*.whl")
    return built
