"""Store lost / restored: one line at each edge (server.state.outage), as the guard reports it."""

from __future__ import annotations

import logging

import pytest

from auth.identity import Identity
from server.state.guard import StoreGuard
from server.state.outage import BUS, PRESENCE, STORE, Outage
from tests.helpers import sample, wait_for
from tests.test_store_guard_batches import RecordingStore

log = logging.getLogger(__name__)


def events(caplog: pytest.LogCaptureFixture) -> list[tuple[str, int]]:
    return [(r.getMessage(), r.levelno) for r in caplog.records if r.name == __name__]


def test_each_edge_is_logged_once_and_a_second_outage_again(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    outage = Outage(BUS, log)
    assert not outage.restored(node="n1")  # nothing was lost: no line
    assert outage.lost(error="ConnectionError: refused")
    assert not outage.lost(error="ConnectionError: refused")  # the same outage: quiet
    assert outage.ongoing
    assert outage.restored(node="n1")
    assert not outage.restored(node="n1")
    assert outage.lost(error="TimeoutError")  # a new outage is a new line
    assert events(caplog) == [
        ("bus.lost", logging.WARNING),
        ("bus.restored", logging.WARNING),
        ("bus.lost", logging.WARNING),
    ]
    (first, *_) = [r for r in caplog.records if r.name == __name__]
    assert first.error == "ConnectionError: refused"  # type: ignore[attr-defined]


def test_the_event_names_alerts_use() -> None:
    assert (STORE.lost, STORE.restored, STORE.lost_level) == (
        "store.unavailable",
        "store.recovered",
        logging.ERROR,
    )
    assert (BUS.lost, BUS.restored) == ("bus.lost", "bus.restored")
    assert (PRESENCE.lost, PRESENCE.restored) == ("presence.lost", "presence.restored")


async def test_the_guard_reports_an_outage_once_however_often_its_writer_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="server.state.guard")
    store = RecordingStore()  # down until told otherwise
    health: list[bool] = []
    guard = StoreGuard(store, retry_s=0.01, on_health=health.append)
    before = sample("audio_store_errors_total", op="save")
    guard.start()
    try:
        guard.mode_later(Identity("acme", "dev-1"), None, 2)
        await wait_for(lambda: sample("audio_store_errors_total", op="save") >= before + 5)  # retried
        assert not guard.healthy and health == [False]
        store.down = False
        await wait_for(lambda: guard.healthy and guard.pending == 0)
        assert health == [False, True]
    finally:
        await guard.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "server.state.guard"]
    assert lines.count("store.unavailable") == 1 and lines.count("store.recovered") == 1
    record = await store.load(Identity("acme", "dev-1"))
    assert record is not None and record.mode == 2
