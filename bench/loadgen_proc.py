"""One load-generating process: many lean devices, measured, JSON lines on stdout.

Several run side by side, pinned by the orchestrator (bench.generators) to the cores the server
does not use. Arguments: ``KIND PKI TARGET FIRST COUNT SECONDS [KIND's own...]``; device
identities ``bench/d<FIRST>`` onwards.

``baseline``: COUNT raw audio streams read at full speed, packets counted.
``realtime FRAME_MS PROBES``: COUNT devices (CreateSession asking for FRAME_MS), all playing the
long sound; packets received, packets more than 50 ms behind their sound's own schedule; the
first PROBES devices measure Stop -> is_end and Play -> first packet.
``idle``: COUNT devices with their three streams open and no audio, answering status requests.
``storm``: COUNT devices connected; after "go" (the server is being restarted) each reconnects
with the device client's backoff (full jitter) once its streams end, presses Play and waits for
the first packet (then Stop): when each played again, how many attempts failed and why.
``drop``: as ``storm``, but at "go" every device drops its connection itself (the server is
fine, its store is not); wall-clock times of every return and of the start of every failed attempt.

Lines out: ``READY {json}`` once set up (devices connected, connects failed); then for
baseline/realtime/idle each ``mark`` on stdin answers ``MARK {json}`` (cumulative counters at
that moment: this process's CPU seconds, packets, late, streams lost) and ``quit`` (or EOF)
answers ``RESULT {json}`` and closes the devices; storm/drop run on ``go`` and answer
``RESULT {json}``. When the generator itself cannot go on it prints ``FAILED <one line>`` and
exits 1: an overloaded server is reported in the figures, never as a traceback.
"""

from __future__ import annotations

import asyncio
import gc
import json
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from auth.tls import channel_credentials
from bench.lean_device import CALL_ENDED, MODE, PLAY, STOP, Device, first_of, reason, tls
from comms.gen import comms_pb2 as pb
from comms.gen import comms_pb2_grpc as pb_grpc

PROBE_ROUNDS = 20  # with 10 probes, 200 of each: a p99 that is not just the slowest one
PROBE_TIMEOUT_S = 5.0
PROBES_AFTER_QUIT_S = 20.0
PLAY_SPREAD_S = 1.0
CONNECTS_AT_ONCE = 50  # set-up connects in flight per process (the measured storm has no limit)
CONNECT_TIMEOUT_S = 30.0
ATTEMPT_TIMEOUT_S = 10.0  # one reconnect attempt in a storm, as the device client allows
FIRST_CONNECT_DEADLINE_S = 120.0


def cpu_seconds() -> float:
    return sum(resource.getrusage(resource.RUSAGE_SELF)[:2])


def settle_collector() -> None:
    """Once set up, no cycle collection until the process ends (a bounded run: what cycles it
    leaves meanwhile are a few megabytes). A collection here pauses every device of the process
    at once, for up to 60 ms with 200 devices: a pause in the generator would be measured as the
    server's latency, and its time as the generator's load."""
    gc.collect()
    gc.freeze()
    gc.disable()


def emit(tag: str, payload: object) -> None:
    print(f"{tag} {json.dumps(payload)}", flush=True)


async def stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def connect_all(devices: Sequence[Device]) -> tuple[list[Device], Counter[str]]:
    """Every device's session and streams, CONNECTS_AT_ONCE in flight; (up, failures by reason)."""
    limit = asyncio.Semaphore(CONNECTS_AT_ONCE)
    failures: Counter[str] = Counter()

    async def one(device: Device) -> bool:
        async with limit:
            why = await device.open(CONNECT_TIMEOUT_S)
        if why is not None:
            failures[why] += 1
            await device.close()
        return why is None

    results = await asyncio.gather(*(one(d) for d in devices))
    return [d for d, up in zip(devices, results, strict=True) if up], failures


async def marks(snapshot: Callable[[], dict], on_first: Callable[[], None] = lambda: None) -> None:
    """Answer ``mark`` with a snapshot until ``quit`` or EOF; ``on_first`` runs at the first."""
    commands = await stdin_reader()
    marked = False
    while line := (await commands.readline()).decode().strip():
        if line == "quit":
            return
        if line == "mark":
            if not marked:
                marked = True
                on_first()
            emit("MARK", {"t": time.perf_counter(), "cpu_s": cpu_seconds(), **snapshot()})


async def probe_latency(device: Device) -> tuple[list[float], list[float], int]:
    """Stop -> is_end and Play -> first packet (ms) on a device playing the long sound; failures."""
    stops: list[float] = []
    plays: list[float] = []
    failed = 0
    for _ in range(PROBE_ROUNDS):
        if device.lost:
            return stops, plays, failed + 1
        for button, kind, into in ((STOP, "end", stops), (PLAY, "start", plays)):
            waiter, started = device.expect(kind), time.perf_counter()
            try:
                async with asyncio.timeout(PROBE_TIMEOUT_S):
                    if not await device.press(button):
                        raise TimeoutError
                    into.append(1000 * (await waiter - started))
            except TimeoutError:
                failed += 1
            await asyncio.sleep(0.1 if button == STOP else 0.2)
    return stops, plays, failed


async def realtime(pki_dir: Path, target: str, first: int, count: int, frame_ms: int, probes: int) -> dict:
    devices = [Device(target, tls(pki_dir, first + i), frame_ms) for i in range(count)]
    live, failures = await connect_all(devices)
    press_failed = sum(not ok for ok in await asyncio.gather(*(d.press(MODE) for d in live)))

    async def play_at(device: Device, delay: float) -> bool:
        await asyncio.sleep(delay)
        return await device.press(PLAY)

    # Sounds start spread over a second, as in a real fleet: not one aligned burst per frame.
    played = await asyncio.gather(
        *(play_at(d, i * PLAY_SPREAD_S / max(len(live), 1)) for i, d in enumerate(live))
    )
    press_failed += sum(not ok for ok in played)
    settle_collector()
    emit("READY", {"devices": len(live), "failed": sum(failures.values()), "reasons": failures})
    probing: list[asyncio.Task[tuple[list[float], list[float], int]]] = []

    def snapshot() -> dict:
        counts = {
            "packets": sum(d.packets for d in live),
            "late": sum(d.late for d in live),
            "lost": sum(d.lost for d in live),
        }
        for device in live:  # each window's lateness is its own, not what came before it
            device.rebase()
        return counts

    def start_probes() -> None:  # from the first mark on, inside the measured windows
        probing.extend(asyncio.create_task(probe_latency(d)) for d in live[:probes])

    await marks(snapshot, start_probes)
    measured = []
    if probing:
        done, pending = await asyncio.wait(probing, timeout=PROBES_AFTER_QUIT_S)
        for task in pending:
            task.cancel()
        measured = [task.result() for task in done]
    lost = Counter(d.lost_code for d in live if d.lost)
    result = {
        "devices": len(live),
        "failed": sum(failures.values()),
        "press_failed": press_failed,
        "lost_reasons": lost,
        "stop_ms": [ms for stops, _, _ in measured for ms in stops],
        "play_ms": [ms for _, plays, _ in measured for ms in plays],
        "probes_failed": sum(f for _, _, f in measured) + PROBE_ROUNDS * (len(probing) - len(measured)),
    }
    await asyncio.gather(*(d.close() for d in devices))
    return result


async def idle(pki_dir: Path, target: str, first: int, count: int) -> dict:
    devices = [Device(target, tls(pki_dir, first + i)) for i in range(count)]
    started = time.perf_counter()
    live, failures = await connect_all(devices)
    emit(
        "READY",
        {"devices": len(live), "failed": sum(failures.values()), "reasons": failures,
         "connect_s": time.perf_counter() - started},
    )  # fmt: skip
    await marks(lambda: {"lost": sum(d.lost for d in live), "status": sum(d.status_answered for d in live)})
    result = {"devices": len(live), "lost_reasons": Counter(d.lost_code for d in live if d.lost)}
    await asyncio.gather(*(d.close() for d in devices))
    return result


async def baseline(pki_dir: Path, target: str, first: int, count: int) -> dict:
    channels = [
        grpc.aio.secure_channel(target, channel_credentials(tls(pki_dir, first + i))) for i in range(count)
    ]
    received = 0
    ended: Counter[str] = Counter()

    async def drain(channel: grpc.aio.Channel) -> None:
        nonlocal received
        try:
            async for _ in pb_grpc.DeviceServiceStub(channel).ServerAudioStream(
                pb.AudioStreamRequest(start=True)
            ):
                received += 1
        except CALL_ENDED as exc:
            ended[reason(exc)] += 1
        except asyncio.CancelledError:
            pass

    tasks = [asyncio.create_task(drain(c)) for c in channels]
    await asyncio.sleep(1.0)
    settle_collector()
    emit("READY", {"devices": count - sum(ended.values()), "failed": sum(ended.values())})
    await marks(lambda: {"packets": received, "lost": sum(ended.values())})
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close()
    return {"devices": count, "lost_reasons": ended}


async def storm(pki_dir: Path, target: str, first: int, count: int, seconds: float, drop_self: bool) -> dict:
    """Reconnect loops like the Pi client's: on any failure, back off with full jitter, retry."""
    from device.backoff import Backoff

    reasons: Counter[str] = Counter()
    first_failures: Counter[str] = Counter()
    back: list[float] = []
    back_wall: list[float] = []
    failed_wall: list[float] = []
    connect_s: list[float] = []
    held: list[Device] = []
    settled: list[bool] = []
    all_settled = asyncio.Event()
    dropped = asyncio.Event()
    limit = asyncio.Semaphore(CONNECTS_AT_ONCE)
    loop = asyncio.get_running_loop()

    def settle(up: bool) -> None:
        settled.append(up)
        if len(settled) == count:
            all_settled.set()

    async def first_connect(index: int) -> Device | None:
        backoff, deadline = Backoff(), loop.time() + FIRST_CONNECT_DEADLINE_S
        while loop.time() < deadline:
            device = Device(target, tls(pki_dir, first + index))
            async with limit:
                why = await device.open(CONNECT_TIMEOUT_S)
            if why is None:
                return device
            first_failures[why] += 1
            await device.close()
            await asyncio.sleep(backoff.next_delay())
        return None

    async def one(index: int) -> None:
        device = await first_connect(index)
        settle(device is not None)
        if device is None:
            return
        await dropped.wait()
        if not drop_self:  # the server is restarting: its drain ends our streams
            await first_of(loop.create_future(), device.gone)
        await device.close()
        backoff = Backoff()
        while True:
            await asyncio.sleep(backoff.next_delay())
            device = Device(target, tls(pki_dir, first + index))
            attempt, attempt_wall = time.perf_counter(), time.time()
            why = await device.open(ATTEMPT_TIMEOUT_S, play=True)
            if why is None:
                back.append(time.perf_counter())
                back_wall.append(time.time())
                connect_s.append(back[-1] - attempt)
                held.append(device)  # it stays connected, as a device that came back does
                return
            reasons[why] += 1
            failed_wall.append(attempt_wall)  # when the failed attempt began
            await device.close()

    tasks = [asyncio.create_task(one(i)) for i in range(count)]
    await all_settled.wait()
    emit("READY", {"devices": sum(settled), "failed": count - sum(settled), "reasons": first_failures})
    commands = await stdin_reader()
    await commands.readline()  # "go"
    started, cpu_at_go = time.perf_counter(), cpu_seconds()
    dropped.set()
    await asyncio.wait(tasks, timeout=seconds)
    cpu_s, elapsed = cpu_seconds() - cpu_at_go, time.perf_counter() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.gather(*(d.close() for d in held))
    return {
        "cpu_s": cpu_s,
        "elapsed": elapsed,
        "devices": sum(settled),
        "back": len(back),
        "failures": sum(reasons.values()),
        "reasons": reasons,
        "delays": sorted(t - started for t in back),
        "back_wall": back_wall,
        "failed_wall": failed_wall,
        "connect_s": connect_s,
    }


async def run(argv: Sequence[str]) -> dict:
    kind, pki_text, target, first_text, count_text, seconds_text, *extra = argv
    pki_dir, first, count, seconds = Path(pki_text), int(first_text), int(count_text), float(seconds_text)
    asyncio.get_running_loop().set_exception_handler(quiet_handler)
    if kind == "baseline":
        return await baseline(pki_dir, target, first, count)
    if kind == "idle":
        return await idle(pki_dir, target, first, count)
    if kind in ("storm", "drop"):
        return await storm(pki_dir, target, first, count, seconds, drop_self=kind == "drop")
    if kind == "realtime":
        frame_ms = int(extra[0]) if extra else 20
        return await realtime(pki_dir, target, first, count, frame_ms, int(extra[1]) if len(extra) > 1 else 0)
    raise ValueError(f"unknown load kind {kind!r}")


def quiet_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A stray task's error is one line on stderr (kept by the orchestrator), not a traceback."""
    error = context.get("exception")
    detail = f"{type(error).__name__}: {error}" if error is not None else context.get("message", "")
    print(f"loadgen: {detail}", file=sys.stderr, flush=True)


def main() -> int:
    try:
        emit("RESULT", asyncio.run(run(sys.argv[1:])))
    except (Exception, KeyboardInterrupt) as exc:
        print(f"FAILED {type(exc).__name__}: {exc}".replace("\n", " ")[:500], flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
