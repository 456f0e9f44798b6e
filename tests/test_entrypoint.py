"""``python -m server``: settings, start-up failures (exit 1, one clear line), graceful SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from comms.cli import SettingsError, load_settings
from device.settings import DeviceSettings
from server.runtime.settings import ServerSettings
from tests.conftest import Connect
from tests.helpers import MODE, PLAY, EphemeralPki, free_port, wait_for

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "reference"
SETTINGS_PAGE = {"server": REFERENCE / "server-settings.md", "device": REFERENCE / "device-settings.md"}


def run_server(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )


def test_settings_from_env_and_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AUDIO_SERVER_MODE_COUNT", "7")
    monkeypatch.setenv("AUDIO_SERVER_PKI_DIR", str(tmp_path))
    monkeypatch.setenv("AUDIO_SERVER_LOG_LEVEL", "debug")  # any case
    settings, _ = load_settings(ServerSettings, "audio-server", ["--bind", "127.0.0.1:6000"])
    assert settings.mode_count == 7 and settings.bind == "127.0.0.1:6000"
    assert settings.server_cert == tmp_path / "server.crt"
    assert settings.client_ca == tmp_path / "ca.crt"
    assert settings.log_level == "DEBUG"
    flag_wins, _ = load_settings(ServerSettings, "audio-server", ["--mode-count", "9"])
    assert flag_wins.mode_count == 9  # flag > environment


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode-count", "3"], "bad setting --mode-count: Input should be greater than or equal to 5"),
        (["--bind", "nonsense"], "bad setting --bind:"),
        (["--trust-domain", "Bad Domain"], "bad setting --trust-domain:"),
        (["--audio-lead-ms", "-5"], "bad setting --audio-lead-ms:"),
        (["--max-calls-per-device", "6"], "bad setting --max-calls-per-device: Input should be greater than"),
        (["--no-such-flag", "1"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_bad_setting_exits_1_with_one_line(args: list[str], message: str) -> None:
    result = run_server(*args)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_a_bad_value_is_named_as_the_user_set_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AUDIO_SERVER_TOKEN_TTL_S", "0")
    with pytest.raises(SettingsError, match=r"^bad setting AUDIO_SERVER_TOKEN_TTL_S: "):
        load_settings(ServerSettings, "audio-server", [])
    monkeypatch.delenv("AUDIO_SERVER_TOKEN_TTL_S")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("AUDIO_SERVER_TOKEN_TTL_S=-1\n")
    with pytest.raises(SettingsError, match=r"^bad setting AUDIO_SERVER_TOKEN_TTL_S \(in .env\): "):
        load_settings(ServerSettings, "audio-server", [])


@pytest.mark.parametrize("where", ["environment", ".env"])
@pytest.mark.parametrize(
    ("cls", "typo", "suggestion"),
    [
        (ServerSettings, "AUDIO_SERVER_TOKEN_TTL", "AUDIO_SERVER_TOKEN_TTL_S"),
        (ServerSettings, "AUDIO_SERVER_LOGLEVEL", "AUDIO_SERVER_LOG_LEVEL"),
        (DeviceSettings, "AUDIO_DEVICE_JITTER", "AUDIO_DEVICE_JITTER_MS"),
    ],
)
def test_a_misspelled_setting_stops_start_up_with_a_suggestion(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, where: str, cls: type, typo: str, suggestion: str
) -> None:
    monkeypatch.chdir(tmp_path)
    if where == "environment":
        monkeypatch.setenv(typo, "60")
    else:
        (tmp_path / ".env").write_text(f"{typo}=60\n")
    with pytest.raises(SettingsError) as info:
        load_settings(cls, "prog", [])
    source = "the environment" if where == "environment" else ".env"
    assert str(info.value) == f"unknown setting {typo} in {source}; did you mean {suggestion}?"


def test_a_misspelled_env_setting_exits_1_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**ENV, "AUDIO_SERVER_TOKEN_TTL": "60"},
    )
    assert result.returncode == 0  # --help still works (argparse answers first)
    result = run_server_env({"AUDIO_SERVER_TOKEN_TTL": "60"})
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "audio-server: unknown setting AUDIO_SERVER_TOKEN_TTL in the environment; "
        "did you mean AUDIO_SERVER_TOKEN_TTL_S?"
    )


def run_server_env(extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server"], capture_output=True, text=True, timeout=30, env={**ENV, **extra_env}
    )


@pytest.mark.parametrize(("module", "cls"), [("server", ServerSettings), ("device", DeviceSettings)])
def test_help_reads_like_the_settings_reference(module: str, cls: type) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**ENV, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps lines wherever it likes
    for bad in ("default factory", "<lambda>", "{Path,null}", "(default: null)", "default: None"):
        assert bad not in text
    for name in cls.model_fields:  # every setting: its flag, its env var
        assert f"--{name.replace('_', '-')}" in text
        assert f"Env: {cls.model_config['env_prefix']}{name.upper()}." in text
    prefix = cls.model_config["env_prefix"]
    documented = re.findall(
        rf"^\| `{prefix}[A-Z0-9_]+` \| `(--[a-z0-9-]+)`", SETTINGS_PAGE[module].read_text(), re.MULTILINE
    )
    assert documented, "the settings reference lists flags"
    for documented_flag in documented:  # every flag the reference documents
        assert documented_flag in text
    if module == "device":
        assert "--simulate" in text  # the device guide's main way to try the device
    else:
        assert "Range: 5 to 16." in text  # --mode-count


def test_missing_certificate_exits_1_with_one_line(tmp_path: Path) -> None:
    result = run_server("--pki-dir", str(tmp_path), "--bind", "127.0.0.1:0", "--state-backend", "memory")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("audio-server: cannot start: certificate not found"), result.stderr
    assert "Traceback" not in result.stderr


def test_key_mismatch_exits_1(tmp_path: Path, pki: EphemeralPki) -> None:
    other = EphemeralPki(tmp_path / "other")
    mismatched = tmp_path / "mixed"
    mismatched.mkdir()
    for name in ("ca.crt", "server.crt"):
        (mismatched / name).write_bytes((pki.root / name).read_bytes())
    (mismatched / "server.key").write_bytes((other.root / "server.key").read_bytes())
    result = run_server("--pki-dir", str(mismatched), "--bind", "127.0.0.1:0", "--state-backend", "memory")
    assert result.returncode == 1
    assert "does not match" in result.stderr and "Traceback" not in result.stderr


async def test_sigterm_ends_streams_with_unavailable_and_exits_0(
    pki: EphemeralPki, tmp_path: Path, connect: Connect
) -> None:
    """Devices streaming, SIGTERM: each hears its sound end, then UNAVAILABLE; exit 0; no secrets logged."""
    import json
    from contextlib import AsyncExitStack

    port = free_port()
    args = [
        "--pki-dir",
        str(pki.root),
        "--bind",
        f"127.0.0.1:{port}",
        "--state-backend",
        "memory",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--log-format",
        "json",
        "--health-bind",
        "127.0.0.1:0",
        "--metrics-bind",
        "",
        "--admin-bind",
        "127.0.0.1:0",
        "--shutdown-grace-s",
        "5",
    ]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", *args, stderr=asyncio.subprocess.PIPE, env=ENV
    )
    lines: list[bytes] = []
    try:
        assert process.stderr is not None
        while b"server.listening" not in (line := await asyncio.wait_for(process.stderr.readline(), 60)):
            lines.append(line)

        class Target:
            pass

        app = Target()
        app.port = port  # type: ignore[attr-defined]
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(connect(app, "acme", f"term-{i}")) for i in range(2)]  # type: ignore[arg-type]
            for client in clients:
                await client.press(MODE)
                await client.press(PLAY)
            await wait_for(lambda: all(c.packets_received > 3 for c in clients))
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            for client in clients:
                await wait_for(lambda c=client: len(c.ends) == 3, timeout=10)  # type: ignore[misc]
                assert {end.code for end in client.ends.values()} == {grpc.StatusCode.UNAVAILABLE}
                assert client.sink.sounds[0].ended  # type: ignore[attr-defined]  # is_end came first
            tokens = [c.session.token for c in clients if c.session]
        assert await asyncio.wait_for(process.wait(), 15) == 0
        assert time.monotonic() - signalled < 5 + 2
        rest = (await process.stderr.read()).splitlines()
        log_lines = [line for line in [*lines, *rest] if line.startswith(b"{")]
        events = [json.loads(line) for line in log_lines]
        assert "server.stopped" in {e["event"] for e in events}
        (settled,) = [e for e in events if e["event"] == "server.heap_settled"]
        assert settled["frozen_objects"] > 10_000  # the library and modules: out of the collector's way
        assert settled["gc_thresholds"][:2] == [5000, 50]  # collected less often than Python's 700, 10
        opened = [e for e in events if e["event"] == "stream.open"]
        assert opened and {"tenant", "device", "session", "stream"} <= set(opened[0])
        text = b"\n".join([*lines, *rest]).decode()
        for token in tokens:
            assert token not in text and token.split(".")[2] not in text  # no token, not even its signature
        assert "PRIVATE KEY" not in text
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize("which", ["--bind", "--health-bind", "--metrics-bind", "--admin-bind"])
def test_a_taken_port_stops_start_up_with_one_line(which: str, pki: EphemeralPki) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = f"127.0.0.1:{holder.getsockname()[1]}"
        binds = {
            "--bind": "127.0.0.1:0",
            "--health-bind": "127.0.0.1:0",
            "--metrics-bind": "127.0.0.1:0",
            "--admin-bind": "127.0.0.1:0",
        }
        binds[which] = taken
        args = [arg for pair in binds.items() for arg in pair]
        result = run_server("--pki-dir", str(pki.root), "--state-backend", "memory", *args)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"audio-server: cannot start: cannot listen on {taken}"), result.stderr
    assert "address already in use" in line


SRC = Path(__file__).resolve().parent.parent / "src"
WITHOUT_GPIOZERO = (  # as if gpiozero were not installed: importing it raises ImportError
    "import sys; sys.modules['gpiozero'] = None; "
    "from device.__main__ import main; sys.exit(main(sys.argv[1:]))"
)


def device_without_gpiozero(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_GPIOZERO, *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_device_help_works_without_the_device_dependencies() -> None:
    """The server image has no gpiozero: ``audio-device --help`` once only said it was missing."""
    shown = device_without_gpiozero("--help")
    assert shown.returncode == 0, shown.stderr
    assert "--simulate" in shown.stdout and "pi-audio-service[device]" in shown.stdout
    refused = device_without_gpiozero("--simulate")
    assert refused.returncode == 78
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]  # one line
    assert "device dependencies are not installed" in refused.stderr
