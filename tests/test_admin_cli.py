"""``audio-admin`` end to end against a real server: list, watch, play, revoke, upload, audit."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from admin import cli as admin_cli
from admin.cli import main
from admin.settings import AdminSettings
from auth import pki as pki_lib
from auth.identity import DEFAULT_TRUST_DOMAIN
from auth.operators import OperatorIdentity, Role
from comms.cli import build_parser, load_settings
from device.audio_sink import RecordingSink
from server.app import AudioServer
from tests.conftest import Connect
from tests.helpers import EphemeralPki, wait_for
from tests.test_admin_api import wav_bytes

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def provision(pki: EphemeralPki, tenant: str | None, name: str, role: Role) -> None:
    """``name``'s certificate with ``role``, issued afresh: the PKI lives for the session, and a
    kept certificate would carry whatever role an earlier test gave that name."""
    operator = OperatorIdentity(name, role, tenant)
    cert, key = pki_lib.operator_paths(pki.root, operator)
    material = pki_lib.issue_operator_cert(pki.ca, operator, DEFAULT_TRUST_DOMAIN)
    pki_lib.write_certified_key(material, cert, key, force=True)


async def cli(server: AudioServer, pki: EphemeralPki, *args: str, who: str = "alice") -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "admin", "--server", f"127.0.0.1:{server.admin_port}",
        "--pki-dir", str(pki.root), "--tenant", "acme", "--operator", who, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ENV,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
def operators(pki: EphemeralPki) -> None:
    provision(pki, "acme", "alice", Role.ADMIN)
    provision(pki, "acme", "val", Role.VIEWER)


async def test_the_cli_lists_plays_uploads_revokes_and_audits(
    server: AudioServer, connect: Connect, pki: EphemeralPki, operators: None, tmp_path: Path
) -> None:
    sink = RecordingSink()
    async with connect(server, "acme", "dev-1", sink=sink) as device, connect(server, "globex", "dev-9"):
        await wait_for(lambda: device.status_requests >= 1)
        code, out, err = await cli(server, pki, "devices", "list")
        assert code == 0, err
        assert out.splitlines()[0].split()[:3] == ["DEVICE", "STATE", "NODE"]
        assert "dev-1" in out and "online" in out and "dev-9" not in out
        assert out.strip().endswith("1 devices, 1 online")
        code, out, _ = await cli(server, pki, "--json", "devices", "list")
        assert [(d["device_id"], d["online"]) for d in json.loads(out)] == [("dev-1", True)]

        code, out, err = await cli(server, pki, "devices", "play", "dev-1")
        assert code == 0 and out.startswith("played on dev-1"), err
        await wait_for(lambda: bool(sink.sounds))
        await server.fleet.idle()
        code, out, err = await cli(server, pki, "devices", "events", "dev-1")
        assert code == 0, err
        whats = [line.split(None, 2)[2].rsplit(None, 1)[0] for line in out.splitlines()[1:]]
        # Newest first. Mode 0 is a 0.6 s beep: on a busy machine "sound ended" may already be
        # there, so assert the causal order only: connected, then playing, then (maybe) ended.
        assert "connected" in whats and "playing mode 0" in whats, whats
        assert whats.index("connected") > whats.index("playing mode 0"), whats
        if "sound ended" in whats:
            assert whats.index("sound ended") < whats.index("playing mode 0"), whats

        sound = tmp_path / "chime.wav"
        sound.write_bytes(wav_bytes(0.5))
        code, out, err = await cli(server, pki, "sounds", "upload", "--mode", "2", str(sound))
        assert code == 0 and "chime.wav (0.5 s)" in out, err
        code, out, _ = await cli(server, pki, "sounds", "list")
        assert "uploaded" in out.splitlines()[3] and "chime.wav" in out

        code, _, err = await cli(server, pki, "devices", "revoke", "dev-1", who="val")
        assert code == 1
        assert (
            err.strip() == "audio-admin: permission denied: RevokeDevice needs the admin role; you are viewer"
        )
        code, out, err = await cli(server, pki, "devices", "revoke", "dev-1")
        assert code == 0 and out.startswith("revoked dev-1"), err
        await wait_for(lambda: len(device.ends) == 3)

    code, _, err = await cli(server, pki, "devices", "play", "dev-9")
    assert (code, err.strip()) == (1, "audio-admin: not found: device acme/dev-9 not found")
    code, _, err = await cli(server, pki, "devices", "stop", "dev-1")
    assert (code, err.strip()) == (1, "audio-admin: device offline")

    code, out, err = await cli(server, pki, "audit", "list")
    assert code == 0, err
    lines = out.splitlines()
    actions = [line.split()[4] for line in lines[1:]]
    assert actions[:4] == ["Stop", "Play", "RevokeDevice", "RevokeDevice"]
    assert "PERMISSION_DENIED" in lines[4] and "acme/operator/val" in lines[4]
    code, out, _ = await cli(server, pki, "--json", "audit", "list", "--refused")
    assert {e["result"] for e in json.loads(out)} == {"NOT_FOUND", "FAILED_PRECONDITION", "PERMISSION_DENIED"}


async def test_watch_prints_the_snapshot_then_changes(
    server: AudioServer, connect: Connect, pki: EphemeralPki, operators: None
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "admin", "--server", f"127.0.0.1:{server.admin_port}",
        "--pki-dir", str(pki.root), "--tenant", "acme", "--operator", "val",
        "--json", "devices", "list", "--watch",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ENV,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        first = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
        assert first["kind"] == "SNAPSHOT_END"
        async with connect(server, "acme", "dev-1"):
            update = json.loads(await asyncio.wait_for(process.stdout.readline(), 5))
            assert update["change"] == "connected" and update["device"]["device_id"] == "dev-1"
    finally:
        process.terminate()
        await process.wait()


def test_connection_settings_problems_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["devices", "list"]) == 1
    assert "name the operator" in capsys.readouterr().err
    missing = ["--pki-dir", str(tmp_path), "--tenant", "acme", "--operator", "nobody", "devices", "list"]
    assert main(missing) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("audio-admin: ") and len(err.splitlines()) == 1 and "nobody.crt" in err


@pytest.mark.parametrize(
    "args",
    [
        ["announce", "--selector", "all", "--mode", "1", "--priority", "-1"],
        ["announce", "--selector", "all", "--mode", "-3"],
        ["talk", "--selector", "all", "--priority", "99999999999", "a.wav"],
        ["schedules", "create", "--selector", "all", "--mode", "x", "--cron", "0 9 * * *"],
        ["devices", "mode", "dev-1", "-1"],
        ["enrollments", "create", "--count", "-5", "--prefix", "p-"],
        ["audit", "list", "--limit", "-1"],
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_a_negative_or_huge_number_is_a_usage_line_not_a_traceback(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Numbers go into uint32 fields: protobuf would raise ValueError (a traceback) on these."""
    assert main(["--tenant", "acme", "--operator", "alice", *args]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ("not a whole number" in err or "is outside 0.." in err), err


LEAF_COMMANDS = [
    ["devices", "list"],
    *[["devices", action, "dev-1"] for action in ("show", "events", "play", "stop", "disconnect")],
    ["devices", "revoke", "dev-1"],
    ["devices", "unrevoke", "dev-1"],
    ["devices", "mode", "dev-1", "2"],
    ["devices", "label", "dev-1", "zone=a"],
    ["sounds", "list"],
    ["sounds", "upload", "--mode", "1", "a.wav"],
    ["sounds", "reset", "--mode", "1"],
    ["audit", "list"],
    ["console", "login"],
    ["enrollments", "create", "--device", "dev-9"],
    ["enrollments", "list"],
    ["enrollments", "cancel", "0123456789abcdef"],
    ["enrollments", "claim", "show"],
    ["enrollments", "pending"],
    ["enrollments", "approve", "0123456789abcdef", "--device-id", "dev-9"],
    ["enrollments", "deny", "0123456789abcdef"],
    ["announce", "--selector", "all", "--mode", "1"],
    ["schedules", "create", "--selector", "all", "--mode", "1", "--cron", "0 9 * * *", "--tz", "UTC"],
    ["schedules", "list"],
    *[["schedules", action, "0123456789ab"] for action in ("show", "pause", "resume", "delete")],
    ["talk", "--selector", "all", "a.wav"],
]


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    found: set[tuple[str, ...]] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= _leaves(sub, (*path, name)) or {(*path, name)}
    return found


def test_every_command_is_listed_for_the_global_option_test() -> None:
    parser = build_parser(AdminSettings, "audio-admin", "", configure=admin_cli.configure)
    assert _leaves(parser) == {tuple(w for w in c[:2] if not w.startswith("-")) for c in LEAF_COMMANDS}


@pytest.mark.parametrize("command", LEAF_COMMANDS, ids=" ".join)
def test_global_options_work_after_the_command_too(command: list[str], tmp_path: Path) -> None:
    """Like kubectl and gh: ``audio-admin devices list --json`` once failed ("unrecognized arguments")."""
    options = [
        "--tenant",
        "acme",
        "--operator",
        "alice",
        "--pki-dir",
        str(tmp_path),
        "--timeout-s",
        "3",
        "--json",
    ]
    before, before_args = load_settings(
        AdminSettings, "audio-admin", [*options, *command], configure=admin_cli.configure
    )
    after, after_args = load_settings(
        AdminSettings, "audio-admin", [*command, *options], configure=admin_cli.configure
    )
    assert after == before and after.tenant == "acme" and after.timeout_s == 3
    assert vars(after_args) == vars(before_args) and after_args.json is True
    _, plain_args = load_settings(
        AdminSettings, "audio-admin", [*options[:-1], *command], configure=admin_cli.configure
    )
    assert plain_args.json is False  # no --json anywhere: tables
