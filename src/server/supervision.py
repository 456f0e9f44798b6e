"""Background loops that cannot die silently.

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
from collections.abc import Awaitable, Callable

from server import metrics

log = logging.getLogger(__name__)

RESTART_DELAY_S = 0.5
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
