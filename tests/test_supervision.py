"""Background loops cannot die silently: logged with a traceback, counted, restarted, health follows."""

from __future__ import annotations

import asyncio

import pytest

from comms.tasks import cancel_and_wait
from server.app import AudioServer
from server.supervision import FAILING_AFTER, TaskOwner, supervise
from tests.conftest import Connect
from tests.helpers import MODE, PLAY, sample, wait_for
from tests.test_ops import NOT_SERVING, health_status


async def test_a_crashing_body_is_logged_counted_restarted_and_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0
    healthy_now = asyncio.Event()
    reports: list[tuple[str, bool]] = []

    async def body() -> None:
        nonlocal runs
        runs += 1
        if runs <= FAILING_AFTER:
            raise RuntimeError(f"boom {runs}")
        healthy_now.set()
        await asyncio.Event().wait()  # then runs for good

    before = sample("audio_background_restarts_total", task="test-loop")
    task = asyncio.create_task(
        supervise(
            "test-loop", body, lambda name, failing: reports.append((name, failing)), 0.01, window_s=0.2
        )
    )
    await asyncio.wait_for(healthy_now.wait(), 5)
    assert reports == [("test-loop", True)]  # kept failing: readiness hears of it
    await wait_for(lambda: reports[-1] == ("test-loop", False))  # a clean window: well again
    await cancel_and_wait(task)
    assert task.cancelled()
    assert sample("audio_background_restarts_total", task="test-loop") == before + FAILING_AFTER
    crashes = [r for r in caplog.records if r.getMessage() == "task.crashed"]
    assert len(crashes) == FAILING_AFTER and all(r.exc_info for r in crashes)


async def test_a_body_that_returns_is_not_restarted() -> None:
    runs = 0

    async def body() -> None:
        nonlocal runs
        runs += 1

    await asyncio.wait_for(supervise("once", body), 5)
    assert runs == 1


class Poison:
    """A sound whose advance raises: stands for any bug inside the clock's tick."""

    end_sent = False
    ends_at = float("inf")

    def advance(self, now: float, lead_s: float) -> tuple[int, int]:
        raise RuntimeError("a bug in the tick")


async def test_the_frame_clock_restarts_and_health_follows(server: AudioServer, connect: Connect) -> None:
    assert server.health is not None
    poison = Poison()
    before = sample("audio_background_restarts_total", task="frame-clock")
    server.clock.add(poison)  # type: ignore[arg-type]
    await wait_for(lambda: not server.readiness.serving)
    assert await health_status(server.health.port) == NOT_SERVING
    assert sample("audio_background_restarts_total", task="frame-clock") >= before + FAILING_AFTER
    server.clock.discard(poison)  # type: ignore[arg-type]
    async with connect(server, "acme", "after-crash") as client:  # the clock runs again: audio flows
        await client.press(MODE)
        await client.press(PLAY)
        await wait_for(lambda: client.packets_received > 10)
    assert not server.readiness.serving  # until a whole clean window has passed


async def test_a_task_owner_cancels_and_awaits_every_task_on_close() -> None:
    owner = TaskOwner("test-owner")
    started = asyncio.Event()
    cancelled: list[str] = []

    async def forever(name: str) -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(name)
            if name == "loop":  # a task that starts another while being cancelled
                owner.spawn(forever("late"), "late")
            raise

    owner.supervise("loop", lambda: forever("loop"))
    owner.spawn(forever("job"), "job")
    await started.wait()
    assert len(owner) == 2
    await owner.close()
    assert sorted(cancelled) == ["job", "loop"]  # the late one was refused: the owner is closing
    assert len(owner) == 0
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("test-owner")]


async def test_a_job_that_raises_is_logged_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise ValueError("job went wrong")

    async with TaskOwner("test-owner") as owner:
        owner.spawn(broken(), "broken")
        await owner.join()
    failed = [r for r in caplog.records if r.getMessage() == "task.failed"]
    assert len(failed) == 1
    assert failed[0].exc_info is not None and "job went wrong" in str(failed[0].exc_info[1])
    assert failed[0].__dict__["task"] == "test-owner:broken"


async def test_join_waits_for_jobs_without_cancelling_them() -> None:
    done: list[int] = []

    async def job(n: int) -> None:
        await asyncio.sleep(0.01 * n)
        done.append(n)

    async with TaskOwner("test-owner") as owner:
        for n in (3, 1, 2):
            owner.spawn(job(n))
        await owner.join()
        assert done == [1, 2, 3]


async def test_close_cancels_again_a_task_that_swallowed_its_cancel() -> None:
    """Python 3.11's ``asyncio.wait_for`` (inside redis-py's writes) can lose a cancel that lands
    as the awaited call completes (gh-86296): the task goes on. One cancel then hung the server's
    shutdown on SIGTERM (seen in make bench's outage run); close must cancel again."""
    owner = TaskOwner("test-owner")
    swallowed = asyncio.Event()

    async def loses_one_cancel() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.set()  # as wait_for does when the inner call finished at the same moment
        await asyncio.Event().wait()  # back to waiting for work, like the fleet's outbox loop

    owner.spawn(loses_one_cancel(), "loop")
    await asyncio.sleep(0)
    await asyncio.wait_for(owner.close(), timeout=5)
    assert swallowed.is_set()
    assert len(owner) == 0
