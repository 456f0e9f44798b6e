"""The server under benchmark, in its own process so its CPU is measured apart from the load.

Prints ``PORT <n>`` when listening; logs JSON lines (WARNING and up) on stderr. ``sample`` on
stdin prints one ``STATS {json}`` line with its CPU time and the audio counters; SIGTERM or
stdin closing stops it.
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import sys
from pathlib import Path

from comms.logfmt import configure_logging
from server import metrics
from server.__main__ import settle_heap
from server.app import start_server
from server.runtime.settings import ServerSettings


def counters() -> dict[str, float]:
    return {
        "cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),
        "packets_sent": metrics.AUDIO_PACKETS_SENT._value.get(),
        "late_packets": metrics.AUDIO_LATE_PACKETS._value.get(),
        "dropped_packets": metrics.AUDIO_PACKETS_DROPPED._value.get(),
    }


async def main(pki_dir: Path, cache_dir: Path) -> None:
    settings = ServerSettings(
        bind="127.0.0.1:0",
        pki_dir=pki_dir,
        state_backend="memory",
        cache_dir=cache_dir,
        log_level="WARNING",
        log_format="json",
        health_bind="",
        metrics_bind="",
        admin_bind="",
        max_concurrent_streams=8,
    )
    configure_logging(settings.log_level, settings.log_format)  # JSON lines on stderr (a log file)
    app = await start_server(settings)
    settle_heap(settings.gc_young_threshold)  # as the deployed server does
    print(f"PORT {app.port}", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    async def sample_on_request() -> None:
        # "sample\n" on stdin -> one STATS line; EOF -> stop.
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                stop.set()
                return
            print("STATS " + json.dumps(counters()), flush=True)

    sampler = asyncio.create_task(sample_on_request())
    await stop.wait()
    sampler.cancel()
    await app.stop(grace_s=2.0)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))
