"""A reconnect storm right after a Redis outage, with a backlog of writes waiting in the server.

One server process (Redis backend) holds ``DEVICES`` lean devices (two load-generator
processes). Redis stops (saving its data, like a failover that keeps it); every
device drops its connection at once, so the server queues each one's last state
(the backlog) and refuses their reconnects (``UNAVAILABLE``); after ``OUTAGE_S``
Redis is back on the same port and the devices, reconnecting with the device
client's backoff, claim sessions while the server lands the backlog. Printed,
never asserted: time from Redis back until every device streams again, how long
a successful reconnect (CreateSession + streams) took, and attempts that failed
after Redis was back.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.bench_scale import ROOT, free_port, pct, run_generators, wait_listening, write_pki

DEVICES = 1000
OUTAGE_S = 5.0
WINDOW_S = 120.0


def redis_process(binary: str, port: int, directory: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "3600 1", "--appendonly", "no",
         "--dir", directory], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def wait_answering(port: int) -> float:
    deadline = time.monotonic() + 30
    while not answers(port):
        if time.monotonic() > deadline:
            raise RuntimeError("redis did not come back")
        time.sleep(0.02)
    return time.time()


def storm_after_outage(binary: str, tmp: str, pki_dir: Path, devices: int) -> dict[str, Any]:
    redis_port, port = free_port(), free_port()
    redis = [redis_process(binary, redis_port, tmp)]
    wait_answering(redis_port)
    server = subprocess.Popen(
        [sys.executable, "-m", "server", "--pki-dir", str(pki_dir), "--bind", f"127.0.0.1:{port}",
         "--health-bind", "", "--metrics-bind", "", "--admin-bind", "",
         "--state-backend", "redis", "--redis-url", f"redis://127.0.0.1:{redis_port}/0",
         "--log-level", "ERROR", "--shutdown-grace-s", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    back: dict[str, float] = {}
    restarter: list[threading.Timer] = []

    def outage() -> dict[int, float]:
        if restarter:  # called again after the first result: nothing to do
            return {}
        redis[0].terminate()  # SIGTERM: Redis saves its data and stops
        redis[0].wait(timeout=30)

        def come_back() -> None:
            redis.append(redis_process(binary, redis_port, tmp))
            back["redis"] = wait_answering(redis_port)

        restarter.append(threading.Timer(OUTAGE_S, come_back))
        restarter[0].start()
        return {}

    try:
        wait_listening(port, server)
        results, _, _ = run_generators("drop", pki_dir, f"127.0.0.1:{port}", devices, WINDOW_S, on_go=outage)
    finally:
        for timer in restarter:
            timer.join()
        server.terminate()
        server.wait(timeout=60)
        for process in redis:
            process.terminate()
            process.wait(timeout=30)
    returned = back.get("redis", float("nan"))
    back_wall = sorted(t for r in results for t in r["back_wall"])
    connect = sorted(s for r in results for s in r["connect_s"])
    return {
        "back": len(back_wall),
        "all_s": back_wall[-1] - returned if len(back_wall) == devices else float("inf"),
        "median_s": back_wall[len(back_wall) // 2] - returned if back_wall else float("nan"),
        "failed_after": sum(1 for r in results for t in r["failed_wall"] if t > returned),
        "failed_during": sum(1 for r in results for t in r["failed_wall"] if t <= returned),
        "connect_ms": [1000 * v for v in (pct(connect, 0.5), pct(connect, 0.99), max(connect, default=0))],
    }


def run(devices: int = DEVICES) -> None:
    print(f"\nReconnect storm right after a Redis outage ({OUTAGE_S:.0f} s, 1 server, writes queued):")
    binary = shutil.which("redis-server")
    if binary is None:
        print("  skipped: redis-server is not installed")
        return
    with tempfile.TemporaryDirectory() as tmp:
        pki_dir = write_pki(Path(tmp) / "pki", devices)
        r = storm_after_outage(binary, tmp, pki_dir, devices)
    median, p99, worst = r["connect_ms"]
    print(
        f"  {devices} devices dropped during the outage: {r['back']} streaming again; from Redis back: "
        f"median {r['median_s']:.1f} s, all {r['all_s']:.1f} s; a successful reconnect (CreateSession + "
        f"streams) took median {median:.0f} / p99 {p99:.0f} / max {worst:.0f} ms; failed attempts: "
        f"{r['failed_during']} during the outage, {r['failed_after']} after Redis was back"
    )


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else DEVICES)
