"""Where the server's time goes per audio packet: py-spy samples one server process while lean
devices stream (``python -m bench.profile_server [DEVICES] [SECONDS] [FRAME_MS] [--native]``; with
``--native`` gRPC's C core shows too, at the price of pausing the server for each sample).

Prints the functions holding the most samples, by own time and by total time (a function and
what it calls), from py-spy's raw (collapsed-stack) output. Needs py-spy (``pip install py-spy``,
part of the dev extra) and permission to ptrace the server (root, or ptrace_scope 0).
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from bench.bench_scale import free_port, run_generators, wait_listening, write_pki  # noqa: E402

TOP = 25


def frame_name(frame: str) -> str:
    """``streams.py:_stream_audio (/work/.../streams.py:342)`` -> ``streams.py:_stream_audio``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} [{Path(path).parent.name}/{Path(path).name}]" if path else name


OUR_CODE = ("server/", "comms/", "auth/")  # packages of src/ (paths as py-spy gives them)


def task_of(frames: list[str]) -> str:
    """The task a sample belongs to: below the event loop's callback (``Handle._run``), the
    outermost frame in our code (``_stream_audio``, the frame clock, the status stream...);
    else what ran there (the loop's own work, gRPC's poller thread)."""
    runs = [i for i, frame in enumerate(frames) if frame.startswith("Handle._run ")]
    below = frames[runs[-1] + 1 :] if runs else frames
    for frame in below:
        path = frame.partition(" (")[2]
        if "site-packages" not in path and any(part in path for part in OUR_CODE):
            return frame_name(frame)
    return f"(not ours) {frame_name(below[0] if below else frames[-1])}" if frames else "?"


def summarise(
    raw: Path,
) -> tuple[collections.Counter[str], collections.Counter[str], collections.Counter[str], int]:
    """Samples by own time, by total time and by task (see ``task_of``), and their number."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    tasks: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        raw_frames = [f for f in stack.split(";") if f]
        frames = [frame_name(f) for f in raw_frames]
        samples += count
        if frames:
            own[frames[-1]] += count
        for name in set(frames):
            total[name] += count
        tasks[task_of(raw_frames)] += count
    return own, total, tasks, samples


def profile(devices: int, seconds: float, native: bool = False, frame_ms: int = 20) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    redis_binary = shutil.which("redis-server")
    if not Path(spy).exists() or redis_binary is None:
        print("  skipped: needs py-spy and redis-server")
        return
    with tempfile.TemporaryDirectory() as tmp:
        pki_dir = write_pki(Path(tmp) / "pki", devices)
        redis_port, port = free_port(), free_port()
        redis = subprocess.Popen(
            [redis_binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        server = subprocess.Popen(
            [sys.executable, "-m", "server", "--pki-dir", str(pki_dir), "--bind", f"127.0.0.1:{port}",
             "--health-bind", "", "--metrics-bind", "", "--admin-bind", "", "--state-backend", "redis",
             "--redis-url", f"redis://127.0.0.1:{redis_port}/0", "--log-level", "ERROR",
             "--cache-dir", f"{tmp}/cache", "--max-concurrent-streams", "8"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
        )  # fmt: skip
        raw = Path(tmp) / "profile.txt"
        sampler: list[subprocess.Popen[bytes]] = []

        def start_sampling() -> dict[int, float]:
            if not sampler:
                command = [
                    spy, "record", "--pid", str(server.pid), "--format", "raw", "--output", str(raw),
                    "--duration", str(int(seconds)), "--rate", "200",
                    *(["--native"] if native else ["--nonblocking"]),
                ]  # fmt: skip
                sampler.append(
                    subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                )
            return {}

        try:
            wait_listening(port, server)
            time.sleep(1.0)
            run_generators("realtime", pki_dir, f"127.0.0.1:{port}", devices, seconds + 2, str(frame_ms), "0",
                           on_go=start_sampling)  # fmt: skip
            for process in sampler:
                process.wait(timeout=60)
        finally:
            server.terminate()
            server.wait(timeout=60)
            redis.terminate()
            redis.wait(timeout=30)
        own, total, tasks, samples = summarise(raw)
    print(f"\nServer profile, {devices} devices streaming {frame_ms} ms packets, {samples} samples (py-spy):")
    print("  own time (the function itself):")
    for name, count in own.most_common(TOP):
        print(f"    {100 * count / samples:5.1f}%  {name}")
    print("  total time (with what it calls):")
    for name, count in total.most_common(TOP):
        print(f"    {100 * count / samples:5.1f}%  {name}")
    print("  by task (the outermost frame in our code: what the server was doing it for):")
    for name, count in tasks.most_common(TOP):
        print(f"    {100 * count / samples:5.1f}%  {name}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--native"]
    profile(
        int(args[0]) if args else 400,
        float(args[1]) if len(args) > 1 else 10.0,
        "--native" in sys.argv,
        int(args[2]) if len(args) > 2 else 20,
    )
