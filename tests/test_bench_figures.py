"""The benchmark's own bookkeeping: how cores are split, how repeats and percentiles are summarised,
when a figure is called generator-bound, and that a load generator that cannot go on reports it
in one line instead of a traceback. No timings are asserted."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cores import split_cores
from bench.figures import generator_bound, overload, percentile, ratio, spread, verdict
from bench.generators import Generators, Window, merge
from bench.procs import BenchError, Stopped, errors_note, last_line

ROOT = Path(__file__).resolve().parent.parent


def test_two_cores_give_the_server_one_and_the_generators_the_other() -> None:
    split = split_cores({0, 1})
    assert (split.server, split.generators) == ({0}, {1})
    assert not split.shared
    assert split.describe() == "server pinned to core 0, load generators to core 1"


def test_more_cores_are_halved_and_an_odd_one_goes_to_the_generators() -> None:
    assert split_cores(range(4)).server == {0, 1}
    assert split_cores(range(4)).generators == {2, 3}
    assert (split_cores({2, 5, 7}).server, split_cores({2, 5, 7}).generators) == ({2}, {5, 7})
    assert "cores 5,7" in split_cores({2, 5, 7}).describe()


def test_a_single_core_is_shared_and_said_so() -> None:
    split = split_cores({3})
    assert split.shared and split.server == split.generators == {3}
    assert "not pinned apart" in split.describe()
    with pytest.raises(ValueError):
        split_cores(set())


def test_repeats_are_a_median_and_a_range() -> None:
    s = spread([41.0, 39.5, 44.0])
    assert (s.median, s.low, s.high, s.count) == (41.0, 39.5, 44.0, 3)
    assert s.show(1, " us") == "41.0 us (39.5-44.0, 3 runs)"
    assert spread([7.0]).show(0) == "7"  # a single value has no range to show


def test_a_repeat_that_measured_nothing_is_left_out_of_the_spread() -> None:
    s = spread([math.nan, 10.0, 12.0])
    assert (s.median, s.count) == (11.0, 2)
    assert math.isnan(spread([]).median) and spread([]).count == 0


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 51.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([5.0, 1.0], 0.0) == 1.0
    assert math.isnan(percentile([], 0.5))


def test_ratios_need_a_floor() -> None:
    assert ratio(40.0, 20.0) == 2.0
    assert math.isnan(ratio(40.0, 0.0)) and math.isnan(ratio(40.0, math.nan))


def test_generators_are_bound_above_ninety_percent_of_what_they_can_use() -> None:
    assert generator_bound(95.0, cores=1, processes=1)
    assert not generator_bound(85.0, cores=1, processes=1)
    assert not generator_bound(150.0, cores=2, processes=2)  # 150 of 200
    assert generator_bound(185.0, cores=2, processes=2)
    assert generator_bound(95.0, cores=1, processes=4)  # four processes on one core: still one core
    assert generator_bound(95.0, cores=4, processes=1)  # one process uses one core at most


def test_a_shortfall_with_saturated_generators_is_theirs() -> None:
    assert verdict(delivered=20_000, due=20_000, late_pct=0.1, bound=False) == "real time"
    assert verdict(delivered=15_000, due=20_000, late_pct=0.1, bound=False) == "NOT real time"
    assert verdict(delivered=20_000, due=20_000, late_pct=3.0, bound=False) == "NOT real time"
    assert verdict(delivered=15_000, due=20_000, late_pct=0.1, bound=True) == "generator-bound"
    assert verdict(delivered=20_000, due=20_000, late_pct=0.1, bound=True) == "real time (generator-bound)"


def test_an_overload_reads_as_packets_due_and_delivered() -> None:
    assert (
        overload(20_000, 18_200, 3) == "delivered 18,200 of 20,000 packets/s due (91.0 %), 3 connects failed"
    )
    assert overload(100, 100, 0) == "delivered 100 of 100 packets/s due (100.0 %)"


def test_a_window_without_packets_has_no_cost_per_packet() -> None:
    window = Window(
        seconds=5.0, server_cpu_s={1: 1.0, 2: 0.5}, generator_cpu_s=4.5, packets=0, late=0, lost=0, status=0
    )
    assert math.isnan(window.us_per_packet)
    assert window.late_pct == 0.0
    assert window.server_cpu_pct == 30.0 and window.per_process_pct == [20.0, 10.0]
    assert window.generator_cpu_pct == 90.0
    busy = Window(5.0, {1: 0.2}, 1.0, packets=10_000, late=50, lost=0, status=0)
    assert busy.us_per_packet == pytest.approx(20.0) and busy.late_pct == pytest.approx(0.5)


def test_reasons_from_several_generators_add_up() -> None:
    assert merge([{"timed out": 2}, None, {"timed out": 1, "UNAVAILABLE": 4}]) == {
        "timed out": 3,
        "UNAVAILABLE": 4,
    }


def test_a_server_killed_after_sigterm_is_a_note_with_its_last_log_line() -> None:
    assert Stopped(1.2, killed=False).note() == ""
    note = Stopped(30.0, killed=True, last_log='{"event":"store.recovered"}').note()
    assert note.startswith("the server did not exit within 30 s of SIGTERM and was killed")
    assert "store.recovered" in note


def test_a_server_log_is_summarised_by_its_error_events(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text(
        "audio-server listening on 127.0.0.1:1 (port 1, mTLS)\n"
        + '{"ts":"t1","level":"error","event":"request.internal_error","exc":"Traceback..."}\n' * 3
        + '{"ts":"t2","level":"warning","event":"fleet.outbox_full"}\n'
        + '{"ts":"t3","level":"error","event":"store.unavailable"}\n'
    )
    assert errors_note(log) == "server log: 4 errors (request.internal_error 3, store.unavailable 1)"
    assert last_line(log) == "error store.unavailable (at t3)"  # not the whole JSON line
    quiet = tmp_path / "quiet.log"
    quiet.write_text('{"level":"info","event":"server.stopped"}\n')
    assert errors_note(quiet) == ""
    assert errors_note(tmp_path / "absent.log") == ""


def test_a_generator_that_cannot_go_on_fails_in_one_line_without_a_traceback(tmp_path: Path) -> None:
    with Generators(
        "no-such-load", tmp_path, "127.0.0.1:9", 2, 0, cores=split_cores().generators
    ) as generators:
        with pytest.raises(
            BenchError, match=r"load generator 0 failed before being ready: ValueError: unknown load"
        ):
            generators.ready(timeout_s=60)
        stderr = generators.stderr[0].read_text()
    assert "Traceback" not in stderr


def test_the_generator_prints_failed_and_exits_1_on_its_own(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.loadgen_proc", "no-such-load", str(tmp_path), "127.0.0.1:9", "0", "1",
         "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stdout.splitlines() == ["FAILED ValueError: unknown load kind 'no-such-load'"]
    assert "Traceback" not in result.stderr
