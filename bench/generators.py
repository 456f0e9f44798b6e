"""The load-generator processes (``bench.loadgen_proc``), pinned to the generator cores and driven
together: all ready, then measured windows (``mark`` on every generator at once, the server's and
the generators' CPU read from /proc at the same moment), then their results.

Every wait has a deadline, and a generator that fails says so in one line (``BenchError``) with
the last line it wrote to stderr (kept in a file, never mixed into the benchmark's output).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.cores import pin_process, split_cores
from bench.procs import ROOT, BenchError, cpu_seconds, last_line

READY_TIMEOUT_S = 300.0
MARK_TIMEOUT_S = 30.0
RESULT_TIMEOUT_S = 90.0
EXIT_TIMEOUT_S = 60.0

Samples = dict[int, float]


class Generators:
    """``processes`` loadgen processes sharing ``devices`` (identities 0..devices-1)."""

    def __init__(
        self,
        kind: str,
        pki_dir: Path,
        target: str,
        devices: int,
        seconds: float,
        *extra: str,
        cores: frozenset[int] | None = None,
        processes: int | None = None,
    ) -> None:
        self.cores = cores if cores is not None else split_cores().generators
        count = processes or max(1, len(self.cores))
        count = max(1, min(count, devices))
        share = -(-devices // count)
        self._dir = tempfile.TemporaryDirectory(prefix="loadgen-")
        self.procs: list[subprocess.Popen[str]] = []
        self._lines: list[queue.Queue[str | None]] = []
        self._pumps: list[threading.Thread] = []
        self.stderr: list[Path] = []
        env = {**os.environ, "GRPC_VERBOSITY": "ERROR"}
        for g in range(count):
            first, mine = g * share, min(share, devices - g * share)
            if mine <= 0:
                break
            err = Path(self._dir.name) / f"loadgen-{g}.stderr"
            with err.open("w") as sink:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "bench.loadgen_proc", kind, str(pki_dir), target, str(first),
                     str(mine), str(seconds), *extra],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=sink, text=True, cwd=ROOT, env=env,
                )  # fmt: skip
            pin_process(proc.pid, self.cores)
            lines: queue.Queue[str | None] = queue.Queue()
            pump = threading.Thread(target=_pump, args=(proc, lines), daemon=True)
            pump.start()
            self._pumps.append(pump)
            self.procs.append(proc)
            self._lines.append(lines)
            self.stderr.append(err)
        self.ready_info: list[dict[str, Any]] = []

    @property
    def processes(self) -> int:
        return len(self.procs)

    def __enter__(self) -> Generators:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _expect(self, g: int, tag: str, timeout_s: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self._lines[g].get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise BenchError(f"load generator {g} gave no {what} within {timeout_s:.0f} s") from None
            if line is None or line.startswith("FAILED"):
                detail = line[7:].strip() if line else (last_line(self.stderr[g]) or "no output")
                raise BenchError(f"load generator {g} failed before {what}: {detail}")
            if line.startswith(tag + " "):
                return dict(json.loads(line[len(tag) + 1 :]))

    def _send(self, command: str) -> None:
        for g, proc in enumerate(self.procs):
            assert proc.stdin is not None
            try:
                proc.stdin.write(command + "\n")
                proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                raise BenchError(
                    f"load generator {g} has gone: {last_line(self.stderr[g]) or 'no output'}"
                ) from None

    def ready(self, timeout_s: float = READY_TIMEOUT_S) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        self.ready_info = [
            self._expect(g, "READY", max(1.0, deadline - time.monotonic()), "being ready")
            for g in range(self.processes)
        ]
        return self.ready_info

    @property
    def connected(self) -> int:
        return sum(int(r.get("devices", 0)) for r in self.ready_info)

    @property
    def failed(self) -> int:
        return sum(int(r.get("failed", 0)) for r in self.ready_info)

    def reasons(self) -> dict[str, int]:
        return merge(r.get("reasons") for r in self.ready_info)

    def cpu(self) -> float:
        """The generators' CPU seconds so far, from /proc (0 for one already gone)."""
        total = 0.0
        for proc in self.procs:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                total += cpu_seconds(proc.pid)
        return total

    def mark(self) -> list[dict[str, Any]]:
        self._send("mark")
        return [self._expect(g, "MARK", MARK_TIMEOUT_S, "a mark") for g in range(self.processes)]

    def go(self) -> None:
        self._send("go")

    def results(self, timeout_s: float = RESULT_TIMEOUT_S, quit: bool = True) -> list[dict[str, Any]]:
        if quit:
            self._send("quit")
        deadline = time.monotonic() + timeout_s
        return [
            self._expect(g, "RESULT", max(1.0, deadline - time.monotonic()), "its result")
            for g in range(self.processes)
        ]

    def close(self) -> None:
        """Let them exit (stdin closed), killed if they do not within EXIT_TIMEOUT_S."""
        for proc in self.procs:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        deadline = time.monotonic() + EXIT_TIMEOUT_S
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for proc, pump in zip(self.procs, self._pumps, strict=True):
            pump.join(timeout=5)  # it has read to the end once the process is gone
            if proc.stdout is not None:
                proc.stdout.close()
        self._dir.cleanup()


def _pump(proc: subprocess.Popen[str], into: queue.Queue[str | None]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        into.put(line.rstrip("\n"))
    into.put(None)


def merge(counters: Any) -> dict[str, int]:
    """Sum of several ``{reason: count}`` maps (None entries skipped)."""
    total: dict[str, int] = {}
    for counter in counters:
        for key, value in (counter or {}).items():
            total[key] = total.get(key, 0) + int(value)
    return total


@dataclass(frozen=True)
class Window:
    """One measured stretch between two marks."""

    seconds: float
    server_cpu_s: dict[int, float]  # per server process (a supervisor's workers)
    generator_cpu_s: float
    packets: int
    late: int
    lost: int  # streams lost so far (cumulative)
    status: int  # status requests answered in the window (idle devices)

    @property
    def server_cpu_pct(self) -> float:
        return 100 * sum(self.server_cpu_s.values()) / self.seconds

    @property
    def per_process_pct(self) -> list[float]:
        return [100 * cpu / self.seconds for cpu in self.server_cpu_s.values()]

    @property
    def generator_cpu_pct(self) -> float:
        return 100 * self.generator_cpu_s / self.seconds

    @property
    def rate(self) -> float:
        return self.packets / self.seconds

    @property
    def us_per_packet(self) -> float:
        return sum(self.server_cpu_s.values()) * 1e6 / self.packets if self.packets else float("nan")

    @property
    def late_pct(self) -> float:
        return 100 * self.late / self.packets if self.packets else 0.0


def measure(
    generators: Generators, server_cpu: Callable[[], Samples], windows: int, seconds: float
) -> list[Window]:
    """``windows`` back-to-back windows of ``seconds``; every side sampled at each mark."""
    marks: list[tuple[float, Samples, float, list[dict[str, Any]]]] = []
    for k in range(windows + 1):
        if k:
            time.sleep(seconds)
        marks.append((time.perf_counter(), server_cpu(), generators.cpu(), generators.mark()))
    return [window(a, b) for a, b in itertools.pairwise(marks)]


def window(
    a: tuple[float, Samples, float, list[dict[str, Any]]],
    b: tuple[float, Samples, float, list[dict[str, Any]]],
) -> Window:
    def total(marks: Sequence[dict[str, Any]], key: str) -> int:
        return sum(int(m.get(key, 0)) for m in marks)

    return Window(
        seconds=b[0] - a[0],
        server_cpu_s={pid: b[1][pid] - a[1].get(pid, 0.0) for pid in b[1]},
        generator_cpu_s=b[2] - a[2],
        packets=total(b[3], "packets") - total(a[3], "packets"),
        late=total(b[3], "late") - total(a[3], "late"),
        lost=total(b[3], "lost"),
        status=total(b[3], "status") - total(a[3], "status"),
    )


def run_generators(
    kind: str,
    pki_dir: Path,
    target: str,
    devices: int,
    seconds: float,
    *extra: str,
    on_go: Callable[[], Samples] | None = None,
) -> tuple[list[dict[str, Any]], Samples, Samples]:
    """One window of ``seconds`` for a marked kind (``on_go`` called as it starts and ends),
    or, for storm/drop, ``on_go`` then "go" and their results: (results, on_go before, after)."""
    with Generators(kind, pki_dir, target, devices, seconds, *extra) as generators:
        generators.ready()
        before = on_go() if on_go is not None else {}
        if kind in ("storm", "drop"):
            generators.go()
            return generators.results(timeout_s=seconds + RESULT_TIMEOUT_S, quit=False), before, {}
        generators.mark()
        time.sleep(seconds)
        generators.mark()
        after = on_go() if on_go is not None else {}
        return generators.results(), before, after
