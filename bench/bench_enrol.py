"""Enrolment with one-time codes: time per device, and how many enrolments a second one server takes.

One server process (memory state, its enrolment listener on, an issuing CA from ``gen_certs.py``);
codes made through the operator API as the dev operator; each enrolment is what
``audio-device enroll`` does: a new EC P-256 key, a CSR, a new server-only TLS connection, the
certificate chain checked and written (0600 key) into a directory of its own. Figures (printed,
never asserted): one device at a time (median / p99), then ``CONCURRENT`` at once (enrolments per
second, median / p99). Client and server share this machine's cores.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from admin.client import FleetClient
from auth.tls import TlsMaterial
from bench.bench_admin import percentile
from bench.bench_scale import ROOT, free_port, wait_listening
from comms.gen import admin_pb2 as apb
from device.enrol import enrol

SEQUENTIAL = 50
CONCURRENT = (16, 64)
PER_CONCURRENT_RUN = 256


def make_pki(root: Path) -> None:
    gen_certs = [sys.executable, str(ROOT / "scripts" / "gen_certs.py")]
    for command in (["dev"], ["issuing-ca"]):
        subprocess.run([*gen_certs, *command, "--out", str(root)], check=True, capture_output=True)


def operator_tls(root: Path) -> TlsMaterial:
    base = root / "operators" / "acme" / "dev-admin"
    return TlsMaterial(
        base.with_suffix(".crt").read_bytes(),
        base.with_suffix(".key").read_bytes(),
        (root / "ca.crt").read_bytes(),
    )


async def codes(admin: str, operator: TlsMaterial, prefix: str, count: int) -> list[str]:
    async with FleetClient(admin, operator) as client:
        made: list[str] = []
        while len(made) < count:  # at most 1000 per call
            batch = min(1000, count - len(made))
            answer = await client.stub.CreateEnrollments(
                apb.CreateEnrollmentsRequest(count=batch, prefix=f"{prefix}{len(made)}-")
            )
            made += [e.code for e in answer.enrollments]
        return made


async def one(target: str, code: str, ca: Path, out: Path) -> float:
    started = time.perf_counter()
    await enrol(target, code, out, ca_file=ca, server_name="localhost")
    return time.perf_counter() - started


async def measure(target: str, admin: str, pki_dir: Path, work: Path) -> None:
    operator, ca = operator_tls(pki_dir), pki_dir / "ca.crt"
    sequential = await codes(admin, operator, "seq-", SEQUENTIAL)
    times = [await one(target, code, ca, work / f"seq-{i}") for i, code in enumerate(sequential)]
    ms = [1000 * t for t in times]
    print(
        f"  one device at a time: {statistics.median(ms):6.1f} / {percentile(ms, 0.99):6.1f} ms "
        f"per enrolment (median / p99, {len(ms)} devices; key, CSR, TLS connection, files)"
    )
    for concurrent in CONCURRENT:
        batch = await codes(admin, operator, f"c{concurrent}-", PER_CONCURRENT_RUN)
        rate, done, failed = await at_once(target, ca, work / f"c{concurrent}", batch, concurrent)
        print(
            f"  {concurrent:2d} at once: {rate:6.0f} enrolments/s, "
            f"{statistics.median(done):6.1f} / {percentile(done, 0.99):6.1f} ms each "
            f"(median / p99, {len(done)} enrolled, {failed} failed)"
        )


async def at_once(
    target: str, ca: Path, work: Path, batch: list[str], concurrent: int
) -> tuple[float, list[float], int]:
    """``batch`` enrolled ``concurrent`` at a time: enrolments per second, ms each, failures."""
    gate = asyncio.Semaphore(concurrent)
    failed = 0

    async def limited(i: int, code: str) -> float | None:
        nonlocal failed
        async with gate:
            try:
                return await one(target, code, ca, work / str(i))
            except Exception:  # counted and reported: an overloaded server refuses some
                failed += 1
                return None

    started = time.perf_counter()
    results = await asyncio.gather(*(limited(i, code) for i, code in enumerate(batch)))
    elapsed = time.perf_counter() - started
    done = [1000 * t for t in results if t is not None]
    return len(done) / elapsed, done, failed


def run() -> None:
    print("\nEnrolment with one-time codes (1 server process, memory state; the client shares the cores):")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_pki(root / "pki")
        port, admin_port, enrol_port = free_port(), free_port(), free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "server", "--pki-dir", str(root / "pki"), "--bind", f"127.0.0.1:{port}",
             "--admin-bind", f"127.0.0.1:{admin_port}", "--enroll-bind", f"127.0.0.1:{enrol_port}",
             "--health-bind", "", "--metrics-bind", "", "--console-bind", "",
             "--state-backend", "memory", "--log-level", "ERROR"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
        )  # fmt: skip
        try:
            wait_listening(enrol_port, server)
            asyncio.run(measure(f"127.0.0.1:{enrol_port}", f"127.0.0.1:{admin_port}", root / "pki", root))
        except Exception as exc:  # one line, not a traceback: the figure could not be measured
            print(f"  not measured: {type(exc).__name__}: {exc}"[:300])
        finally:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    sys.path[:0] = [str(ROOT), str(ROOT / "src")]
    run()
