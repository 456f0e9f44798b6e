"""Per-packet figures: the raw grpc.aio floor, the service with 1 and 2 workers at 20 ms and 60 ms
packets, the devices served in real time, latency under load, a reconnect storm after a restart.

The server's processes are pinned to half the cores and the load generators (processes of lean
devices) to the other half (bench.cores), so the server's CPU per delivered packet is read from
/proc on cores of its own; the generators' CPU is read too, and a figure is marked
generator-bound when they saturated their cores (a shortfall is then theirs, not the server's).
Each per-packet figure is three windows on one set-up, printed as median and range; its ratio
is taken from the medians, to the floor measured in the same run. Printed, never asserted.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auth import pki
from auth.identity import Identity
from auth.keys import create_signing_key
from bench.cores import CoreSplit, pin_process, split_cores
from bench.figures import (
    REPEATS,
    Spread,
    generator_bound,
    is_real_time,
    overload,
    percentile,
    processes,
    ratio,
    spread,
    verdict,
)
from bench.generators import Generators, Window, measure, merge, run_generators
from bench.procs import (
    ROOT,
    BenchError,
    Service,
    Stopped,
    cpu_seconds,
    free_port,
    redis_server,
    stop_process,
    wait_listening,
)

__all__ = ["free_port", "run_generators", "wait_listening", "write_pki"]  # bench.profile_server's

STORM_DEVICES = 1000
WINDOW_S = 5.0
ONE_WINDOW_S = 8.0
FLOOR_STREAMS = 40  # at full speed: the generators, not the streams, are its limit
# frame_ms: streams, as many as the scenarios' devices (the floor's cost per packet falls as its
# load rises: compared at another count, the ratio measures the load, not the service), and no
# more than one generator core drives without saturating (about 13,000 packets/s here)
PACED_FLOORS = {20: 200, 60: 600}
SETTLE_S = 2.0


def write_pki(root: Path, devices: int) -> Path:
    ca = pki.create_ca("Scale CA")
    server = pki.issue_server_cert(ca, ["localhost"], ["127.0.0.1"])
    pki.write_certified_key(ca, root / pki.CA_CERT, root / pki.CA_KEY, force=True)
    pki.write_certified_key(server, root / pki.SERVER_CERT, root / pki.SERVER_KEY, force=True)
    create_signing_key(root / "signing")
    for i in range(devices):
        identity = Identity("bench", f"d{i:04d}")
        pki.write_certified_key(
            pki.issue_device_cert(ca, identity), *pki.device_paths(root, identity), force=True
        )
    return root


@dataclass
class Scenario:
    label: str
    workers: int
    devices: int
    frame_ms: int
    probes: int = 0  # devices per generator that measure Stop -> is_end and Play -> first packet


@dataclass
class Measured:
    """Windows of one set-up, and what the generators said about it."""

    windows: list[Window]
    cores: CoreSplit
    processes: int
    connected: int = 0
    failed: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)
    stopped: Stopped | None = None

    @property
    def us(self) -> Spread:
        return spread([w.us_per_packet for w in self.windows])

    @property
    def rate(self) -> Spread:
        return spread([w.rate for w in self.windows])

    @property
    def generator_pct(self) -> Spread:
        return spread([w.generator_cpu_pct for w in self.windows])

    @property
    def generator_bound(self) -> bool:
        return generator_bound(self.generator_pct.median, len(self.cores.generators), self.processes)

    def server_pct(self) -> list[float]:
        """Per server process, the median over the windows."""
        per_window = [w.per_process_pct for w in self.windows]
        return [spread([row[i] for row in per_window]).median for i in range(len(per_window[0]))]

    def late_pct(self) -> float:
        return spread([w.late_pct for w in self.windows]).median

    def lost(self) -> int:
        return self.windows[-1].lost if self.windows else 0

    def values(self, key: str) -> list[float]:
        return sorted(v for r in self.results for v in r.get(key, []))

    def note(self) -> str:
        return self.stopped.note() if self.stopped is not None else ""


@dataclass(frozen=True)
class Floor:
    us: Spread
    measured: Measured
    frame_ms: int = 0  # 0: full speed; else one packet per stream every frame_ms
    streams: int = FLOOR_STREAMS

    @property
    def kind(self) -> str:
        return f"paced {self.frame_ms} ms" if self.frame_ms else "full speed"

    def show(self) -> str:
        return f"{self.us.median:.1f} us, {self.kind}"


Floors = dict[int, Floor]  # by frame_ms, 0 for full speed


def measure_floor(
    pki_dir: Path,
    cores: CoreSplit,
    windows: int = REPEATS,
    seconds: float = WINDOW_S,
    frame_ms: int = 0,
    streams: int = FLOOR_STREAMS,
) -> Floor:
    """The raw grpc.aio servicer, pinned like the service: CPU per delivered packet, at full speed
    or paced (one packet per stream every ``frame_ms``, as real-time audio must be sent)."""
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.baseline_server", str(pki_dir), *([str(frame_ms)] if frame_ms else [])],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    pin_process(server.pid, cores.server)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line.startswith("PORT "):
            raise BenchError(f"the baseline server did not start: {line.strip() or 'no output'}")
        target = f"127.0.0.1:{int(line.split()[1])}"
        with Generators("baseline", pki_dir, target, streams, 0, cores=cores.generators) as generators:
            generators.ready()
            time.sleep(SETTLE_S)  # every stream's handshake done before the first window
            found = measure(generators, lambda: {server.pid: cpu_seconds(server.pid)}, windows, seconds)
            measured = Measured(found, cores, generators.processes, generators.connected, generators.failed)
    finally:
        if server.stdin is not None:
            server.stdin.close()
        stop_process(server, timeout_s=10)
    return Floor(measured.us, measured, frame_ms, streams)


def show_floor(floor: Floor) -> str:
    m = floor.measured
    bound = "; generator-bound" if m.generator_bound else ""
    return (
        f"raw grpc.aio floor (mTLS, prebuilt packets, {floor.kind}, {floor.streams} streams): "
        f"{floor.us.show(1, ' us')} CPU/packet at {m.rate.median:,.0f} packets/s; "
        f"generators {m.generator_pct.median:.0f} % CPU{bound}"
    )


def measure_floors(pki_dir: Path, cores: CoreSplit) -> Floors:
    """The floor at full speed and paced at each frame size the scenarios use, each printed."""
    floors: Floors = {}
    for frame_ms, streams in ((0, FLOOR_STREAMS), *PACED_FLOORS.items()):
        try:
            floors[frame_ms] = measure_floor(pki_dir, cores, frame_ms=frame_ms, streams=streams)
        except Exception as exc:
            print(not_measured(f"raw grpc.aio floor ({'paced' if frame_ms else 'full speed'})", exc))
            continue
        print(f"  {show_floor(floors[frame_ms])}")
    return floors


def floor_for(floors: Floors, frame_ms: int) -> Floor | None:
    """The paced floor of that frame size (the like-for-like comparison), else the full-speed one."""
    return floors.get(frame_ms) or floors.get(0)


def run_service(
    pki_dir: Path,
    redis_url: str,
    scenario: Scenario,
    cores: CoreSplit,
    log_dir: Path,
    windows: int = REPEATS,
    seconds: float = WINDOW_S,
) -> Measured:
    service = Service(
        ["--pki-dir", str(pki_dir), "--state-backend", "redis", "--redis-url", redis_url,
         "--log-level", "WARNING", "--cache-dir", str(log_dir / "cache"), "--max-concurrent-streams", "8"],
        cores.server, log_dir / f"server-{scenario.workers}w-{scenario.devices}-{scenario.frame_ms}.log",
        workers=scenario.workers,
    )  # fmt: skip
    try:
        service.wait_ready()
        with Generators(
            "realtime", pki_dir, service.target, scenario.devices, 0, str(scenario.frame_ms),
            str(scenario.probes), cores=cores.generators,
        ) as generators:  # fmt: skip
            generators.ready()
            time.sleep(SETTLE_S)  # past the start of every sound: the windows see the steady state
            found = measure(generators, service.cpu, windows, seconds)
            measured = Measured(
                found,
                cores,
                generators.processes,
                generators.connected,
                generators.failed,
                generators.results(),
            )
    finally:
        stopped = service.stop()
    measured.stopped = stopped
    return measured


def describe_run(scenario: Scenario, m: Measured, floor: Floor | None) -> list[str]:
    """Two lines (three with a note): the cost per packet against the floor and the verdict, then
    the load: packets due (for every device asked for) vs delivered, lateness, CPU on each side."""
    due = scenario.devices * 1000 / scenario.frame_ms
    cost = m.us
    against = (
        f" = {ratio(cost.median, floor.us.median):.2f}x the floor ({floor.show()}, this run)"
        if floor is not None
        else ""
    )
    workers = " + ".join(f"{c:.0f} %" for c in m.server_pct())
    lost = f", {m.lost()} streams lost" if m.lost() else ""
    lines = [
        f"  {scenario.label}, {m.connected:5d} devices: {cost.show(1, ' us')}/packet{against} -> "
        f"{verdict(m.rate.median, due, m.late_pct(), m.generator_bound)}",
        f"      {overload(due, m.rate.median, m.failed)}{lost}, {m.late_pct():.2f} % > 50 ms late; "
        f"server {workers}; generators {m.generator_pct.show(0, ' %')} CPU ({processes(m.processes)})",
    ]
    if m.note():
        lines.append(f"      note: {m.note()}")
    return lines


def not_measured(label: str, exc: BaseException) -> str:
    detail = str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
    return f"  {label}: not measured: {detail}"


SCENARIOS = (  # loads one server core carries and one generator core drives: 10,000 packets/s
    Scenario("1 worker,  20 ms", 1, PACED_FLOORS[20], 20),
    Scenario("2 workers, 20 ms", 2, PACED_FLOORS[20], 20),
    Scenario("1 worker,  60 ms", 1, PACED_FLOORS[60], 60),
    Scenario("2 workers, 60 ms", 2, PACED_FLOORS[60], 60),
)
LATENCY = (  # 100 devices too: how the tail grows with the server core's load
    Scenario("1 worker,  100 devices", 1, 100, 20, probes=10),
    Scenario("1 worker,  200 devices", 1, 200, 20, probes=10),
    Scenario("2 workers, 200 devices", 2, 200, 20, probes=10),
)
REAL_TIME_SWEEP = {20: (300, 450, 600), 60: (900, 1200, 1500)}  # tried in turn until one fails


def workers_for(cores: CoreSplit) -> int:
    """One worker per server core: the sweep and the storm measure the server as deployed."""
    return max(1, len(cores.server))


def reconnect_storm(
    pki_dir: Path, redis_url: str, devices: int, cores: CoreSplit, log_dir: Path, timeout_s: float = 90.0
) -> dict[str, Any]:
    """Every device dropped at once by a server restart; the time until all play again."""
    port = free_port()
    args = ["--pki-dir", str(pki_dir), "--state-backend", "redis", "--redis-url", redis_url, "--log-level",
            "WARNING", "--shutdown-grace-s", "1", "--cache-dir", str(log_dir / "cache")]  # fmt: skip
    workers = workers_for(cores)
    servers = [Service(args, cores.server, log_dir / "storm-server-1.log", workers=workers, port=port)]
    stops: list[Stopped] = []
    try:
        servers[0].wait_ready()
        with Generators(
            "storm", pki_dir, servers[0].target, devices, timeout_s, cores=cores.generators
        ) as gens:
            gens.ready()
            gens.go()
            stops.append(servers[0].stop())  # drains: every device's streams end (UNAVAILABLE)
            restarted = time.perf_counter()
            servers.append(
                Service(args, cores.server, log_dir / "storm-server-2.log", workers=workers, port=port)
            )
            servers[1].wait_ready()
            listening = time.perf_counter() - restarted
            results = gens.results(timeout_s=timeout_s + 60, quit=False)
            connected = gens.connected
    finally:
        for server in servers:
            if server.stopped is None:
                stops.append(server.stop())
    delays = sorted(d for r in results for d in r["delays"])
    back = sum(r["back"] for r in results)
    return {
        "workers": workers,
        "devices": connected,
        "back": back,
        "failures": sum(r["failures"] for r in results),
        "median_s": percentile(delays, 0.5) - listening,
        "all_s": delays[-1] - listening if delays and back == connected else float("inf"),
        "reasons": merge(r.get("reasons") for r in results),
        "notes": [s.note() for s in stops if s.killed],
    }


def run(seconds: float = WINDOW_S, floors: Floors | None = None, pki_dir: Path | None = None) -> Floors:
    """The section; ``floors`` measured earlier in the same run (else measured here), ``pki_dir``
    with at least as many device certificates as any scenario here (else written here)."""
    cores = split_cores()
    print(f"\nScale-out, per-packet cost ({cores.describe()}; server CPU from /proc):")
    with tempfile.TemporaryDirectory() as tmp_text:
        tmp = Path(tmp_text)
        devices = max(STORM_DEVICES, *(s.devices for s in SCENARIOS), *PACED_FLOORS.values())
        pki_dir = pki_dir or write_pki(tmp / "pki", devices)
        with redis_server(tmp) as redis_port:
            if redis_port is None:
                print("  skipped: redis-server is not installed (workers share state through Redis)")
                return floors or {}
            if floors is None:
                floors = measure_floors(pki_dir, cores)
            else:
                for floor in floors.values():
                    print(f"  {show_floor(floor)}  (measured at the start of this run)")
            database = iter(range(1, 64))  # a Redis database each: fresh devices

            def url() -> str:
                return f"redis://127.0.0.1:{redis_port}/{next(database)}"

            for scenario in SCENARIOS:
                try:
                    m = run_service(pki_dir, url(), scenario, cores, tmp, seconds=seconds)
                except Exception as exc:
                    print(not_measured(f"{scenario.label}, {scenario.devices} devices", exc))
                    continue
                for line in describe_run(scenario, m, floor_for(floors, scenario.frame_ms)):
                    print(line)
            if cores.server and len(cores.server) < 2:
                print("  (2 workers share the server's one core here: their figure is the cost per packet of")
                print("   running 2 processes, not a scale-out; on more cores each side gets half of them)")
            for scenario in LATENCY:
                try:
                    m = run_service(pki_dir, url(), scenario, cores, tmp, windows=1, seconds=ONE_WINDOW_S)
                except Exception as exc:
                    print(not_measured(scenario.label, exc))
                    continue
                stops, plays = m.values("stop_ms"), m.values("play_ms")
                failed = sum(int(r.get("probes_failed", 0)) for r in m.results)
                bound = "; generator-bound" if m.generator_bound else ""
                load = " + ".join(f"{c:.0f} %" for c in m.server_pct())
                print(
                    f"  {scenario.label} ({m.connected} streaming, server {load} CPU): Play -> first packet "
                    f"{percentile(plays, 0.5):5.1f} / {percentile(plays, 0.99):5.1f} ms, Stop -> is_end "
                    f"{percentile(stops, 0.5):5.1f} / {percentile(stops, 0.99):5.1f} ms (median / p99, "
                    f"{len(plays)} probes, {failed} failed; generators {m.generator_pct.median:.0f} %{bound})"
                )
            for frame_ms, counts in REAL_TIME_SWEEP.items():
                print(f"  {sweep(pki_dir, url, frame_ms, counts, cores, tmp)}")
            try:
                storm = reconnect_storm(pki_dir, url(), STORM_DEVICES, cores, tmp)
            except Exception as exc:
                print(not_measured("reconnect storm after a restart", exc))
            else:
                print(
                    f"  reconnect storm: {storm['devices']} devices dropped at once by a restart "
                    f"({storm['workers']} worker(s)); "
                    f"from the new server listening, with the client's backoff, until each played again: "
                    f"median {storm['median_s']:.1f} s, all {storm['all_s']:.1f} s; {storm['back']} playing "
                    f"again, {storm['failures']} attempts failed {storm['reasons'] or ''}"
                )
                for note in storm["notes"]:
                    print(f"      note: {note}")
    return floors


def sweep(
    pki_dir: Path, url: Any, frame_ms: int, counts: tuple[int, ...], cores: CoreSplit, tmp: Path
) -> str:
    served, limit, workers = 0, "", workers_for(cores)
    for count in counts:
        try:
            m = run_service(
                pki_dir, url(), Scenario("", workers, count, frame_ms), cores, tmp, 1, ONE_WINDOW_S
            )
        except Exception as exc:
            limit = not_measured(f"{count} devices", exc).strip()
            break
        due = count * 1000 / frame_ms
        if is_real_time(m.rate.median, due, m.late_pct()):
            served = count
            continue
        who = "generator-bound" if m.generator_bound else f"server {sum(m.server_pct()):.0f} % CPU"
        limit = (
            f"at {count}: {100 * m.rate.median / max(due, 1):.1f} % delivered, {m.late_pct():.2f} % late, "
            f"{m.failed} connects failed; {who}"
        )
        break  # more devices would not do better
    return (
        f"devices served in real time (>= 99 % delivered, < 0.5 % > 50 ms late) by {workers} worker(s) at "
        f"{frame_ms} ms: {served} of {', '.join(map(str, counts))} tried" + (f" ({limit})" if limit else "")
    )


if __name__ == "__main__":
    sys.path[:0] = [str(ROOT), str(ROOT / "src")]
    run()
