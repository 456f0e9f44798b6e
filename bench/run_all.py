"""``make bench``: every benchmark of the service, figures printed (no assertions).

Runs the server in its own process (its CPU is measured apart from the load
generator, which shares this 2-core machine) with a fresh ephemeral PKI.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from auth.tls import TlsMaterial  # noqa: E402
from bench import (  # noqa: E402
    bench_device,
    bench_latency,
    bench_outage,
    bench_scale,
    bench_sessions,
    bench_streams,
)
from bench.harness import ServerProcess, percentiles, server_process  # noqa: E402
from bench.loadclient import make_pki  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, nargs="*", default=[200, 500])
    parser.add_argument("--latency-background", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--no-scale", action="store_true", help="skip the workers/Redis scale-out figures")
    args = parser.parse_args()
    # Device state persists per identity, so every scenario gets identities of its own.
    needed = 1 + args.latency_background + 1 + sum(args.streams) + args.sessions + 1
    with tempfile.TemporaryDirectory() as tmp:
        pki_dir, creds = make_pki(Path(tmp), needed)
        print(f"benchmark PKI: {len(creds)} device certificates (EC P-256), server in its own process")
        with server_process(pki_dir, Path(tmp) / "cache") as server:
            asyncio.run(run(server, creds, args.streams, args.latency_background, args.sessions))
    own_processes = (
        "bench_admin",
        "bench_announce",
        "bench_bus",
        "bench_console",
        "bench_enrol",
    )  # grpc.aio: one loop each
    for own_process in own_processes:
        subprocess.run(
            [sys.executable, "-m", f"bench.{own_process}"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"},
            check=False,
        )
    if not args.no_scale:
        bench_scale.run()
        bench_outage.run()
    return 0


async def run(
    server: ServerProcess, creds: list[TlsMaterial], streams: list[int], background_count: int, sessions: int
) -> None:
    """One event loop for the whole run: grpc.aio channels are bound to the loop that made them."""
    pool = iter(creds)

    def take(count: int) -> list[TlsMaterial]:
        return [next(pool) for _ in range(count)]

    print("\nSessions and tokens:")
    rate, count = await bench_sessions.sessions_per_second(server.port, take(sessions))
    print(
        f"  CreateSession with a full mTLS handshake each: {rate:6.0f} sessions/s "
        f"({count} sessions, {bench_sessions.CONCURRENCY} concurrent clients)"
    )
    print(
        f"  token verification per call (EdDSA signature, claims, certificate binding): "
        f"{bench_sessions.verification_cost_us():6.1f} us"
    )

    print("\nDevice client (DeviceApp with mock pins, 60 ms jitter buffer, recording sink):")
    latencies, cpu_pct = await bench_device.run(server.port, take(1)[0], "d-client")
    press_median, press_p99 = percentiles(latencies)
    print(
        f"  button press -> first audible sample at the sink: median {press_median:6.1f} ms, "
        f"p99 {press_p99:6.1f} ms ({len(latencies)} presses)"
    )
    print(
        f"  client CPU while playing: {cpu_pct:5.1f}% of one core ({bench_device.CPU_WINDOW_S:.0f} s window)"
    )

    print("\nLatency over mTLS on loopback (median / p99, ms):")
    for background in (0, background_count):
        result = await bench_latency.run(server.port, take(1)[0], take(background))
        play, stop = result["play_to_first_packet"], result["stop_to_is_end"]
        print(
            f"  {background + 1:4d} device(s) streaming: Play->first packet {play[0]:6.2f} / "
            f"{play[1]:6.2f}   Stop->is_end {stop[0]:6.2f} / {stop[1]:6.2f}"
        )
    print(f"\nConcurrent real-time streams ({bench_streams.WINDOW_S:.0f} s window each):")
    for count in streams:
        r = await bench_streams.run(server, take(count))
        print(
            f"  {r.devices:4d} devices: server CPU {r.server_cpu_pct:5.1f}%  packets/s "
            f"{r.packet_rate:8.0f} of {r.expected_rate:6.0f} ({r.achieved_pct:5.1f}%)  "
            f"late (server timeline) {r.server_late}  late at client (>1 frame) {r.client_late}  "
            f"dropped {r.dropped}"
        )


if __name__ == "__main__":
    sys.exit(main())
