"""The processes a benchmark starts: the real server (``python -m server``), Redis, and what is
read from /proc about them (CPU time, resident memory, a supervisor's workers).

Starting and stopping never raise past the figure: a server that does not stop within its
deadline after SIGTERM is killed and the fact is returned (``Stopped``), with the last line
of its log, so the benchmark can print it in one line instead of a traceback.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.cores import pin_process

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
LOG_DIR_ENV = "BENCH_LOG_DIR"  # keep every server's log there (else it goes with the run)
LOG_LEVEL_ENV = "BENCH_LOG_LEVEL"  # and log at this level (with BENCH_LOG_DIR)


class BenchError(Exception):
    """A figure could not be measured; the message says why, in one line."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` (every thread), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    state = f"exited with {process.returncode}" if process.poll() is not None else "not listening"
    raise BenchError(f"the server under test did not start ({state} after {timeout_s:.0f} s)")


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's open-file limit (inherited by what it starts) towards ``wanted``,
    as far as the hard limit allows; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def last_line(path: Path) -> str:
    """The last line of a log, short: of a JSON log line its level and event only."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    if not lines:
        return ""
    try:
        entry = json.loads(lines[-1])
    except ValueError:
        return lines[-1][:200]
    if not isinstance(entry, dict) or "event" not in entry:
        return lines[-1][:200]
    return f"{entry.get('level', '')} {str(entry['event'])[:160]} (at {entry.get('ts', '?')})"


def log_errors(path: Path) -> Counter[str]:
    """ERROR and CRITICAL events in a server's JSON log, by event name."""
    found: Counter[str] = Counter()
    try:
        with path.open(errors="replace") as log:
            for line in log:
                if '"level":"error"' not in line and '"level":"critical"' not in line:
                    continue
                try:
                    found[short(str(json.loads(line).get("event", "?")))] += 1
                except ValueError:
                    found["?"] += 1
    except OSError:
        pass
    return found


def short(event: str, limit: int = 48) -> str:
    return event if len(event) <= limit else event[: limit - 3].rstrip() + "..."


def errors_note(path: Path) -> str:
    """``server log: 13,035 errors (request.internal_error 13,035, ...)``, or "" for none."""
    found = log_errors(path)
    if not found:
        return ""
    top = ", ".join(f"{event} {count:,}" for event, count in found.most_common(3))
    return f"server log: {sum(found.values()):,} errors ({top})"


@dataclass(frozen=True)
class Stopped:
    seconds: float
    killed: bool  # did not stop within the deadline after SIGTERM
    last_log: str = ""
    errors: str = ""  # errors_note of its log

    def note(self) -> str:
        notes = [self.errors] if self.errors else []
        if self.killed:
            log = f"; its last log line: {self.last_log}" if self.last_log else ""
            notes.append(
                f"the server did not exit within {self.seconds:.0f} s of SIGTERM and was killed{log}"
            )
        return "; ".join(notes)


class Service:
    """One ``python -m server`` pinned to ``cores``, its log in ``log_path``."""

    def __init__(
        self, args: Sequence[str], cores: frozenset[int], log_path: Path, workers: int = 1, port: int = 0
    ) -> None:
        self.port = port or free_port()
        self.workers = workers
        kept = os.environ.get(LOG_DIR_ENV)
        if kept:  # keep the server's log after the run (the temporary directory goes)
            Path(kept).mkdir(parents=True, exist_ok=True)
            log_path = Path(kept) / f"{time.strftime('%H%M%S')}-{self.port}-{log_path.name}"
            level = os.environ.get(LOG_LEVEL_ENV)
            if level:
                args = [*args, "--log-level", level]
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server", "--bind", f"127.0.0.1:{self.port}", "--health-bind", "",
             "--metrics-bind", "", "--admin-bind", "", "--log-format", "json", "--workers", str(workers),
             *args],
            stdout=subprocess.DEVNULL, stderr=self._log, cwd=ROOT,
        )  # fmt: skip
        pin_process(self.process.pid, cores)
        self.stopped: Stopped | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        wait_listening(self.port, self.process)
        if self.workers > 1:  # the supervisor listens first; every worker must be up too
            deadline = time.monotonic() + START_TIMEOUT_S
            while len(children(self.process.pid)) < self.workers and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)

    def pids(self) -> list[int]:
        return children(self.process.pid) if self.workers > 1 else [self.process.pid]

    def cpu(self) -> dict[int, float]:
        return {pid: cpu_seconds(pid) for pid in self.pids()}

    def rss(self) -> int:
        return sum(rss_bytes(pid) for pid in {self.process.pid, *self.pids()})

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> Stopped:
        """SIGTERM, then wait; killed (and said so) if it is still there after ``timeout_s``."""
        if self.stopped is not None:
            return self.stopped
        started = time.monotonic()
        killed = False
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                killed = True
                for pid in self.pids():
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.process.kill()
                self.process.wait()
        self._log.close()
        self.stopped = Stopped(
            time.monotonic() - started,
            killed,
            last_line(self.log_path) if killed else "",
            errors_note(self.log_path),
        )
        return self.stopped


@contextmanager
def redis_server(directory: Path, port: int | None = None, save: bool = False) -> Iterator[int | None]:
    """A private redis-server on 127.0.0.1 (None when it is not installed); stopped on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = port or free_port()
    process = start_redis(binary, port, directory, save)
    try:
        yield port
    finally:
        stop_process(process)


def start_redis(binary: str, port: int, directory: Path, save: bool) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "3600 1" if save else "",
         "--appendonly", "no", "--databases", "64", "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_answering(port)
    return process


def stop_process(process: subprocess.Popen[Any], timeout_s: float = 30.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def redis_answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def wait_answering(port: int, timeout_s: float = 30.0) -> float:
    """Until Redis on ``port`` answers PING; the wall-clock time it first did."""
    deadline = time.monotonic() + timeout_s
    while not redis_answers(port):
        if time.monotonic() > deadline:
            raise BenchError(f"redis on port {port} did not answer within {timeout_s:.0f} s")
        time.sleep(0.02)
    return time.time()
