"""``make bench``: every benchmark of the service, figures printed (no assertions).

The cores are split in two (bench.cores): the server under test runs on one half, the load
generators on the other (this process is the generator of the first sections), so the
server's CPU per packet is measured on cores of its own. The raw grpc.aio floor is measured
first, pinned the same way, and every per-packet ratio below is to it. A figure that cannot be
measured says so in one line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from auth.tls import TlsMaterial  # noqa: E402
from bench import (  # noqa: E402
    bench_device,
    bench_idle,
    bench_latency,
    bench_outage,
    bench_scale,
    bench_sessions,
    bench_streams,
)
from bench.bench_scale import Floor, floor_for, measure_floors, not_measured, write_pki  # noqa: E402
from bench.cores import AVAILABLE, CoreSplit, pin, pin_process, split_cores  # noqa: E402
from bench.figures import overload, verdict  # noqa: E402
from bench.harness import ServerProcess, percentiles, server_process  # noqa: E402
from bench.loadclient import make_pki  # noqa: E402
from bench.procs import errors_note  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, nargs="*", default=[200, 500])
    parser.add_argument("--latency-background", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--no-scale", action="store_true", help="skip the workers/Redis scale-out figures")
    parser.add_argument(
        "--outage-devices",
        type=int,
        default=bench_outage.DEVICES,
        help="reconnect storm after a Redis outage",
    )
    parser.add_argument(
        "--idle-devices", type=int, default=bench_idle.DEVICES, help="idle devices on one server (0 skips)"
    )
    args = parser.parse_args()
    started = time.monotonic()
    cores = split_cores()
    pin(cores.generators)  # this process generates the load of the in-process sections
    print(f"benchmark machine: {len(AVAILABLE)} cores; {cores.describe()}")
    # Device state persists per identity, so every scenario gets identities of its own.
    needed = 1 + args.latency_background + 1 + sum(args.streams) + args.sessions + 1
    on_disk = max(
        bench_scale.STORM_DEVICES, args.outage_devices, args.idle_devices, *bench_scale.PACED_FLOORS.values()
    )
    with tempfile.TemporaryDirectory() as tmp_text:
        tmp = Path(tmp_text)
        disk_pki = write_pki(tmp / "disk-pki", on_disk)  # the load-generator processes read these
        floors = measure_floors(disk_pki, cores)
        pki_dir, creds = make_pki(tmp / "pki", needed)
        print(f"benchmark PKI: {len(creds)} device certificates (EC P-256), server in its own process")
        server_log = tmp / "server_proc.log"
        with server_process(pki_dir, tmp / "cache", cores.server, server_log) as server:
            asyncio.run(run(server, creds, args, floor_for(floors, 20), cores))
        if note := errors_note(server_log):
            print(f"  ({note})")
        for own_process in OWN_PROCESSES:
            run_own_process(own_process)
        if not args.no_scale:
            bench_scale.run(floors=floors, pki_dir=disk_pki)
            if args.outage_devices:
                bench_outage.run(args.outage_devices, pki_dir=disk_pki)
        if args.idle_devices:
            bench_idle.run(args.idle_devices, pki_dir=disk_pki)
    print(f"\n(make bench took {(time.monotonic() - started) / 60:.1f} min)")
    return 0


OWN_PROCESSES = (
    "bench_admin",
    "bench_announce",
    "bench_bus",
    "bench_console",
    "bench_enrol",
    "bench_talk",
)  # grpc.aio: a loop each


def run_own_process(module: str) -> None:
    """A benchmark with its server and clients in one process of its own, on every core."""
    process = subprocess.Popen(
        [sys.executable, "-m", f"bench.{module}"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"},
    )
    pin_process(process.pid, AVAILABLE)
    process.wait()


async def run(
    server: ServerProcess,
    creds: list[TlsMaterial],
    args: argparse.Namespace,
    floor: Floor | None,
    cores: CoreSplit,
) -> None:
    """One event loop for the whole run: grpc.aio channels are bound to the loop that made them."""
    pool = iter(creds)

    def take(count: int) -> list[TlsMaterial]:
        return [next(pool) for _ in range(count)]

    print("\nSessions and tokens:")
    try:
        rate, count = await bench_sessions.sessions_per_second(server.port, take(args.sessions))
        print(
            f"  CreateSession with a full mTLS handshake each: {rate:6.0f} sessions/s "
            f"({count} sessions, {bench_sessions.CONCURRENCY} concurrent clients)"
        )
        print(
            f"  token verification per call (EdDSA signature, claims, certificate binding): "
            f"{bench_sessions.verification_cost_us():6.1f} us"
        )
    except Exception as exc:
        print(not_measured("sessions", exc))

    print("\nDevice client (DeviceApp with mock pins, 60 ms jitter buffer, recording sink):")
    try:
        latencies, cpu_pct = await bench_device.run(server.port, take(1)[0], "d-client")
        press_median, press_p99 = percentiles(latencies)
        print(
            f"  button press -> first audible sample at the sink: median {press_median:6.1f} ms, "
            f"p99 {press_p99:6.1f} ms ({len(latencies)} presses)"
        )
        print(
            f"  client CPU while playing: {cpu_pct:5.1f}% of one core "
            f"({bench_device.CPU_WINDOW_S:.0f} s window)"
        )
    except Exception as exc:
        print(not_measured("the device client", exc))

    print("\nLatency over mTLS on loopback (median / p99, ms):")
    for background in (0, args.latency_background):
        try:
            result = await bench_latency.run(server.port, take(1)[0], take(background))
        except Exception as exc:
            print(not_measured(f"{background + 1} device(s) streaming", exc))
            continue
        play, stop = result["play_to_first_packet"], result["stop_to_is_end"]
        print(
            f"  {background + 1:4d} device(s) streaming: Play->first packet {play[0]:6.2f} / "
            f"{play[1]:6.2f}   Stop->is_end {stop[0]:6.2f} / {stop[1]:6.2f}"
        )
    print(
        f"\nConcurrent real-time streams, one server process, the load generator in this one "
        f"({bench_streams.WINDOW_S:.0f} s windows):"
    )
    for count in args.streams:
        try:
            r = await bench_streams.run(server, take(count), len(cores.generators))
        except Exception as exc:
            print(not_measured(f"{count} devices", exc))
            continue
        against = (
            f" = {r.us.median / floor.us.median:.2f}x the floor ({floor.show()}, this run)" if floor else ""
        )
        state = verdict(r.packet_rate, r.expected_rate, r.client_late_pct, r.generator_bound)
        print(f"  {r.devices:4d} devices: {r.us.show(1, ' us')}/packet{against} -> {state}")
        print(
            f"      {overload(r.expected_rate, r.packet_rate, 0)}; server CPU {r.server_cpu_pct:.0f} %, "
            f"generator (this process) {r.generator_cpu_pct:.0f} %; "
            f"late (server timeline) {r.total('server_late')}, late at client (>1 frame) "
            f"{r.total('client_late')}, dropped {r.total('dropped')}"
        )


if __name__ == "__main__":
    sys.exit(main())
