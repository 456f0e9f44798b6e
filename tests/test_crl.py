"""Revocation fails closed: a CRL that disappears, is garbage, is signed by another CA or is older
than the one in force is refused (the old one stays, logged, counted, readiness flagged); a stale
CRL is enforced and reported; a start without the CRL the fleet has seen is refused."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from auth import pki as pki_lib
from auth.errors import RevocationListMissing, RevocationListOlder
from auth.revocation import RevocationList, read_revocations, revoke
from comms.tasks import cancel_and_wait
from server.access.crl_record import CrlRecorder, remember, remembered
from server.access.trust import CRL_PROBLEM
from server.app import AudioServer, start_server
from server.audio.library import AudioLibrary
from server.state.shared_data import MemoryData
from tests.conftest import ServerFactory, make_settings
from tests.helpers import EphemeralPki, reload_attempt, sample, wait_for
from tests.test_entrypoint import ENV
from tests.test_security import FAST_RELOAD, create_session

DENIED = grpc.StatusCode.PERMISSION_DENIED


def serial(pki: EphemeralPki, device: str) -> int:
    return pki.device("acme", device).cert.serial_number


async def refused(app: AudioServer, pki: EphemeralPki, device: str) -> bool:
    try:
        await create_session(app.port, pki.device_tls("acme", device))
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == DENIED, exc
        return True
    return False


@pytest.fixture
def crl(tmp_path: Path, pki: EphemeralPki) -> Path:
    """A CRL that revokes acme/stolen, in place before the server starts."""
    path = tmp_path / "crl.pem"
    revoke(pki.ca, path, [serial(pki, "stolen")])
    return path


async def test_deleting_the_crl_keeps_revoked_devices_out(
    server_factory: ServerFactory, pki: EphemeralPki, crl: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = await server_factory(crl_path=crl, reload_interval_s=FAST_RELOAD)
    assert await refused(app, pki, "stolen")
    kept = crl.read_bytes()
    before = sample("audio_crl_reload_failures_total", reason="missing")
    await reload_attempt(app.watchers, "crl", crl.unlink, ok=False)
    assert await refused(app, pki, "stolen")  # still out after the watcher ran
    assert not await refused(app, pki, "fine")
    assert sample("audio_crl_reload_failures_total", reason="missing") == before + 1
    assert CRL_PROBLEM in app.readiness.problems and not app.readiness.serving
    (line,) = [r for r in caplog.records if r.getMessage() == "reload.failed"]
    assert line.levelno == logging.ERROR and line.reason == "missing"  # type: ignore[attr-defined]
    await reload_attempt(app.watchers, "crl", lambda: crl.write_bytes(kept), ok=True)
    assert CRL_PROBLEM not in app.readiness.problems  # a good CRL clears it
    assert await refused(app, pki, "stolen")


def garbage(pki: EphemeralPki, path: Path) -> None:
    path.write_bytes(b"-----BEGIN X509 CRL-----\nnot a crl\n-----END X509 CRL-----\n")


def other_ca(pki: EphemeralPki, path: Path) -> None:
    """Signed by a CA with the fleet CA's name but another key: lists nothing of ours."""
    impostor = pki_lib.create_ca(pki.ca.cert.subject.rfc4514_string().split("=", 1)[1])
    path.unlink()
    revoke(impostor, path, [])


def older(pki: EphemeralPki, path: Path) -> None:
    """A rollback: the CRL before the current one (lower CRL number), which did not list stolen."""
    path.write_bytes(path.with_suffix(".first").read_bytes())


@pytest.mark.parametrize(
    ("change", "reason"), [(garbage, "unreadable"), (other_ca, "signature"), (older, "older")]
)
async def test_a_bad_new_crl_is_refused_and_the_old_one_enforced(
    server_factory: ServerFactory,
    pki: EphemeralPki,
    tmp_path: Path,
    change: object,
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    crl = tmp_path / "crl.pem"
    revoke(pki.ca, crl, [serial(pki, "early")])  # CRL #1 (does not list stolen)
    crl.with_suffix(".first").write_bytes(crl.read_bytes())
    revoke(pki.ca, crl, [serial(pki, "stolen")])  # CRL #2, in force
    app = await server_factory(crl_path=crl, reload_interval_s=FAST_RELOAD)
    assert app.trust.revocations.number == 2
    before = sample("audio_crl_reload_failures_total", reason=reason)
    await reload_attempt(app.watchers, "crl", lambda: change(pki, crl), ok=False)  # type: ignore[operator]
    assert sample("audio_crl_reload_failures_total", reason=reason) == before + 1
    assert app.trust.revocations.number == 2
    assert await refused(app, pki, "stolen") and await refused(app, pki, "early")
    assert app.trust.crl_problem == reason and CRL_PROBLEM in app.readiness.problems
    (line,) = [r for r in caplog.records if r.getMessage() == "reload.failed"]
    assert line.reason == reason  # type: ignore[attr-defined]


async def test_a_crl_past_its_next_update_is_enforced_and_reported(
    server_factory: ServerFactory, pki: EphemeralPki, crl: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = await server_factory(crl_path=crl, reload_interval_s=FAST_RELOAD)
    assert app.trust.check_crl_fresh()
    assert app.trust.revocations.next_update is not None
    later = app.trust.revocations.next_update + dt.timedelta(seconds=1)
    assert not app.trust.check_crl_fresh(later)  # goes stale while in force: reported
    assert [r.getMessage() for r in caplog.records].count("crl.stale") == 1
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    side = crl.with_suffix(".new")  # a CRL whose nextUpdate has passed already (made elsewhere)
    revoke(
        pki.ca, side, [serial(pki, "stolen"), serial(pki, "late")], now=past, validity=dt.timedelta(days=1)
    )
    await reload_attempt(app.watchers, "crl", lambda: side.replace(crl), ok=True)
    assert await refused(app, pki, "late") and await refused(app, pki, "stolen")  # still enforced
    assert CRL_PROBLEM not in app.readiness.problems
    stale_at = sample("audio_crl_next_update_timestamp_seconds")
    assert stale_at < dt.datetime.now(dt.UTC).timestamp()
    assert [r.getMessage() for r in caplog.records].count("crl.stale") == 2


async def test_start_without_the_fleets_crl_is_refused(
    pki: EphemeralPki, library: AudioLibrary, tmp_path: Path, crl: Path
) -> None:
    settings = make_settings(pki, tmp_path, crl_path=crl, state_backend="sqlite")
    first = await start_server(settings, library)  # remembers CRL #1 (one revoked) in the store
    await first.stop(grace_s=0)
    kept = crl.read_bytes()
    revoke(pki.ca, crl, [serial(pki, "second")])  # #2: seen by a server, remembered
    second = await start_server(settings, library)
    await second.stop(grace_s=0)
    crl.write_bytes(kept)
    with pytest.raises(RevocationListOlder, match="older than the newest this fleet has loaded"):
        await start_server(settings, library)
    crl.unlink()
    with pytest.raises(RevocationListMissing, match="revokes 2 certificate"):
        await start_server(settings, library)
    result = subprocess.run(  # the real entry point: one line, exit 1
        [
            *(sys.executable, "-m", "server", "--pki-dir", str(pki.root), "--crl-path", str(crl)),
            *("--state-backend", "sqlite", "--state-path", str(settings.state_path)),
            *("--bind", "127.0.0.1:0", "--health-bind", "", "--admin-bind", "", "--metrics-bind", ""),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("audio-server: cannot start: CRL not found") and "restore crl.pem" in last
    assert "Traceback" not in result.stderr


async def test_start_without_a_crl_is_allowed_when_nothing_was_revoked(
    pki: EphemeralPki, library: AudioLibrary, tmp_path: Path
) -> None:
    crl = tmp_path / "crl.pem"
    revoke(pki.ca, crl, [])  # a CRL that lists nothing
    settings = make_settings(pki, tmp_path, crl_path=crl, state_backend="sqlite")
    app = await start_server(settings, library)
    await app.stop(grace_s=0)
    crl.unlink()
    app = await start_server(settings, library)
    try:
        assert app.trust.crl_missing and CRL_PROBLEM not in app.readiness.problems
    finally:
        await app.stop(grace_s=0)


async def test_a_reloaded_crl_is_remembered_by_the_fleet(pki: EphemeralPki, tmp_path: Path) -> None:
    data = MemoryData()
    recorder = CrlRecorder(data)
    task = asyncio.create_task(recorder.run())
    try:
        crl = tmp_path / "crl.pem"
        recorder.note(revoke(pki.ca, crl, [serial(pki, "x")]))
        await wait_for(lambda: recorder.written == 1)
        recorder.note(revoke(pki.ca, crl, [serial(pki, "y")]))
        await wait_for(lambda: recorder.written == 2)
    finally:
        await cancel_and_wait(task)
    mark = await remembered(data)
    assert mark is not None and (mark.number, mark.revoked) == (2, 2)
    first = read_revocations(crl, [pki.ca.cert])
    older_one = RevocationList(first.serials, first.issued_at, 1, None, first.issuer_key)
    await remember(data, older_one)  # an older CRL never replaces the mark
    assert (await remembered(data)) == mark
