"""Announcements across replicas: how closely 50 devices on two server processes start one sound.

Two server processes on one Redis (``bench_admin.two_replicas``), 25 devices on each (on loopback,
in ``CLIENT_PROCESSES`` processes of their own, as devices are apart: one process's read loop
would measure its own backlog), labelled alike; ``ROUNDS`` announcements to the selector from
replica A. For each, the spread of the first packet's arrival over the 50 devices (latest minus
earliest, on the machine's monotonic clock, which every process shares); printed as median and
p99 (the target is p99 <= 10 ms), never asserted.

``python -m bench.bench_announce devices DIR TARGET_A TARGET_B FIRST COUNT``: one client process
(devices ``ann-FIRST`` .. of the certificates in DIR, alternately on A and B); it prints
``ready``, then ``start DEVICE T`` / ``end DEVICE`` for every sound, until its stdin closes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from admin.client import FleetClient
from auth import pki
from auth.identity import DEFAULT_TRUST_DOMAIN, Identity
from auth.operators import OperatorIdentity, Role
from auth.tls import TlsMaterial
from bench.bench_admin import ROOT, percentile, server_pki, two_replicas
from comms.gen import admin_pb2 as apb
from comms.gen import comms_pb2 as pb
from device.audio_sink import NullSink
from device.client import DeviceClient

DEVICES = 50
CLIENT_PROCESSES = 5
ROUNDS = 40
BEEP = 0  # mode 0's built-in sound: 0.6 s


class FirstPacket:
    """Says when each sound's first packet arrived (not decoded: only the arrival counts)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def on_packet(self, packet: pb.AudioPacket) -> None:
        if packet.is_start:
            print(f"start {self.name} {time.monotonic():.6f}", flush=True)
        if packet.is_end:
            print(f"end {self.name}", flush=True)


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.005)


async def client_process(root: Path, targets: tuple[str, str], first: int, count: int) -> None:
    ca = (root / "ca.crt").read_bytes()
    clients = []
    for i in range(first, first + count):
        name = f"ann-{i}"
        tls = TlsMaterial((root / f"{name}.crt").read_bytes(), (root / f"{name}.key").read_bytes(), ca)
        clients.append(DeviceClient(targets[i % 2], tls, NullSink(), audio=FirstPacket(name)))
    for client in clients:
        await client.connect()
    try:
        await until(lambda: all(c.status_requests >= 1 for c in clients))
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the parent closes it
    finally:
        for client in clients:
            await client.close()


async def spawn(
    root: Path, targets: tuple[str, str], first: int, count: int, env: dict[str, str]
) -> asyncio.subprocess.Process:
    """One client process of ``count`` devices from ``first``."""
    args = ["-m", "bench.bench_announce", "devices", str(root), *targets, str(first), str(count)]
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )


async def measure(root: Path, targets: tuple[str, str], admin_a: str, operator: TlsMaterial) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}
    per = DEVICES // CLIENT_PROCESSES
    processes = [await spawn(root, targets, first, per, env) for first in range(0, DEVICES, per)]
    starts: dict[str, list[float]] = {}
    ends: dict[str, int] = {}
    ready = []

    async def read(process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            word, *rest = raw.decode().split()
            if word == "ready":
                ready.append(process)
            elif word == "start":
                starts.setdefault(rest[0], []).append(float(rest[1]))
            elif word == "end":
                ends[rest[0]] = ends.get(rest[0], 0) + 1

    readers = [asyncio.create_task(read(p)) for p in processes]
    try:
        await until(lambda: len(ready) == len(processes), timeout=60)
        async with FleetClient(admin_a, operator) as fleet:
            for i in range(DEVICES):
                label = apb.Label(key="zone", value="bench")
                await fleet.stub.SetLabels(
                    apb.SetLabelsRequest(device=apb.DeviceRef(device_id=f"ann-{i}"), set=[label])
                )
            await asyncio.sleep(1.0)  # every presence lease and audio stream settled
            spreads, within, between, short = [], [], [], 0
            names = [f"ann-{i}" for i in range(DEVICES)]
            for round_ in range(ROUNDS):
                result = await fleet.stub.Announce(apb.AnnounceRequest(selector="zone=bench", mode=BEEP))
                short += len(result.started) != DEVICES
                await until(lambda r=round_: all(ends.get(n, 0) > r for n in names))  # type: ignore[misc]
                firsts = [starts[n][round_] for n in names]
                spreads.append((max(firsts) - min(firsts)) * 1000)
                by_node = [firsts[0::2], firsts[1::2]]
                within.append(max((max(f) - min(f)) * 1000 for f in by_node))
                between.append(abs(min(by_node[0]) - min(by_node[1])) * 1000)
    finally:
        for process in processes:
            assert process.stdin is not None
            process.stdin.close()
        for process in processes:
            await process.wait()
        for reader in readers:
            reader.cancel()
    print(
        f"  first-packet spread over {DEVICES} devices on 2 replicas: "
        f"{statistics.median(spreads):5.1f} / {percentile(spreads, 0.99):5.1f} ms (median / p99, "
        f"{len(spreads)} announcements; target p99 <= 10 ms)"
        + (f"; {short} rounds did not start every device" if short else "")
    )
    print(
        f"    within one replica: {statistics.median(within):5.1f} / {percentile(within, 0.99):5.1f} ms; "
        f"between the replicas' first devices: {statistics.median(between):5.1f} / "
        f"{percentile(between, 0.99):5.1f} ms"
    )


def run() -> None:
    print(f"\nAnnouncements across replicas (2 server processes, 1 Redis, {DEVICES} devices):")
    binary = shutil.which("redis-server")
    if binary is None:
        print("  skipped: redis-server is not installed")
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ca = server_pki(root)
        for i in range(DEVICES):
            device = pki.issue_device_cert(ca, Identity("acme", f"ann-{i}"), DEFAULT_TRUST_DOMAIN)
            pki.write_certified_key(device, root / f"ann-{i}.crt", root / f"ann-{i}.key")
        operator = pki.issue_operator_cert(ca, OperatorIdentity("bench", Role.OPERATOR, "acme"))
        tls = TlsMaterial(operator.cert_pem(), operator.key_pem(), ca.cert_pem())
        with two_replicas(root, binary) as nodes:
            asyncio.run(measure(root, (nodes.device_a, nodes.device_b), nodes.admin_a, tls))


if __name__ == "__main__":
    if sys.argv[1:2] == ["devices"]:
        folder, target_a, target_b, first, count = sys.argv[2:7]
        asyncio.run(client_process(Path(folder), (target_a, target_b), int(first), int(count)))
    else:
        run()
