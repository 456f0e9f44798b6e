"""Background work that cannot die silently or outlive its owner.

``TaskOwner`` is the one way the server creates a task: a component owns one,
starts its loops and one-off jobs through it, and closes it when the component
closes (every task cancelled and awaited, none left behind). A one-off job that
raises is logged with its traceback instead of vanishing with the task.

``supervise`` runs a loop body; if it raises, the error is logged with its
traceback and counted, and the body is started again after a pause. A body
that keeps failing (``FAILING_AFTER`` times within ``WINDOW_S``) is reported
through ``on_failing`` so readiness can turn NOT_SERVING; the first clean
minute after that reports it well again. Cancellation (the owner's close) ends
it quietly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any

from server import metrics
from server.errors import describe

log = logging.getLogger(__name__)

RESTART_DELAY_S = 0.5
CANCEL_AGAIN_S = 0.5  # TaskOwner.close: a cancel a library swallowed is sent again after this
FAILING_AFTER = 3
WINDOW_S = 60.0

HealthCallback = Callable[[str, bool], None]  # (task name, failing)


async def supervise(
    name: str,
    body: Callable[[], Awaitable[None]],
    on_failing: HealthCallback | None = None,
    restart_delay_s: float = RESTART_DELAY_S,
    window_s: float = WINDOW_S,
) -> None:
    failures: deque[float] = deque()
    failing = False
    while True:
        run = asyncio.ensure_future(body())
        try:
            if failing:  # well again once it has run a whole window without failing
                done, _ = await asyncio.wait({run}, timeout=window_s)
                if not done:
                    failing = False
                    log.warning("task.recovered", extra={"task": name})
                    if on_failing is not None:
                        on_failing(name, False)
            await run
            return  # the body finished by itself: nothing to restart
        except asyncio.CancelledError:
            raise
        except Exception:
            now = time.monotonic()
            failures.append(now)
            while failures and now - failures[0] > window_s:
                failures.popleft()
            metrics.BACKGROUND_RESTARTS.labels(task=name).inc()
            log.exception("task.crashed", extra={"task": name, "restart_in_s": restart_delay_s})
            if not failing and len(failures) >= FAILING_AFTER:
                failing = True
                if on_failing is not None:
                    on_failing(name, True)
        finally:
            if not run.done():
                run.cancel()
                await asyncio.wait({run})  # gone before we return or restart: no stray task
        await asyncio.sleep(restart_delay_s)


class TaskOwner:
    """The tasks of one component: started here, cancelled and awaited by ``close``.

    Usable as ``async with TaskOwner(...)`` for work scoped to one call."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    def supervise(
        self, name: str, body: Callable[[], Awaitable[None]], on_failing: HealthCallback | None = None
    ) -> None:
        """A loop for the owner's lifetime, restarted when it raises (see ``supervise``)."""
        self.spawn(supervise(name, body, on_failing), name)

    def spawn(self, work: Coroutine[Any, Any, Any], name: str | None = None) -> None:
        """One job that ends by itself; the owner's close cancels it if it is still running."""
        if self._closed:  # a late job of a closing component (a session ending at shutdown)
            work.close()
            log.debug("task.refused", extra={"owner": self.name, "task": name or "job"})
            return
        task = asyncio.create_task(work, name=f"{self.name}:{name}" if name else self.name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:  # retrieved here, so asyncio never reports it at garbage collection
            log.error(
                "task.failed",
                extra={"owner": self.name, "task": task.get_name(), "error": describe(error)},
                exc_info=error,
            )

    async def join(self) -> None:
        """Until the jobs running now have ended by themselves (nothing is cancelled)."""
        while running := [task for task in self._tasks if not task.done()]:
            await asyncio.wait(running)

    async def close(self) -> None:
        """Cancel every task and wait until all are gone; later ``spawn`` calls are refused.

        A task still running ``CANCEL_AGAIN_S`` after its cancel is cancelled again: on Python 3.11
        ``asyncio.wait_for`` (redis-py wraps every socket write in it) loses a cancel that lands
        as the write completes (CPython gh-86296), and a single cancel then left the fleet's
        outbox loop running and the server deaf to SIGTERM. Also again if a task started another
        while being cancelled."""
        self._closed = True
        while running := [task for task in self._tasks if not task.done()]:
            for task in running:
                task.cancel()
            await asyncio.wait(running, timeout=CANCEL_AGAIN_S)

    async def __aenter__(self) -> TaskOwner:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()
