"""A reconnect storm right after a Redis outage, with a backlog of writes waiting in the server.

One server process (Redis backend, pinned to the server's cores) holds ``DEVICES`` lean devices
(load-generator processes on the other cores). Redis stops (saving its data, like a failover
that keeps it); every device drops its connection at once, so the server queues each one's last
state (the backlog) and refuses their reconnects (``UNAVAILABLE``); after ``OUTAGE_S`` Redis is
back on the same port and the devices, reconnecting with the device client's backoff, claim
sessions, press Play and wait for the first packet while the server lands the backlog. Printed,
never asserted: time from Redis back until every device plays again, how long a successful
reconnect took, and the attempts that failed (during the outage, after it, and why).

Whatever fails is one line: a generator that could not set up, a Redis that did not come back,
a server that did not exit within a minute of SIGTERM (killed, and said so).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.bench_scale import not_measured, write_pki
from bench.cores import CoreSplit, split_cores
from bench.figures import generator_bound, percentile
from bench.generators import Generators, merge
from bench.procs import ROOT, BenchError, Service, free_port, start_redis, stop_process

DEVICES = 1000
OUTAGE_S = 5.0
WINDOW_S = 120.0


def storm_after_outage(
    binary: str, tmp: Path, pki_dir: Path, devices: int, cores: CoreSplit
) -> dict[str, Any]:
    redis_port = free_port()
    redis: list[subprocess.Popen[bytes]] = [start_redis(binary, redis_port, tmp, save=True)]
    service = Service(
        ["--pki-dir", str(pki_dir), "--state-backend", "redis", "--redis-url", f"redis://127.0.0.1:{redis_port}/0",
         "--log-level", "WARNING", "--shutdown-grace-s", "1", "--cache-dir", str(tmp / "cache")],
        cores.server, tmp / "outage-server.log",
    )  # fmt: skip
    back: dict[str, float] = {}
    problems: list[str] = []
    timers: list[threading.Timer] = []

    def come_back() -> None:
        try:
            redis.append(start_redis(binary, redis_port, tmp, save=True))
            back["redis"] = time.time()
        except Exception as exc:
            problems.append(f"Redis did not come back: {exc}")

    try:
        service.wait_ready()
        with Generators("drop", pki_dir, service.target, devices, WINDOW_S, cores=cores.generators) as gens:
            gens.ready()
            stop_process(redis[0])  # SIGTERM: Redis saves its data and stops
            timers.append(threading.Timer(OUTAGE_S, come_back))
            timers[0].start()
            gens.go()  # every device drops its connection now, and comes back with its backoff
            results = gens.results(timeout_s=WINDOW_S + 60, quit=False)
            connected, processes = gens.connected, gens.processes
    finally:
        for timer in timers:
            timer.join()
        stopped = service.stop()
        for process in redis:
            stop_process(process)
    if problems:
        raise BenchError("; ".join(problems))
    returned = back["redis"]
    back_wall = sorted(t for r in results for t in r["back_wall"])
    connect = sorted(s for r in results for s in r["connect_s"])
    cpu_pct = sum(100 * r["cpu_s"] / max(r["elapsed"], 1e-9) for r in results)
    return {
        "devices": connected,
        "back": len(back_wall),
        "all_s": back_wall[-1] - returned if back_wall and len(back_wall) == connected else float("inf"),
        "median_s": percentile(back_wall, 0.5) - returned if back_wall else float("nan"),
        "failed_after": sum(1 for r in results for t in r["failed_wall"] if t > returned),
        "failed_during": sum(1 for r in results for t in r["failed_wall"] if t <= returned),
        "reasons": merge(r.get("reasons") for r in results),
        "connect_ms": [1000 * percentile(connect, q) for q in (0.5, 0.99, 1.0)],
        "generators_pct": cpu_pct,
        "generator_bound": generator_bound(cpu_pct, len(cores.generators), processes),
        "note": stopped.note(),
    }


def run(devices: int = DEVICES, pki_dir: Path | None = None) -> None:
    cores = split_cores()
    print(
        f"\nReconnect storm right after a Redis outage ({OUTAGE_S:.0f} s, 1 server, writes queued; "
        f"{cores.describe()}):"
    )
    binary = shutil.which("redis-server")
    if binary is None:
        print("  skipped: redis-server is not installed")
        return
    with tempfile.TemporaryDirectory() as tmp_text:
        tmp = Path(tmp_text)
        pki = pki_dir or write_pki(tmp / "pki", devices)
        try:
            r = storm_after_outage(binary, tmp, pki, devices, cores)
        except Exception as exc:
            print(not_measured(f"{devices} devices after a Redis outage", exc))
            return
    median, p99, worst = r["connect_ms"]
    bound = "; generator-bound" if r["generator_bound"] else ""
    print(
        f"  {r['devices']} devices dropped during the outage: {r['back']} playing again; "
        f"from Redis back until each played again: median {r['median_s']:.1f} s, all {r['all_s']:.1f} s"
    )
    print(
        f"      a successful reconnect (CreateSession, streams, Play -> first packet) took median "
        f"{median:.0f} / p99 {p99:.0f} / max {worst:.0f} ms; failed attempts: {r['failed_during']} begun "
        f"during the outage, {r['failed_after']} after Redis was back {r['reasons'] or ''}; "
        f"generators {r['generators_pct']:.0f} % CPU{bound}"
    )
    if r["note"]:
        print(f"      note: {r['note']}")


if __name__ == "__main__":
    sys.path[:0] = [str(ROOT), str(ROOT / "src")]
    run(int(sys.argv[1]) if len(sys.argv) > 1 else DEVICES)
