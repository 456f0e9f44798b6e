"""State-store faults: a clear line at start-up; at run time live devices keep working, nothing leaks.

Real faults on a real SQLite file: garbage and truncated files, a read-only
file system, a database another process holds locked, and a full disk (a
small tmpfs filled up). Mounting needs root; without it every case still runs:
the read-only case on a directory without write permission, the full disk as
the store's connection failing every write the way SQLite reports ENOSPC.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from auth.identity import Identity
from server.app import AudioServer
from server.errors import StoreUnavailable
from server.state.sqlite_store import SqliteStore
from server.state.store import StateFileError
from tests.conftest import Connect, ServerFactory
from tests.helpers import (
    MODE,
    EphemeralPki,
    auth_failures,
    connected,
    counted_since,
    mode_of,
    sample,
    wait_for,
)
from tests.test_entrypoint import run_server
from tests.test_ops import NOT_SERVING, SERVING, health_status
from tests.test_security import create_session

RETRY_S = 0.05


def start_args(pki: EphemeralPki, state: Path) -> list[str]:
    return ["--pki-dir", str(pki.root), "--bind", "127.0.0.1:0", "--health-bind", "", "--metrics-bind", "",
            "--admin-bind", "",
            "--state-path", str(state)]  # fmt: skip


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("audio-server: cannot start: state file "), result.stderr
    for needle in needles:
        assert needle in line, line


def test_garbage_state_file_stops_start_up_with_one_line(tmp_path: Path, pki: EphemeralPki) -> None:
    state = tmp_path / "devices.sqlite3"
    state.write_bytes(b"this is not a database at all\n" * 200)
    assert_one_clear_line(run_server(*start_args(pki, state)), str(state), "move it aside")


async def test_truncated_state_file_stops_start_up_with_one_line(tmp_path: Path, pki: EphemeralPki) -> None:
    state = tmp_path / "devices.sqlite3"
    store = await SqliteStore.open(state)
    for n in range(400):  # many pages, so cutting the file loses some
        await store.set_mode(Identity("acme", f"dev-{n}"), n % 5, None)
    await store.close()
    with sqlite3.connect(state) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = state.read_bytes()
    state.write_bytes(data[: len(data) // 2])
    with pytest.raises(StateFileError):
        await SqliteStore.open(state)
    assert_one_clear_line(run_server(*start_args(pki, state)), str(state))


def test_a_row_of_garbage_stops_start_up(tmp_path: Path, pki: EphemeralPki) -> None:
    state = tmp_path / "devices.sqlite3"
    with sqlite3.connect(state) as conn:
        conn.execute(
            "CREATE TABLE devices (tenant TEXT NOT NULL, device_id TEXT NOT NULL, state TEXT NOT NULL, "
            "updated_at REAL NOT NULL, PRIMARY KEY (tenant, device_id))"
        )
        conn.execute("INSERT INTO devices VALUES ('acme', 'dev-1', '{not json', 0)")
    assert_one_clear_line(run_server(*start_args(pki, state)), str(state), "not a usable SQLite database")


@contextlib.contextmanager
def maybe_tmpfs(path: Path, options: str) -> Iterator[bool]:
    """A tmpfs mounted on ``path`` (True), or just the directory where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    try:
        yield result.returncode == 0
    finally:
        if result.returncode == 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def read_only_directory(path: Path) -> Iterator[Path]:
    """A read-only tmpfs as root (who writes through permissions); a mode 0555 directory otherwise."""
    if os.geteuid() != 0:
        path.mkdir(parents=True)
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    with maybe_tmpfs(path, "ro,size=1m") as mounted:
        if not mounted:
            pytest.skip("root without the right to mount: no way to make a directory read-only to us")
        yield path


def test_read_only_state_directory_stops_start_up(tmp_path: Path, pki: EphemeralPki) -> None:
    with read_only_directory(tmp_path / "ro") as directory:
        result = run_server(*start_args(pki, directory / "devices.sqlite3"))
    assert_one_clear_line(result, str(directory / "devices.sqlite3"))


# --- faults while running ------------------------------------------------------


@contextlib.contextmanager
def locked(state: Path) -> Iterator[None]:
    """Another process's exclusive transaction: every write of ours fails with 'database is locked'."""
    holder = sqlite3.connect(state, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@contextlib.contextmanager
def disk_full(directory: Path) -> Iterator[None]:
    """Fill the file system the state lives on; free the space again on exit."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass  # ENOSPC: full
    finally:
        os.close(fd)
    try:
        yield
    finally:
        filler.unlink()


class _FullDiskConnection:
    """The store's SQLite connection as on a full disk: reads work, every write fails with the
    error SQLite raises for ENOSPC (SQLITE_FULL)."""

    WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql.lstrip().upper().startswith(self.WRITES):
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)


@contextlib.contextmanager
def injected_full_disk(store: SqliteStore) -> Iterator[None]:
    """A full disk without root: the fault injected at the store's one connection."""
    real = store.connection
    store._conn = _FullDiskConnection(real)  # type: ignore[assignment]
    try:
        yield
    finally:
        store._conn = real


async def exercise_a_store_outage(
    app: AudioServer, connect: Connect, pki: EphemeralPki, fault: contextlib.AbstractContextManager[None]
) -> None:
    """While the store fails: presses apply and are acked, new sessions are UNAVAILABLE, readiness
    is NOT_SERVING; afterwards everything recovers by itself and the modes pressed meanwhile are saved."""
    assert app.health is not None
    async with connect(app, "faults", "dev-1") as one, connect(app, "faults", "dev-2") as two:
        await one.press(MODE)
        await wait_for(lambda: app.store.pending == 0)
        with fault:
            assert (await one.press(MODE)).ack  # applied from memory: the LED shows it...
            await wait_for(lambda: mode_of(one.view.leds) == 2)
            await wait_for(lambda: not app.store.healthy)  # ...while the write is retried
            assert await health_status(app.health.port) == NOT_SERVING
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await create_session(app.port, pki.device_tls("faults", "newcomer"))
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "state store unavailable" in (info.value.details() or "")
            assert (await two.press(MODE)).ack
            assert sample("audio_store_up") == 0
        await wait_for(lambda: app.store.healthy and app.store.pending == 0, timeout=10)
        assert await health_status(app.health.port) == SERVING
        await create_session(app.port, pki.device_tls("faults", "newcomer"))  # accepted again
        assert not one.ends and not two.ends
    stored = await app.store.store.load(Identity("faults", "dev-1"))
    assert stored is not None and stored.mode == 2  # the press made during the outage was not lost


async def test_locked_database_while_devices_are_connected(
    server_factory: ServerFactory, connect: Connect, pki: EphemeralPki, tmp_path: Path
) -> None:
    state = tmp_path / "locked" / "devices.sqlite3"
    app = await server_factory(state_backend="sqlite", state_path=state, store_retry_s=RETRY_S)
    await exercise_a_store_outage(app, connect, pki, locked(state))
    await wait_for(lambda: len(app.registry) == 0)
    assert connected("faults") == 0


async def test_disk_full_while_devices_are_connected(
    server_factory: ServerFactory, connect: Connect, pki: EphemeralPki, tmp_path: Path
) -> None:
    directory = tmp_path / "small"
    with maybe_tmpfs(directory, "size=2m") as mounted:
        app = await server_factory(
            state_backend="sqlite", state_path=directory / "devices.sqlite3", store_retry_s=RETRY_S
        )
        assert isinstance(app.store.store, SqliteStore)
        fault = disk_full(directory) if mounted else injected_full_disk(app.store.store)
        await exercise_a_store_outage(app, connect, pki, fault)
        await app.stop()


async def test_devices_leaving_during_an_outage_are_evicted_and_saved_later(
    server_factory: ServerFactory, connect: Connect, tmp_path: Path
) -> None:
    """The worst case seen: a failed save on disconnect kept the device in memory and in the gauge."""
    state = tmp_path / "leave" / "devices.sqlite3"
    app = await server_factory(state_backend="sqlite", state_path=state, store_retry_s=RETRY_S)
    async with contextlib.AsyncExitStack() as stack:
        devices = [await stack.enter_async_context(connect(app, "leavers", f"dev-{n}")) for n in range(3)]
        with locked(state):
            for device in devices:
                assert (await device.press(MODE)).ack
            await stack.aclose()  # all three leave while nothing can be written
            await wait_for(lambda: len(app.registry) == 0)  # evicted all the same
            assert connected("leavers") == 0 and app.store.pending == 3
            assert (await app.store.load(Identity("leavers", "dev-0"))).mode == 1  # type: ignore[union-attr]
    await wait_for(lambda: app.store.pending == 0, timeout=10)
    for n in range(3):
        stored = await app.store.store.load(Identity("leavers", f"dev-{n}"))
        assert stored is not None and stored.mode == 1
    async with connect(app, "leavers", "dev-0") as again:
        await wait_for(lambda: mode_of(again.view.leds) == 1)


async def test_a_store_that_fails_reads_refuses_streams_with_unavailable(
    server_factory: ServerFactory, tmp_path: Path, pki: EphemeralPki
) -> None:
    """A device that is not live needs the store to check its session: UNAVAILABLE, not UNKNOWN."""
    state = tmp_path / "reads" / "devices.sqlite3"
    app = await server_factory(state_backend="sqlite", state_path=state, store_retry_s=RETRY_S)
    session = await create_session(app.port, pki.device_tls("reads", "dev-1"))
    await app.store.store.close()  # the file is gone from under us: every read fails
    with pytest.raises(StoreUnavailable):
        await app.store.load(Identity("reads", "dev-1"))
    from tests.test_security import call_each_method

    before = auth_failures()
    codes = await call_each_method(app.port, pki.device_tls("reads", "dev-1"), session.token)
    assert counted_since(before) == {"store_unavailable": 3}
    assert codes == {"status": grpc.StatusCode.UNAVAILABLE} | {
        "event": grpc.StatusCode.UNAVAILABLE,
        "audio": grpc.StatusCode.UNAVAILABLE,
    }
