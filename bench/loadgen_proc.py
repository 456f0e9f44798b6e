"""One load-generating process: many lean devices, measured, one JSON line of results.

Several of these run side by side so the load generator is not the bottleneck of one core.

``baseline PKI TARGET FIRST COUNT SECONDS``: COUNT raw audio streams, packets counted.
``realtime PKI TARGET FIRST COUNT SECONDS FRAME_MS``: COUNT devices (CreateSession asking for
FRAME_MS), all playing the long sound; over SECONDS: packets received, packets more than 50 ms
behind their sound's own schedule.
``storm PKI TARGET FIRST COUNT SECONDS``: COUNT devices connected; after "go" (the server is
being restarted) each reconnects with the device client's backoff (full jitter) whenever its
streams end; reports when each was streaming again and how many attempts failed.
``drop PKI TARGET FIRST COUNT SECONDS``: as ``storm``, but at "go" every device drops its
connection itself (the server is fine, its store is not); wall-clock times of every
reconnect and failure, and how long each successful reconnect (CreateSession and streams) took.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import sys
import time
from pathlib import Path

import grpc

from auth import pki
from auth.identity import Identity
from auth.tls import TlsMaterial, channel_credentials
from comms.gen import comms_pb2 as pb
from comms.gen import comms_pb2_grpc as pb_grpc
from comms.gen import session_pb2 as spb
from comms.gen import session_pb2_grpc as spb_grpc

LATE_S = 0.050
SUCCESS = pb.DeviceStatusResponse(status="success")
MODE, STOP, PLAY = 1, 2, 3
PROBE_ROUNDS = 10
PLAY_SPREAD_S = 1.0
CONNECT_BATCH = 50


def cpu_seconds() -> float:
    return sum(resource.getrusage(resource.RUSAGE_SELF)[:2])


def tls(pki_dir: Path, index: int) -> TlsMaterial:
    cert, key = pki.device_paths(pki_dir, Identity("bench", f"d{index:04d}"))
    return TlsMaterial(cert.read_bytes(), key.read_bytes(), (pki_dir / pki.CA_CERT).read_bytes())


class Device:
    def __init__(self, target: str, material: TlsMaterial, frame_ms: int) -> None:
        self.channel = grpc.aio.secure_channel(target, channel_credentials(material))
        self.frame_s = frame_ms / 1000
        self.frame_ms = frame_ms
        self.packets = 0
        self.late = 0
        self.counting = False
        self.streaming = asyncio.Event()  # the server asked for the first status: streams are up
        self._first = 0.0
        self._index = 0
        self._waiting: dict[str, asyncio.Future[float]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        session = await spb_grpc.SessionServiceStub(self.channel).CreateSession(
            spb.CreateSessionRequest(max_frame_ms=self.frame_ms)
        )
        metadata = (("authorization", f"Bearer {session.token}"),)
        stub = pb_grpc.DeviceServiceStub(self.channel)
        self.status = stub.StatusStream(metadata=metadata)
        self.events = stub.EventStream(metadata=metadata)
        self.audio = stub.ServerAudioStream(pb.AudioStreamRequest(start=True), metadata=metadata)
        self._tasks = [asyncio.create_task(self._answer()), asyncio.create_task(self._listen())]

    async def _answer(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            while (request := await self.status.read()) is not grpc.aio.EOF:
                self.streaming.set()
                await self.status.write(
                    SUCCESS if request.HasField("set") else pb.DeviceStatusResponse(state=pb.DeviceStatus())
                )

    async def _listen(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for packet in self.audio:
                now = time.perf_counter()
                if packet.is_start:
                    self._first, self._index = now, 0
                    self._resolve("start", now)
                else:
                    self._index += 1
                if packet.is_end:
                    self._resolve("end", now)
                if self.counting:
                    self.packets += 1
                    if now - (self._first + self._index * self.frame_s) > LATE_S:
                        self.late += 1

    def _resolve(self, kind: str, now: float) -> None:
        waiter = self._waiting.pop(kind, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(now)

    def expect(self, kind: str) -> asyncio.Future[float]:
        self._waiting[kind] = asyncio.get_running_loop().create_future()
        return self._waiting[kind]

    async def press(self, button: int) -> None:
        await self.events.write(pb.DeviceEvent(button_event=pb.ButtonEvent(button_id=button)))  # type: ignore[arg-type]
        await self.events.read()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.channel.close()


async def probe_latency(device: Device, rounds: int) -> tuple[list[float], list[float]]:
    """Stop -> is_end and Play -> first packet, in ms, on a device that is playing the long sound."""
    stops, plays = [], []
    for _ in range(rounds):
        end, started = device.expect("end"), time.perf_counter()
        await device.press(STOP)
        stops.append(1000 * (await asyncio.wait_for(end, 5) - started))
        await asyncio.sleep(0.1)
        start, started = device.expect("start"), time.perf_counter()
        await device.press(PLAY)
        plays.append(1000 * (await asyncio.wait_for(start, 5) - started))
        await asyncio.sleep(0.2)
    return stops, plays


async def realtime(
    pki_dir: Path, target: str, first: int, count: int, seconds: float, frame_ms: int, probes: int = 0
) -> dict:
    devices = [Device(target, tls(pki_dir, first + i), frame_ms) for i in range(count)]
    failed = 0
    for start in range(0, count, CONNECT_BATCH):
        results = await asyncio.gather(
            *(d.start() for d in devices[start : start + CONNECT_BATCH]), return_exceptions=True
        )
        failed += sum(isinstance(r, BaseException) for r in results)
    live = [d for d in devices if d._tasks]
    await asyncio.gather(*(d.press(MODE) for d in live))

    async def play_at(device: Device, delay: float) -> None:
        await asyncio.sleep(delay)
        await device.press(PLAY)

    # Sounds start spread over a second, as in a real fleet: not one aligned burst per frame.
    await asyncio.gather(*(play_at(d, i * PLAY_SPREAD_S / max(len(live), 1)) for i, d in enumerate(live)))
    print("READY", flush=True)
    sys.stdin.readline()  # the orchestrator starts every generator's window together
    for device in live:
        device.counting = True
    started, cpu_before = time.perf_counter(), cpu_seconds()
    measured = await asyncio.gather(*(probe_latency(d, PROBE_ROUNDS) for d in live[:probes]))
    await asyncio.sleep(max(0.0, seconds - (time.perf_counter() - started)))
    elapsed = time.perf_counter() - started
    result = {
        "cpu_pct": 100 * (cpu_seconds() - cpu_before) / elapsed,
        "devices": len(live),
        "failed": failed,
        "packets": sum(d.packets for d in live),
        "late": sum(d.late for d in live),
        "elapsed": elapsed,
        "stop_ms": [ms for stops, _ in measured for ms in stops],
        "play_ms": [ms for _, plays in measured for ms in plays],
    }
    await asyncio.gather(*(d.close() for d in devices), return_exceptions=True)
    return result


async def baseline(pki_dir: Path, target: str, first: int, count: int, seconds: float) -> dict:
    channels = [
        grpc.aio.secure_channel(target, channel_credentials(tls(pki_dir, first + i))) for i in range(count)
    ]
    received = 0
    counting = False

    async def drain(channel: grpc.aio.Channel) -> None:
        nonlocal received
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for _ in pb_grpc.DeviceServiceStub(channel).ServerAudioStream(
                pb.AudioStreamRequest(start=True)
            ):
                if counting:
                    received += 1

    tasks = [asyncio.create_task(drain(c)) for c in channels]
    await asyncio.sleep(1.0)
    print("READY", flush=True)
    sys.stdin.readline()
    counting = True
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    counting = False
    elapsed = time.perf_counter() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close()
    return {"packets": received, "elapsed": elapsed}


async def storm(
    pki_dir: Path, target: str, first: int, count: int, seconds: float, drop_self: bool = False
) -> dict:
    """Reconnect loops like the Pi client's: on any failure, back off with full jitter, retry."""
    from device.backoff import Backoff

    failures = 0
    reasons: dict[str, int] = {}
    back: list[float] = []
    back_wall: list[float] = []
    failed_wall: list[float] = []
    connect_s: list[float] = []
    dropped = asyncio.Event()

    async def one(index: int) -> None:
        nonlocal failures
        material = tls(pki_dir, first + index)
        backoff = Backoff()
        device = Device(target, material, 20)
        await device.start()
        await device.streaming.wait()
        ready.append(index)
        if len(ready) == count:
            all_ready.set()
        await dropped.wait()
        while True:  # wait for the drop, then come back
            if not drop_self:
                with contextlib.suppress(Exception):
                    await device.audio.code()
            await device.close()
            while True:
                await asyncio.sleep(backoff.next_delay(0.0))
                device = Device(target, material, 20)
                attempt = time.perf_counter()
                try:
                    await asyncio.wait_for(device.start(), 10)
                    await asyncio.wait_for(device.streaming.wait(), 10)
                except Exception as exc:
                    failures += 1
                    failed_wall.append(time.time())
                    why = type(exc).__name__  # what failed, counted: the orchestrator prints it
                    reasons[why] = reasons.get(why, 0) + 1
                    await device.close()
                    continue
                back.append(time.perf_counter())
                back_wall.append(time.time())
                connect_s.append(back[-1] - attempt)
                await device.close()
                return

    ready: list[int] = []
    all_ready = asyncio.Event()
    tasks = [asyncio.create_task(one(i)) for i in range(count)]
    await all_ready.wait()
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    started = time.perf_counter()
    dropped.set()
    await asyncio.wait(tasks, timeout=seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    delays = sorted(t - started for t in back)
    return {
        "devices": count,
        "back": len(back),
        "failures": failures,
        "delays": delays,
        "reasons": reasons,
        "back_wall": back_wall,
        "failed_wall": failed_wall,
        "connect_s": connect_s,
    }


def main() -> None:
    kind, pki_dir, target, first, count, seconds = sys.argv[1:7]
    args = (Path(pki_dir), target, int(first), int(count), float(seconds))
    if kind == "baseline":
        result = asyncio.run(baseline(*args))
    elif kind in ("storm", "drop"):
        result = asyncio.run(storm(*args, drop_self=kind == "drop"))
    else:
        probes = int(sys.argv[8]) if len(sys.argv) > 8 else 0
        result = asyncio.run(realtime(*args, int(sys.argv[7]), probes))
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
