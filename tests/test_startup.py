"""A start that fails half-way closes what it had started: no task, socket, thread or file is left
behind, and a second start on the same ports works (issue 19: the exit-stack start-up)."""

from __future__ import annotations

import ast
import asyncio
import gc
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from server.app import start_server
from server.audio.library import AudioLibrary
from server.operator.console.web import Console
from tests.conftest import make_settings
from tests.helpers import EphemeralPki, wait_for

SRC = Path(__file__).resolve().parent.parent / "src"
LISTENERS = ["bind", "admin_bind", "console_bind", "metrics_bind", "health_bind", "enroll_bind"]


def open_files() -> list[str]:
    """What this process holds open: files by path, sockets and pipes by inode."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            held.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:
            continue  # the directory listing's own descriptor, closed already
    return sorted(held)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def port_in_use() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield int(other.getsockname()[1])


def full_settings(pki: EphemeralPki, tmp_path: Path, **overrides: Any) -> Any:
    """Every listener on, a state file (a file the failed start must close), fixed device port."""
    pki.issuing_ca()  # enrolment's listener needs it
    values: dict[str, Any] = {
        "bind": f"127.0.0.1:{free_port()}",
        "console_bind": "127.0.0.1:0",
        "enroll_bind": "127.0.0.1:0",
        "metrics_bind": f"127.0.0.1:{free_port()}",
        "state_backend": "sqlite",
        "state_path": tmp_path / "devices.sqlite3",
    }
    values.update(overrides)
    return make_settings(pki, tmp_path, **values)


async def settle_and_snapshot() -> tuple[set[asyncio.Task[Any]], list[str], int]:
    gc.collect()
    await asyncio.sleep(0)
    return set(asyncio.all_tasks()), open_files(), threading.active_count()


async def assert_back_to(before: tuple[set[asyncio.Task[Any]], list[str], int]) -> None:
    tasks, files, threads = before
    me = asyncio.current_task()

    def left_tasks() -> set[asyncio.Task[Any]]:
        return {t for t in asyncio.all_tasks() if t is not me and t not in tasks and not t.done()}

    def settled() -> bool:
        gc.collect()  # a gRPC server object lets go of its completion queue when collected
        return not left_tasks() and open_files() == files and threading.active_count() <= threads

    try:
        await wait_for(settled, timeout=5)
    except AssertionError:
        leaked_files = sorted(set(open_files()) - set(files))
        raise AssertionError(
            f"left behind: tasks {[t.get_name() for t in left_tasks()]}, files {leaked_files}, "
            f"threads {threading.active_count() - threads}"
        ) from None


@pytest.fixture
async def warmed_up(pki: EphemeralPki, library: AudioLibrary, tmp_path: Path) -> None:
    """One whole start and stop, and one failed start, first: gRPC's pollers, the descriptor it keeps
    after its first never-started server, and aiohttp's first-use state are process-wide, made once."""
    app = await start_server(full_settings(pki, tmp_path / "warm-up"), library)
    await app.stop(grace_s=0)
    with port_in_use() as port, pytest.raises(OSError):
        await start_server(full_settings(pki, tmp_path / "warm-up", bind=f"127.0.0.1:{port}"), library)


@pytest.mark.usefixtures("warmed_up")
@pytest.mark.parametrize("taken", LISTENERS)
async def test_a_port_in_use_fails_the_start_and_leaves_nothing_open(
    pki: EphemeralPki, library: AudioLibrary, tmp_path: Path, taken: str
) -> None:
    before = await settle_and_snapshot()
    with port_in_use() as port:
        settings = full_settings(pki, tmp_path, **{taken: f"127.0.0.1:{port}"})
        with pytest.raises(OSError, match="address already in use"):
            await start_server(settings, library)
    await assert_back_to(before)
    app = await start_server(settings, library)  # the same ports again: every one was let go
    try:
        assert app.readiness.started
    finally:
        await app.stop(grace_s=0)


@pytest.mark.usefixtures("warmed_up")
async def test_an_unexpected_error_half_way_unwinds_what_had_started(
    pki: EphemeralPki, library: AudioLibrary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not an OSError (a bug, a TLS file gone bad): the store, clock, watchdog, watchers, loops and
    the listeners started before it are closed all the same."""
    reached = asyncio.Event()

    async def broken_start(self: Console, *args: object, **kwargs: object) -> int:
        reached.set()
        raise RuntimeError("console could not start")

    monkeypatch.setattr(Console, "start", broken_start)
    before = await settle_and_snapshot()
    settings = full_settings(pki, tmp_path)
    with pytest.raises(RuntimeError, match="console could not start"):
        await start_server(settings, library)
    assert reached.is_set()  # it failed where we meant it to, after the store, loops and the admin port
    await assert_back_to(before)


def test_tasks_are_created_only_by_their_owners() -> None:
    """Every long-lived task belongs to a ``TaskOwner`` (supervision.py). Beside it, only helpers
    that await what they start within the same call may make a task."""
    scoped = {  # module: functions that start and end their tasks within one call
        "server/supervision.py": {"supervise", "spawn"},
        "server/devices/streams.py": {"write_whole"},  # a write a cancellation must not cut
        "server/devices/live_session.py": {"run_until_first", "guard"},  # a stream's own work
        "server/audio/tenant_sounds.py": {"_clip"},  # one load shared by its concurrent waiters
    }
    found: dict[str, set[str]] = {}
    for path in sorted((SRC / "server").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in {"create_task", "ensure_future"}
                ):
                    found.setdefault(str(path.relative_to(SRC)), set()).add(function.name)
    unowned = {m: f - scoped.get(m, set()) for m, f in found.items() if f - scoped.get(m, set())}
    assert not unowned, f"tasks made outside a TaskOwner (use one): {unowned}"
    assert found.get("server/supervision.py"), "the owner itself makes tasks: the scan must see it"
