"""audio-server: the streaming audio service for the device fleet (gRPC over mTLS).

Runs until SIGTERM/SIGINT, then drains: devices are told to reconnect elsewhere.
"""

from __future__ import annotations

import os

# gRPC's C-core logs refused handshakes and more at INFO on stderr, outside our JSON log;
# keep it to errors unless the operator asks (read when grpc is first imported, below).
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from auth.errors import AuthError
from comms.cli import parse_settings
from comms.logfmt import configure_logging
from server.app import start_server
from server.runtime.settings import ServerSettings
from server.runtime.workers import HEALTH_LINE, Supervisor
from server.state.store import StateFileError
from server.supervision import TaskOwner

log = logging.getLogger("server")


async def serve(settings: ServerSettings) -> None:
    app = await start_server(settings)
    settle_heap(settings.gc_young_threshold)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"audio-server listening on {settings.bind} (port {app.port}, mTLS)",
        file=sys.stderr,
        flush=True,
    )
    if settings.worker_index >= 0 and app.health is not None:  # tell the supervisor where to ask
        print(f"{HEALTH_LINE}{app.health.port}", flush=True)
    gave_up = app.store_probe.gave_up if app.store_probe is not None else asyncio.Event()
    await first_of(stop.wait(), gave_up.wait())
    if gave_up.is_set() and app.store_probe is not None:  # started without its store, waited long enough
        await app.stop(grace_s=0)
        raise StateFileError(app.store_probe.reason)
    log.info("server.draining", extra={"grace_s": settings.shutdown_grace_s})
    await app.stop()


YOUNG_PER_OLDER = 50  # young collections per collection of the middle generation (Python: 10)


def settle_heap(young_threshold: int) -> None:
    """What start-up made (the sound library, its packets, every module) lives as long as the
    process: move it out of the collector's sight. A full collection then scans only what serving
    allocates: about 15 ms less per full collection, a pause that every stream would otherwise
    share (Stop -> is_end's p99). Only in the server process: tests start many servers in one.

    Then collect less often. Every write in flight holds a few coroutines and futures; with
    Python's default thresholds (700, 10) a collection runs every few milliseconds under load,
    catches thousands of them alive and ages them into the oldest generation, and that makes a
    full collection (50-70 ms with 200 streaming devices) several times a minute. At 5000 and 50
    most of them are gone by refcount before a collection sees them: measured with 200 devices,
    one full collection in a run instead of 13, and a tenth of the time in the collector."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(young_threshold, YOUNG_PER_OLDER, gc.get_threshold()[2])
    log.info(
        "server.heap_settled",
        extra={"frozen_objects": gc.get_freeze_count(), "gc_thresholds": list(gc.get_threshold())},
    )


async def first_of(*waits: Coroutine[Any, Any, object]) -> None:
    """Until the first of ``waits`` is done; the others are cancelled."""
    first = asyncio.Event()

    async def until(wait: Coroutine[Any, Any, object]) -> None:
        try:
            await wait
        finally:
            first.set()

    async with TaskOwner("first-of") as waiting:
        for wait in waits:
            waiting.spawn(until(wait))
        await first.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parsed = parse_settings(ServerSettings, "audio-server", argv, description=__doc__ or "")
    if parsed is None:
        return 1
    settings, _ = parsed
    worker = {"worker": settings.worker_index} if settings.worker_index >= 0 else {}
    configure_logging(settings.log_level, settings.log_format, {"node": settings.node_id, **worker})
    supervising = settings.worker_index < 0 and settings.worker_count > 1
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        asyncio.run(Supervisor(settings, args).run() if supervising else serve(settings))
    except (AuthError, OSError) as exc:
        print(f"audio-server: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
