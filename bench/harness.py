"""Start the benchmark server process, sample its counters, connect many load devices."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from auth.tls import TlsMaterial
from bench.cores import pin_process
from bench.figures import percentile
from bench.loadclient import LoadDevice

ROOT = Path(__file__).resolve().parent.parent
CONNECT_BATCH = 50


class ServerProcess:
    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process, self.port = process, port

    def sample(self) -> dict[str, float]:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write("sample\n")
        self.process.stdin.flush()
        while True:
            line = self.process.stdout.readline()
            if line.startswith("STATS "):
                return dict(json.loads(line[6:]))
            if not line:
                raise RuntimeError("server process died")


@contextmanager
def server_process(
    pki_dir: Path, cache_dir: Path, cores: frozenset[int], log_path: Path
) -> Iterator[ServerProcess]:
    """The in-process server of bench.server_proc, pinned to ``cores`` (the server's half), its
    log in ``log_path`` (JSON lines; not the benchmark's output)."""
    with log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.server_proc", str(pki_dir), str(cache_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=ROOT,
        )
    pin_process(process.pid, cores)
    try:
        assert process.stdout
        line = process.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"server did not start: {line!r}")
        yield ServerProcess(process, int(line.split()[1]))
    finally:
        assert process.stdin
        process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


async def connect_all(port: int, creds: Sequence[TlsMaterial]) -> list[LoadDevice]:
    devices = [LoadDevice(f"127.0.0.1:{port}", tls) for tls in creds]
    for i in range(0, len(devices), CONNECT_BATCH):
        await asyncio.gather(*(d.start() for d in devices[i : i + CONNECT_BATCH]))
    return devices


def percentiles(values: list[float]) -> tuple[float, float]:
    """(median, p99) in milliseconds, of values in seconds."""
    return statistics.median(values) * 1000, percentile(values, 0.99) * 1000


def now() -> float:
    return time.perf_counter()
