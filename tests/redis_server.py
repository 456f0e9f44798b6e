"""A real redis-server for a test: a free loopback port, its own temp dir, stopped (or killed) on demand."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import free_port

START_TIMEOUT_S = 10.0
# Either set (make test and CI set them) turns a missing redis-server from a skip into a failure:
# every multi-replica test needs it, and a silent skip there hides exactly what breaks in production.
REQUIRED_BY = ("CI", "WITH_REDIS")
NOT_SET = {"", "0", "false", "no"}
MISSING = "redis-server is not installed (make test installs Debian's redis-server)"


def redis_required() -> bool:
    """True when the environment says the Redis tests must run, not skip."""
    return any(os.environ.get(name, "").strip().lower() not in NOT_SET for name in REQUIRED_BY)


def redis_binary() -> str:
    """The redis-server to start; skips the test, or fails it when Redis is required."""
    binary = shutil.which("redis-server")
    if binary is None:
        if redis_required():
            pytest.fail(f"{MISSING}, and {' or '.join(REQUIRED_BY)} is set: the Redis tests must run")
        pytest.skip(MISSING)
    return binary


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    directory: Path
    port: int = field(default_factory=free_port)
    durable: bool = False  # append-only file, fsync always: survives kill -9 and restart
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = redis_binary()
        self.directory.mkdir(parents=True, exist_ok=True)
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"] if self.durable else ["--appendonly", "no"]
        )
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--save", "", *persistence, "--protected-mode", "yes",
             "--logfile", str(self.directory / "redis.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers_ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"redis-server did not start: {(self.directory / 'redis.log').read_text()}"
                )
            time.sleep(0.02)
        return self

    def stop(self, kill: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill() if kill else self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None
