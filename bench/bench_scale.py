"""Scale-out figures: the raw grpc.aio baseline, 1 vs 2 workers, 20 ms vs 60 ms packets.

Everything shares this 2-core machine: the server's CPU is read from /proc for its own
processes (the supervisor's workers), apart from the load generators, which run as two
processes of lean devices. Printed, never asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auth import pki
from auth.identity import Identity
from auth.keys import create_signing_key

ROOT = Path(__file__).resolve().parent.parent
GENERATORS = 2
STORM_DEVICES = 1000
CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 60.0


def write_pki(root: Path, devices: int) -> Path:
    ca = pki.create_ca("Scale CA")
    server = pki.issue_server_cert(ca, ["localhost"], ["127.0.0.1"])
    pki.write_certified_key(ca, root / pki.CA_CERT, root / pki.CA_KEY, force=True)
    pki.write_certified_key(server, root / pki.SERVER_CERT, root / pki.SERVER_KEY, force=True)
    create_signing_key(root / "signing")
    for i in range(devices):
        identity = Identity("bench", f"d{i:04d}")
        pki.write_certified_key(
            pki.issue_device_cert(ca, identity), *pki.device_paths(root, identity), force=True
        )
    return root


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("the server under test did not start")


Samples = dict[int, float]


def run_generators(
    kind: str, pki_dir: Path, target: str, devices: int, seconds: float, *extra: str, on_go: object = None
) -> tuple[list[dict[str, Any]], Samples, Samples]:
    """Start the generators, wait until all are ready, then run the window together."""
    share = -(-devices // GENERATORS)
    procs = []
    for g in range(GENERATORS):
        args = [
            kind,
            str(pki_dir),
            target,
            str(g * share),
            str(min(share, devices - g * share)),
            str(seconds),
        ]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "bench.loadgen_proc", *args, *extra],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
        )
    for proc in procs:
        assert proc.stdout is not None
        while (line := proc.stdout.readline()) and not line.startswith("READY"):
            pass
    before: Samples = on_go() if callable(on_go) else {}
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    after: Samples = {}
    for proc in procs:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("RESULT "):
                results.append(json.loads(line[7:]))
                if not after and callable(on_go):
                    after = on_go()
        proc.wait(timeout=60)
    return results, before, after


@dataclass
class Scenario:
    label: str
    workers: int
    devices: int
    frame_ms: int
    probes: int = 0  # devices per generator that measure Stop -> is_end and Play -> first packet


def baseline_us_per_packet(pki_dir: Path, streams: int = 40, seconds: float = 5.0) -> float:
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.baseline_server", str(pki_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[1])
        sample = lambda: {server.pid: cpu_seconds(server.pid)}  # noqa: E731
        results, before, after = run_generators(
            "baseline", pki_dir, f"127.0.0.1:{port}", streams, seconds, on_go=sample
        )
        packets = sum(r["packets"] for r in results)
        return (after[server.pid] - before[server.pid]) * 1e6 / max(packets, 1)
    finally:
        server.kill()
        server.wait()


def run_service(pki_dir: Path, redis_url: str, scenario: Scenario, seconds: float) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [sys.executable, "-m", "server", "--pki-dir", str(pki_dir), "--bind", f"127.0.0.1:{port}",
             "--health-bind", "", "--metrics-bind", "", "--admin-bind", "",
             "--state-backend", "redis", "--redis-url", redis_url, "--workers", str(scenario.workers),
             "--log-level", "ERROR", "--cache-dir", f"{tmp}/cache",
             "--max-concurrent-streams", "8"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
        )  # fmt: skip
        try:
            wait_listening(port, server)
            time.sleep(1.0 * scenario.workers)  # every worker listening
            pids = children(server.pid) if scenario.workers > 1 else [server.pid]

            def sample() -> dict[int, float]:
                return {pid: cpu_seconds(pid) for pid in pids}

            results, before, after = run_generators(
                "realtime", pki_dir, f"127.0.0.1:{port}", scenario.devices, seconds, str(scenario.frame_ms),
                str(scenario.probes), on_go=sample,
            )  # fmt: skip
        finally:
            server.terminate()
            server.wait(timeout=60)
    elapsed = max(r["elapsed"] for r in results)
    packets = sum(r["packets"] for r in results)
    per_worker = [100 * (after[p] - before[p]) / elapsed for p in pids]
    return {
        "devices": sum(r["devices"] for r in results),
        "failed": sum(r["failed"] for r in results),
        "rate": packets / elapsed,
        "due": sum(r["devices"] for r in results) * 1000 / scenario.frame_ms,
        "late_pct": 100 * sum(r["late"] for r in results) / max(packets, 1),
        "cpu_pct": sum(per_worker),
        "per_worker": per_worker,
        "us_per_packet": sum(after[p] - before[p] for p in pids) * 1e6 / max(packets, 1),
        "generators_cpu_pct": sum(r.get("cpu_pct", 0.0) for r in results),
        "stop_ms": sorted(ms for r in results for ms in r.get("stop_ms", [])),
        "play_ms": sorted(ms for r in results for ms in r.get("play_ms", [])),
    }


def reconnect_storm(pki_dir: Path, redis_url: str, devices: int, timeout_s: float = 90.0) -> dict[str, Any]:
    """Every device dropped at once by a server restart; the time until all stream again."""
    port = free_port()

    def start_server() -> subprocess.Popen[bytes]:
        server = subprocess.Popen(
            [sys.executable, "-m", "server", "--pki-dir", str(pki_dir), "--bind", f"127.0.0.1:{port}",
             "--health-bind", "", "--metrics-bind", "", "--admin-bind", "",
             "--state-backend", "redis", "--redis-url", redis_url, "--workers", "2",
             "--log-level", "ERROR", "--shutdown-grace-s", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
        )  # fmt: skip
        wait_listening(port, server)
        return server

    servers = [start_server()]
    time.sleep(2.0)

    def restart() -> Samples:
        servers[0].terminate()  # drains: every device's streams end (UNAVAILABLE)
        servers[0].wait(timeout=60)
        servers.append(start_server())
        return {}

    try:
        results, _, _ = run_generators(
            "storm", pki_dir, f"127.0.0.1:{port}", devices, timeout_s, on_go=restart
        )
    finally:
        for server in servers:
            if server.poll() is None:
                server.terminate()
                server.wait(timeout=60)
    delays = sorted(d for r in results for d in r["delays"])
    back = sum(r["back"] for r in results)
    return {
        "devices": devices,
        "back": back,
        "failures": sum(r["failures"] for r in results),
        "median_s": delays[len(delays) // 2] if delays else float("nan"),
        "all_s": delays[-1] if back == devices else float("inf"),
        "reasons": [r.get("reasons") for r in results if r.get("reasons")],
    }


SCENARIOS = (
    Scenario("1 worker,  20 ms", 1, 400, 20),
    Scenario("2 workers, 20 ms", 2, 400, 20),
    Scenario("2 workers, 20 ms", 2, 600, 20),
    Scenario("2 workers, 60 ms", 2, 1500, 60),
)


LATENCY = (
    Scenario("1 worker,  200 devices per worker", 1, 200, 20, probes=5),
    Scenario("2 workers, 200 devices per worker", 2, 400, 20, probes=5),
)
REAL_TIME_SWEEP = {20: (200, 300, 400), 60: (600, 900, 1200)}  # devices tried with 2 workers


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def is_real_time(r: dict[str, Any]) -> bool:
    return r["late_pct"] < 0.5 and r["rate"] >= 0.99 * r["due"]


def run(seconds: float = 8.0) -> None:
    print("\nScale-out (server processes' CPU from /proc; 2 load-generator processes share the 2 cores):")
    binary = shutil.which("redis-server")
    if binary is None:
        print("  skipped: redis-server is not installed (workers share state through Redis)")
        return
    devices = max(STORM_DEVICES, *(s.devices for s in SCENARIOS))
    with tempfile.TemporaryDirectory() as tmp:
        pki_dir = write_pki(Path(tmp) / "pki", devices)
        redis_port = free_port()
        redis = subprocess.Popen(
            [binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", tmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            baseline = baseline_us_per_packet(pki_dir)
            print(
                f"  raw grpc.aio baseline (mTLS, prebuilt packets, full speed): {baseline:6.1f} us CPU/packet"
            )
            one_worker_rate = None
            for number, scenario in enumerate(SCENARIOS, start=1):  # a Redis database each: fresh devices
                r = run_service(pki_dir, f"redis://127.0.0.1:{redis_port}/{number}", scenario, seconds)
                if scenario.workers == 1:
                    one_worker_rate = r["rate"]
                scaling = (
                    f", scaling {r['rate'] / one_worker_rate:4.2f}x of 1 worker"
                    if scenario.workers > 1 and scenario.devices == 400 and one_worker_rate
                    else ""
                )
                on_time = is_real_time(r)
                workers = " + ".join(f"{c:.0f}%" for c in r["per_worker"])
                cost = r["us_per_packet"]
                print(
                    f"  {scenario.label}, {int(r['devices']):5d} devices: "
                    f"{r['rate']:7.0f} of {r['due']:6.0f} packets/s, {r['late_pct']:5.2f}% > 50 ms late -> "
                    f"{'real time' if on_time else 'NOT real time'}; "
                    f"server CPU {r['cpu_pct']:4.0f}% "
                    f"({workers}), {cost:5.1f} us/packet = {cost / baseline:4.1f}x baseline{scaling}; "
                    f"load generators {r['generators_cpu_pct']:3.0f}% CPU; {int(r['failed'])} connects failed"
                )
            database = len(SCENARIOS) + 2
            for scenario in LATENCY:
                r = run_service(pki_dir, f"redis://127.0.0.1:{redis_port}/{database}", scenario, seconds)
                database += 1
                stops, plays = r["stop_ms"], r["play_ms"]
                print(
                    f"  {scenario.label} ({int(r['devices'])} streaming): Play -> first packet "
                    f"{pct(plays, 0.5):5.1f} / {pct(plays, 0.99):5.1f} ms, Stop -> is_end "
                    f"{pct(stops, 0.5):5.1f} / {pct(stops, 0.99):5.1f} ms (median / p99, {len(plays)} probes)"
                )
            for frame_ms, counts in REAL_TIME_SWEEP.items():
                served = 0
                for count in counts:
                    r = run_service(
                        pki_dir,
                        f"redis://127.0.0.1:{redis_port}/{database}",
                        Scenario("", 2, count, frame_ms),
                        seconds,
                    )
                    database += 1
                    if is_real_time(r):
                        served = count
                print(
                    f"  devices served in real time (< 0.5 % > 50 ms late) by 2 workers at {frame_ms} ms: "
                    f"{served} of {', '.join(map(str, counts))} tried"
                )
            storm = reconnect_storm(
                pki_dir, f"redis://127.0.0.1:{redis_port}/{len(SCENARIOS) + 1}", STORM_DEVICES
            )
            print(
                f"  reconnect storm: {int(storm['devices'])} devices dropped at once by a restart "
                f"(2 workers); from the new server listening, with the client's backoff: "
                f"median {storm['median_s']:.1f} s, all {storm['all_s']:.1f} s; "
                f"{int(storm['back'])} streaming again, {int(storm['failures'])} attempts failed "
                f"{storm['reasons'] or ''}"
            )
        finally:
            redis.terminate()
            redis.wait()


if __name__ == "__main__":
    sys.path[:0] = [str(ROOT), str(ROOT / "src")]
    run()
