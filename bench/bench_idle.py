"""Many idle devices on one replica: each with its session and three streams open, no audio.

What a connected but silent fleet costs one server process: resident memory in total and per
device (against the same server with no device), and CPU while nothing plays (status polls,
keepalive pings, presence leases). The server (Redis backend when redis-server is installed,
else memory) is pinned to the server's cores; the devices come from several load-generator
processes on the other cores, since one process per few thousand connections keeps each
one's event loop and file descriptors in bounds. The open-file limit is raised towards what
10,000 connections need (inherited by the server and the generators). Printed, never asserted.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from bench.bench_scale import not_measured, write_pki
from bench.cores import CoreSplit, split_cores
from bench.figures import generator_bound, processes
from bench.generators import Generators, measure, merge
from bench.procs import ROOT, Service, raise_fd_limit, redis_server

DEVICES = 10_000
PER_GENERATOR = 2_500
SETTLE_S = 3.0
EMPTY_WINDOW_S = 5.0
IDLE_WINDOW_S = 10.0
READY_TIMEOUT_S = 900.0
SPARE_FDS = 1_000
MB = 1024 * 1024
TARGET_BYTES = 2 * 1024 * MB


def measure_idle(
    pki_dir: Path, tmp: Path, devices: int, cores: CoreSplit, redis_port: int | None
) -> list[str]:
    backend = (
        ["--state-backend", "redis", "--redis-url", f"redis://127.0.0.1:{redis_port}/0"]
        if redis_port is not None
        else ["--state-backend", "memory"]
    )
    backend_name = "Redis" if redis_port is not None else "memory"
    service = Service(
        ["--pki-dir", str(pki_dir), *backend, "--log-level", "WARNING", "--cache-dir", str(tmp / "cache")],
        cores.server, tmp / "idle-server.log",
    )  # fmt: skip
    try:
        service.wait_ready()
        time.sleep(SETTLE_S)
        empty_rss = service.rss()
        before = service.cpu()
        time.sleep(EMPTY_WINDOW_S)
        empty_pct = 100 * sum(service.cpu()[p] - before[p] for p in before) / EMPTY_WINDOW_S
        generator_count = -(-devices // PER_GENERATOR)
        before = service.cpu()
        with Generators(
            "idle", pki_dir, service.target, devices, 0, cores=cores.generators, processes=generator_count
        ) as gens:
            ready = gens.ready(timeout_s=READY_TIMEOUT_S)
            connect_s = max(float(r.get("connect_s", 0.0)) for r in ready)
            connect_cpu = sum(service.cpu()[p] - before[p] for p in before)
            time.sleep(SETTLE_S)
            (window,) = measure(gens, service.cpu, 1, IDLE_WINDOW_S)
            rss = service.rss()
            results = gens.results()
            connected, failed, reasons = gens.connected, gens.failed, gens.reasons()
    finally:
        stopped = service.stop()
    lost = merge(r.get("lost_reasons") for r in results)
    per_device = (rss - empty_rss) / max(connected, 1)
    verdict = "within" if rss < TARGET_BYTES else "OVER"
    saturated = generator_bound(window.generator_cpu_pct, len(cores.generators), gens.processes)
    bound = ", generator-bound" if saturated else ""
    why = f" {reasons}" if reasons else ""
    gone = f" {lost}" if lost else ""
    lines = [
        f"  {connected} devices connected in {connect_s:.0f} s ({failed} failed{why}; server CPU "
        f"{1000 * connect_cpu / max(connected, 1):.1f} ms per connect); server RSS "
        f"{rss / MB:,.0f} MB total ({verdict} the 2 GB = 2,048 MB target), "
        f"{per_device / 1024:.0f} KB per device (with no device: {empty_rss / MB:.0f} MB; "
        f"{backend_name} backend)",
        f"      CPU while idle: server {window.server_cpu_pct:.1f} % of one core (with no device: "
        f"{empty_pct:.1f} %), {window.status / window.seconds:,.0f} status requests/s answered; generators "
        f"{window.generator_cpu_pct:.0f} % CPU ({processes(gens.processes)}{bound}); "
        f"{window.lost} streams lost{gone}",
    ]
    if stopped.note():
        lines.append(f"      note: {stopped.note()}")
    return lines


def run(devices: int = DEVICES, pki_dir: Path | None = None) -> None:
    cores = split_cores()
    limit = raise_fd_limit(devices + SPARE_FDS)
    print(f"\nIdle devices on one server (three streams open each, no audio; {cores.describe()}):")
    if limit < devices + SPARE_FDS // 2:
        devices = max(1, limit - SPARE_FDS // 2)
        print(f"  (the open-file limit is {limit}: measuring {devices} devices)")
    with tempfile.TemporaryDirectory() as tmp_text:
        tmp = Path(tmp_text)
        pki = pki_dir or write_pki(tmp / "pki", devices)
        with redis_server(tmp) as redis_port:
            try:
                lines = measure_idle(pki, tmp, devices, cores, redis_port)
            except Exception as exc:
                lines = [not_measured(f"{devices} idle devices", exc)]
    for line in lines:
        print(line)


if __name__ == "__main__":
    sys.path[:0] = [str(ROOT), str(ROOT / "src")]
    run(int(sys.argv[1]) if len(sys.argv) > 1 else DEVICES)
