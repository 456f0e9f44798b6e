"""Operator commands across replicas: two server processes on one Redis, a device on A, commands on B.

Figures (median / p99 over ``ROUNDS`` commands, printed, never asserted):
* SetMode on B -> the device on A shows the mode (its LEDs changed by a status SET);
* Play on B -> the first audio packet at the device on A;
* the same two with the command sent to A itself, as the baseline of the hop;
* a Mode press on the device on A -> a WatchDevices stream on B sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from admin.client import FleetClient
from auth import pki
from auth.identity import DEFAULT_TRUST_DOMAIN, Identity
from auth.keys import create_signing_key
from auth.operators import OperatorIdentity, Role
from auth.tls import TlsMaterial
from bench.bench_scale import free_port, wait_listening
from comms.gen import admin_pb2 as apb
from device.audio_sink import NullSink
from device.client import DeviceClient
from server.devices.leds import MODE_LEDS, OFF

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 60
MODES = 5
MODE_BUTTON = 1


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def shown_mode(leds: list[int]) -> int | None:
    for index, colour in enumerate(leds[2 : 2 + MODE_LEDS]):
        if colour != OFF:
            return index  # modes 0..3 are white; the bench stays below 4 on purpose
    return None


class CountingSink(NullSink):
    def __init__(self) -> None:
        self.started = asyncio.Event()

    def start_sound(self) -> None:
        self.started.set()


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> float:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.0005)
    return time.monotonic()


async def measure(
    target_a: str, admin_a: str, admin_b: str, device: TlsMaterial, operator: TlsMaterial
) -> None:
    leds: list[list[int]] = [[]]
    sink = CountingSink()
    async with (
        DeviceClient(target_a, device, sink, on_leds=lambda v: leds.__setitem__(0, list(v))) as client,
        FleetClient(admin_a, operator) as on_a,
        FleetClient(admin_b, operator) as on_b,
    ):
        await until(lambda: client.status_requests >= 1)
        ref = apb.DeviceRef(device_id="admin-1")
        results: dict[str, list[float]] = {}
        for label, stub in (("same replica", on_a.stub), ("replica B -> device on A", on_b.stub)):
            modes, plays = [], []
            for i in range(ROUNDS):
                mode = (i % 3) + 1 if shown_mode(leds[0]) != (i % 3) + 1 else 0
                started = time.monotonic()
                await stub.SetMode(apb.SetModeRequest(device=ref, mode=mode))
                modes.append((await until(lambda m=mode: shown_mode(leds[0]) == m)) - started)  # type: ignore[misc]
                sink.started.clear()
                started = time.monotonic()
                await stub.Play(ref)
                await asyncio.wait_for(sink.started.wait(), 5)
                plays.append(time.monotonic() - started)
                await stub.Stop(ref)
            results[f"{label}: SetMode -> LEDs on the device"] = modes
            results[f"{label}: Play -> first packet at the device"] = plays
        watch = on_b.stub.WatchDevices(apb.WatchDevicesRequest())
        while (await watch.read()).kind != apb.DeviceUpdate.SNAPSHOT_END:
            pass
        seen = []
        mode = (await on_b.stub.GetDevice(ref)).mode
        for _ in range(30):
            await asyncio.sleep(0.15)  # under the device's event rate limit (10/s)
            mode = (mode + 1) % MODES
            started = time.monotonic()
            await client.press(MODE_BUTTON)
            while True:
                update = await asyncio.wait_for(watch.read(), 5)
                if update.change == "mode" and update.device.mode == mode:
                    break
            seen.append(time.monotonic() - started)
        watch.cancel()
        results["device Mode press on A -> WatchDevices on B"] = seen
    for label, values in results.items():
        ms = [v * 1000 for v in values]
        print(
            f"  {label}: {statistics.median(ms):5.1f} / {percentile(ms, 0.99):5.1f} ms "
            f"(median / p99, {len(ms)} commands)"
        )


def server_pki(root: Path) -> pki.CertifiedKey:
    """A CA, a localhost server certificate and a signing key under ``root``; the CA, to issue more."""
    ca = pki.create_ca("Bench CA")
    pki.write_certified_key(ca, root / pki.CA_CERT, root / pki.CA_KEY)
    server = pki.issue_server_cert(ca, ["localhost"], ["127.0.0.1"])
    pki.write_certified_key(server, root / pki.SERVER_CERT, root / pki.SERVER_KEY)
    create_signing_key(root / "signing")
    return ca


def start_server(
    pki_dir: Path, redis_url: str, node: str, port: int, admin_port: int
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "server", "--pki-dir", str(pki_dir), "--bind", f"127.0.0.1:{port}",
         "--admin-bind", f"127.0.0.1:{admin_port}", "--health-bind", "", "--metrics-bind", "",
         "--state-backend", "redis", "--redis-url", redis_url, "--node-id", node, "--log-level", "ERROR"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip


@dataclass(frozen=True)
class Replicas:
    """Two server processes (nodes a and b) sharing one Redis: their device and operator ports."""

    device_a: str
    admin_a: str
    device_b: str
    admin_b: str


@contextlib.contextmanager
def two_replicas(root: Path, binary: str) -> Iterator[Replicas]:
    """A Redis of our own (no persistence) and two servers on it, listening; all stopped afterwards."""
    redis_port = free_port()
    redis = subprocess.Popen(
        [binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    ports = [free_port() for _ in range(4)]
    url = f"redis://127.0.0.1:{redis_port}/0"
    servers = [
        start_server(root, url, "node-a", ports[0], ports[1]),
        start_server(root, url, "node-b", ports[2], ports[3]),
    ]
    try:
        for process, port in zip(servers, (ports[1], ports[3]), strict=True):
            wait_listening(port, process)
        yield Replicas(*(f"127.0.0.1:{port}" for port in ports))
    finally:
        for process in [*servers, redis]:
            process.terminate()
            process.wait()


def run() -> None:
    print("\nOperator commands across replicas (2 server processes, 1 Redis, 1 device on A):")
    binary = shutil.which("redis-server")
    if binary is None:
        print("  skipped: redis-server is not installed")
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ca = server_pki(root)
        device = pki.issue_device_cert(ca, Identity("acme", "admin-1"), DEFAULT_TRUST_DOMAIN)
        operator = pki.issue_operator_cert(ca, OperatorIdentity("bench", Role.OPERATOR, "acme"))
        with two_replicas(root, binary) as nodes:
            asyncio.run(
                measure(
                    nodes.device_a,
                    nodes.admin_a,
                    nodes.admin_b,
                    TlsMaterial(device.cert_pem(), device.key_pem(), ca.cert_pem()),
                    TlsMaterial(operator.cert_pem(), operator.key_pem(), ca.cert_pem()),
                )
            )


if __name__ == "__main__":
    run()
