"""Announce with real servers (issue 21): two replicas on a real Redis, real devices decoding real Opus.

An announcement reaches exactly the matching online devices of the tenant, on whichever replica they
are; it preempts and the interrupted sound resumes where it was cut; priorities; Stop ends it on one
device only; a device that connects later never plays it; roles and scope, audited.
"""

from __future__ import annotations

import io
import json
from array import array
from pathlib import Path
from typing import TypeAlias

import grpc
import numpy as np
import numpy.typing as npt
import pytest
import soundfile
import soxr

from auth.identity import Identity
from auth.operators import Role
from comms.audio_format import SAMPLES_PER_FRAME
from comms.gen import admin_pb2 as apb
from device.audio_sink import RecordingSink
from device.client import DeviceClient
from server.app import AudioServer
from tests.conftest import Admin, Connect, ServerFactory
from tests.helpers import MODE, PLAY, STOP, EphemeralPki, best_offset, heard_clip, wait_for
from tests.redis_server import RedisServer
from tests.test_admin_api import ref, refused
from tests.test_admin_cli import cli, provision
from tests.test_admin_replicas import replica_pair
from tests.test_fleet import held_by
from tests.test_operator_robustness import audit_events

Samples: TypeAlias = (
    "npt.NDArray[np.int16] | array[int]"  # a clip's numpy PCM, or the device sink's array('h')
)
CHIRP, MELODY, BEEP = 2, 1, 0  # the built-in sounds of modes 2 (2 s), 1 (64 s) and 0 (0.6 s)
NOT_FOUND, INVALID = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT
SKIP = 5  # frames at the start of a resumed sound left out of the comparison (the decoder settles)


async def online(app: AudioServer, device: DeviceClient, tenant: str, device_id: str) -> None:
    """Held by ``app`` with its audio stream attached (packets from now on reach it)."""
    await held_by(app, device)
    identity = Identity(tenant, device_id)

    def attached() -> bool:
        controller = app.registry.controller(identity)
        return controller is not None and controller.player.sink is not None

    await wait_for(attached)


def labelled(device: str, **labels: str) -> apb.SetLabelsRequest:
    return apb.SetLabelsRequest(
        device=ref(device), set=[apb.Label(key=k, value=v) for k, v in labels.items()]
    )


def clip_pcm(app: AudioServer, mode: int) -> npt.NDArray[np.int16]:
    return app.sounds.library.clip_for(mode).pcm


def sounds_like(heard: Samples, clip: Samples, frames: int = 20) -> bool:
    """The last ``frames`` of what a device heard are a part of ``clip`` (a loaded machine may make
    a stream skip a few late packets at the start; the sound is still the clip)."""
    tail = heard[-(frames + 2) * SAMPLES_PER_FRAME : -2 * SAMPLES_PER_FRAME]  # the fade-out frame left out
    return len(tail) == frames * SAMPLES_PER_FRAME and best_offset(tail, clip)[1] > 0.9


async def test_an_announcement_reaches_exactly_the_matching_online_devices_of_the_tenant_on_both_replicas(
    redis_server: RedisServer, server_factory: ServerFactory, connect: Connect, admin: Admin
) -> None:
    a, b = await replica_pair(server_factory, redis_server)
    async with connect(a, "acme", "kitchen-3"):
        pass  # seen once, offline now
    sinks = {name: RecordingSink() for name in ("kitchen-1", "kitchen-2", "hall-1", "globex")}
    async with (
        connect(a, "acme", "kitchen-1", sink=sinks["kitchen-1"]) as k1,
        connect(b, "acme", "kitchen-2", sink=sinks["kitchen-2"]) as k2,
        connect(a, "acme", "hall-1", sink=sinks["hall-1"]) as hall,
        connect(b, "globex", "kitchen-1", sink=sinks["globex"]) as theirs,
        admin(b, "acme", role="operator") as ops,
        admin(a, "globex", role="operator") as globex,
    ):
        for node, device, tenant, name in (
            (a, k1, "acme", "kitchen-1"), (b, k2, "acme", "kitchen-2"), (a, hall, "acme", "hall-1"),
            (b, theirs, "globex", "kitchen-1"),
        ):  # fmt: skip
            await online(node, device, tenant, name)
        for device in ("kitchen-1", "kitchen-2", "kitchen-3"):
            await ops.SetLabels(labelled(device, zone="kitchen"))
        await ops.SetLabels(labelled("hall-1", zone="hall"))
        await globex.SetLabels(labelled("kitchen-1", zone="kitchen"))
        result = await ops.Announce(apb.AnnounceRequest(selector="zone=kitchen", mode=CHIRP))
        assert (result.targeted, list(result.started), list(result.offline), list(result.refused)) == (
            3, ["kitchen-1", "kitchen-2"], ["kitchen-3"], []
        )  # fmt: skip
        assert result.sound == "mode 2 (built-in)"
        heard = [sinks["kitchen-1"], sinks["kitchen-2"]]
        await wait_for(lambda: all(s.sounds and s.sounds[0].ended for s in heard), timeout=6)
        for sink in heard:
            assert len(sink.sounds) == 1
            assert sounds_like(sink.sounds[0].pcm, clip_pcm(a, CHIRP))
        starts = [s.sounds[0].arrivals[0] for s in heard]
        assert not sinks["hall-1"].sounds and not sinks["globex"].sounds  # by the time both heard it all
        nothing = await ops.Announce(apb.AnnounceRequest(selector="zone=garage", mode=CHIRP))
        assert (nothing.targeted, list(nothing.started)) == (0, [])  # a clear "0 devices", not an error
    print(f"first-packet spread over two replicas: {abs(starts[0] - starts[1]) * 1000:.1f} ms")
    events = [e for e in await audit_events(b) if e.action == "Announce"]
    assert [e.result for e in events] == ["OK", "OK"]
    assert events[1].target == "zone=kitchen"
    assert events[1].parameters["started_ids"] == ["kitchen-1", "kitchen-2"]
    assert events[1].parameters["offline_ids"] == ["kitchen-3"]
    assert (events[1].parameters["targeted"], events[1].parameters["started"]) == (3, 2)
    assert events[0].parameters["targeted"] == 0


async def test_the_interrupted_sound_resumes_where_it_was_cut(
    server: AudioServer, connect: Connect, admin: Admin
) -> None:
    sink = RecordingSink()
    async with connect(server, "acme", "dev-1", sink=sink) as device, admin(server, role="operator") as ops:
        await online(server, device, "acme", "dev-1")
        await device.press(MODE)  # mode 1: the 64 s melody
        await device.press(PLAY)
        await wait_for(lambda: bool(sink.sounds) and sink.sounds[0].packets >= 75, timeout=5)
        result = await ops.Announce(apb.AnnounceRequest(device_ids=["dev-1"], mode=CHIRP))
        assert list(result.started) == ["dev-1"]
        await wait_for(lambda: len(sink.sounds) == 3 and sink.sounds[2].packets >= SKIP + 100, timeout=8)
        cut, announced, resumed = sink.sounds
        assert cut.ended and announced.ended and not resumed.ended  # the framing: is_end, is_start
        assert sounds_like(announced.pcm, clip_pcm(server, CHIRP))
        got = cut.packets - 1  # the frames of the melody the device played before the fade-out frame
        needle = resumed.pcm[SKIP * SAMPLES_PER_FRAME : (SKIP + 100) * SAMPLES_PER_FRAME]
        melody = clip_pcm(server, MELODY)[: 30 * 48_000]
        offset, score = best_offset(needle, melody)
        assert score > 0.9
        expected = (got + SKIP) * SAMPLES_PER_FRAME
        assert abs(offset - expected) < 2 * SAMPLES_PER_FRAME, (offset, expected)  # not from the start
        await device.press(STOP)
    async with admin(server, role="operator") as ops:
        no_resume = RecordingSink()
        async with connect(server, "acme", "dev-2", sink=no_resume) as other:
            await online(server, other, "acme", "dev-2")
            await other.press(MODE)
            await other.press(PLAY)
            await wait_for(lambda: bool(no_resume.sounds) and no_resume.sounds[0].packets >= 25)
            await ops.Announce(apb.AnnounceRequest(device_ids=["dev-2"], mode=BEEP, no_resume=True))
            await wait_for(lambda: len(no_resume.sounds) == 2 and no_resume.sounds[1].ended, timeout=5)
            controller = server.registry.controller(Identity("acme", "dev-2"))
            assert controller is not None
            await wait_for(lambda: controller.state.playing is None)  # idle: the melody did not come back
            assert len(no_resume.sounds) == 2


async def test_a_higher_priority_preempts_and_an_equal_or_lower_one_is_refused(
    server: AudioServer, connect: Connect, admin: Admin
) -> None:
    sink = RecordingSink()
    async with connect(server, "acme", "dev-1", sink=sink) as device, admin(server, role="operator") as ops:
        await online(server, device, "acme", "dev-1")
        first = await ops.Announce(apb.AnnounceRequest(device_ids=["dev-1"], mode=MELODY, priority=5))
        assert list(first.started) == ["dev-1"]
        for priority in (5, 3, 0):
            again = await ops.Announce(
                apb.AnnounceRequest(device_ids=["dev-1"], mode=CHIRP, priority=priority)
            )
            assert (list(again.started), list(again.refused)) == ([], ["dev-1"]), priority
        assert len(sink.sounds) == 1 and not sink.sounds[0].ended  # the first one plays on
        higher = await ops.Announce(apb.AnnounceRequest(device_ids=["dev-1"], mode=CHIRP, priority=7))
        assert list(higher.started) == ["dev-1"]
        await wait_for(lambda: len(sink.sounds) == 2 and sink.sounds[1].ended, timeout=5)
        assert sink.sounds[0].ended  # preempted: faded out with is_end
        assert sounds_like(sink.sounds[1].pcm, clip_pcm(server, CHIRP))
        controller = server.registry.controller(Identity("acme", "dev-1"))
        assert controller is not None
        await wait_for(lambda: controller.state.playing is None)  # the preempted one does not come back
    refusals = [e for e in await audit_events(server) if e.action == "Announce"]
    assert [e.parameters["refused"] for e in refusals] == [0, 1, 1, 1, 0]


async def test_stop_on_one_device_ends_the_announcement_there_only(
    server: AudioServer, connect: Connect, admin: Admin
) -> None:
    sinks = [RecordingSink(), RecordingSink()]
    async with (
        connect(server, "acme", "dev-1", sink=sinks[0]) as one,
        connect(server, "acme", "dev-2", sink=sinks[1]) as two,
        admin(server, role="operator") as ops,
    ):
        await online(server, one, "acme", "dev-1")
        await online(server, two, "acme", "dev-2")
        await one.press(MODE)
        await one.press(PLAY)  # dev-1 played the melody before: Stop must not bring it back
        await wait_for(lambda: bool(sinks[0].sounds))
        result = await ops.Announce(apb.AnnounceRequest(device_ids=["dev-1", "dev-2"], mode=MELODY))
        assert list(result.started) == ["dev-1", "dev-2"]
        await wait_for(lambda: len(sinks[0].sounds) == 2 and sinks[1].sounds[0].packets >= 10)
        await one.press(STOP)
        await wait_for(lambda: sinks[0].sounds[1].ended, timeout=2)
        at_stop = sinks[1].sounds[0].packets
        await wait_for(lambda: sinks[1].sounds[0].packets >= at_stop + 25, timeout=3)  # dev-2 plays on
        assert not sinks[1].sounds[0].ended
        shown = await ops.GetDevice(ref("dev-1"))
        assert not shown.HasField("playing")  # idle, nothing resumed
        assert len(sinks[0].sounds) == 2
        assert (await ops.GetDevice(ref("dev-2"))).HasField("playing")


async def test_a_device_that_connects_later_does_not_play_a_stale_announcement(
    server: AudioServer, connect: Connect, admin: Admin
) -> None:
    async with connect(server, "acme", "late-1"):
        pass
    async with admin(server, role="operator") as ops:
        await ops.SetLabels(labelled("late-1", zone="kitchen"))
        result = await ops.Announce(apb.AnnounceRequest(selector="zone=kitchen", mode=MELODY))
        assert (list(result.offline), list(result.started)) == (["late-1"], [])
        sink = RecordingSink()
        async with connect(server, "acme", "late-1", sink=sink) as device:
            await online(server, device, "acme", "late-1")
            await device.press(PLAY)  # mode 0: the beep, and only that
            await wait_for(lambda: bool(sink.sounds) and sink.sounds[0].ended)
            assert len(sink.sounds) == 1
            assert heard_clip(sink.sounds[0].pcm, clip_pcm(server, BEEP))


async def test_an_uploaded_sound_is_announced_by_its_name(
    server: AudioServer, connect: Connect, admin: Admin
) -> None:
    from tests.test_admin_api import _upload_chunks, wav_bytes

    sink = RecordingSink()
    async with connect(server, "acme", "dev-1", sink=sink) as device, admin(server, role="operator") as ops:
        await online(server, device, "acme", "dev-1")
        await ops.UploadSound(_upload_chunks(3, wav_bytes(1.0, freq=660.0)))  # "tone.wav"
        result = await ops.Announce(apb.AnnounceRequest(device_ids=["dev-1"], sound_name="tone"))
        assert result.sound == "tone.wav" and list(result.started) == ["dev-1"]
        await wait_for(lambda: bool(sink.sounds) and sink.sounds[0].ended)
        uploaded = await server.sounds.clip("acme", 3)
        assert sounds_like(sink.sounds[0].pcm, uploaded.pcm)
        error = await refused(ops.Announce(apb.AnnounceRequest(device_ids=["dev-1"], sound_name="nope")))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert error.details() == "no uploaded sound is named 'nope' (uploads: tone.wav)"


async def test_a_clip_sent_with_the_call_plays_and_no_mode_sound_changes(
    server: AudioServer, connect: Connect, admin: Admin, pki: EphemeralPki, tmp_path: Path
) -> None:
    from tests.test_admin_api import wav_bytes

    provision(pki, "acme", "alice", Role.OPERATOR)
    sink = RecordingSink()
    clip = tmp_path / "doorbell.wav"
    clip.write_bytes(wav_bytes(1.0, freq=740.0))
    async with connect(server, "acme", "dev-1", sink=sink) as device, admin(server, role="operator") as ops:
        await online(server, device, "acme", "dev-1")
        code, out, err = await cli(
            server, pki, "announce", "--device", "dev-1", "--file", str(clip), "--json"
        )
        assert code == 0, err
        result = json.loads(out)
        assert (result["sound"], result["started"]) == ("doorbell.wav", ["dev-1"])
        await wait_for(lambda: bool(sink.sounds) and sink.sounds[0].ended)
        samples, rate = soundfile.read(io.BytesIO(clip.read_bytes()), dtype="float32")
        tone = (soxr.resample(samples, rate, 48_000) * 32767).astype(np.int16)
        assert heard_clip(sink.sounds[0].pcm, tone)
        sounds = await ops.ListSounds(apb.ListSoundsRequest())
        assert {s.source for s in sounds.sounds} == {"builtin"}  # no mode's sound was replaced
        for bad, reason in ((b"not audio", "not a readable audio file"), (b"", "the file is empty")):
            error = await refused(ops.Announce(apb.AnnounceRequest(device_ids=["dev-1"], clip=bad)))
            assert error.code() == INVALID and error.details().startswith(reason), error.details()
        big = tmp_path / "long.wav"
        big.write_bytes(b"\0" * (3 * 1024 * 1024 + 1))
        code, _, err = await cli(server, pki, "announce", "--device", "dev-1", "--file", str(big))
        assert code == 1 and "larger than 3 MiB: upload it (sounds upload)" in err
        error = await refused(
            ops.Announce(apb.AnnounceRequest(device_ids=["dev-1"], clip=b"\0" * (3 * 1024 * 1024 + 1)))
        )
        assert (error.code(), error.details()) == (
            INVALID,
            f"the file is {3 * 1024 * 1024 + 1} bytes; at most 3145728",
        )
    assert len(sink.sounds) == 1  # the refused clips played nothing
    events = [e for e in await audit_events(server, "acme") if e.action == "Announce"]
    assert [e.result for e in events] == ["INVALID_ARGUMENT"] * 3 + ["OK"]  # newest first
    assert events[-1].parameters["sound"] == "doorbell.wav"


@pytest.mark.parametrize(
    ("who", "request_", "code"),
    [
        (("acme", "viewer"), apb.AnnounceRequest(selector="all", mode=0), grpc.StatusCode.PERMISSION_DENIED),
        (("acme", "operator"), apb.AnnounceRequest(tenant="globex", selector="all", mode=0), NOT_FOUND),
        (("acme", "operator"), apb.AnnounceRequest(device_ids=["dev-9"], mode=0), grpc.StatusCode.NOT_FOUND),
        ((None, "operator"), apb.AnnounceRequest(selector="all", mode=0), grpc.StatusCode.INVALID_ARGUMENT),
        (("acme", "operator"), apb.AnnounceRequest(selector="all"), grpc.StatusCode.INVALID_ARGUMENT),
        (("acme", "operator"), apb.AnnounceRequest(mode=0), grpc.StatusCode.INVALID_ARGUMENT),
        (("acme", "operator"), apb.AnnounceRequest(selector="all", mode=0, priority=10), INVALID),
    ],
    ids=["viewer", "other tenant", "other tenant's device", "platform without tenant", "no sound",
         "no targets", "priority 10"],
)  # fmt: skip
async def test_role_and_scope_refusals_play_nothing_and_are_audited(
    server: AudioServer,
    connect: Connect,
    admin: Admin,
    who: tuple[str | None, str],
    request_: apb.AnnounceRequest,
    code: grpc.StatusCode,
) -> None:
    theirs = RecordingSink()
    async with connect(server, "acme", "dev-1"), connect(server, "globex", "dev-9", sink=theirs) as victim:
        await online(server, victim, "globex", "dev-9")
        tenant, role = who
        async with admin(server, tenant, role=role, name="caller") as ops:
            error = await refused(ops.Announce(request_))
        assert error.code() == code
        await victim.press(PLAY)  # the victim's next sound is its own beep: nothing was announced to it
        await wait_for(lambda: bool(theirs.sounds) and theirs.sounds[0].ended, timeout=15)
        assert len(theirs.sounds) == 1
    events = [e for e in await audit_events(server, tenant or "") if e.action == "Announce"]
    if tenant is None:
        assert server.audit is not None
        events = [e for e in (await server.audit.list(None, 100))[0] if e.action == "Announce"]
    assert [e.result for e in events] == [code.name]
    assert events[0].operator.endswith("/operator/caller")


async def test_the_cli_announces_and_prints_the_outcome_per_device(
    server: AudioServer, connect: Connect, admin: Admin, pki: EphemeralPki
) -> None:
    provision(pki, "acme", "alice", Role.OPERATOR)
    async with connect(server, "acme", "off-1"):
        pass
    sink = RecordingSink()
    async with connect(server, "acme", "dev-1", sink=sink) as device, admin(server, role="operator") as ops:
        await online(server, device, "acme", "dev-1")
        for name in ("dev-1", "off-1"):
            await ops.SetLabels(labelled(name, zone="kitchen"))
        code, out, err = await cli(server, pki, "announce", "--selector", "zone=kitchen", "--mode", "2")
        assert code == 0, err
        head, *table = out.strip().splitlines()
        assert head.endswith("(mode 2 (built-in)) at " + head.split(" at ")[1])
        assert head.split(": ", 1)[1] == "2 targeted, 1 started, 1 offline, 0 refused"
        assert [line.split()[:2] for line in table] == [
            ["DEVICE", "RESULT"],
            ["dev-1", "started"],
            ["off-1", "offline"],
        ]
        await wait_for(lambda: bool(sink.sounds) and sink.sounds[0].ended, timeout=5)
        code, out, err = await cli(
            server, pki, "announce", "--device", "dev-1", "--mode", "0", "--priority", "3", "--json"
        )
        assert code == 0, err
        result = json.loads(out)
        assert result["started"] == ["dev-1"] and result["targeted"] == 1
        code, out, _ = await cli(server, pki, "announce", "--selector", "zone=garage", "--mode", "0")
        assert (code, out.strip()) == (0, "0 devices match zone=garage: nothing played")
        code, _, err = await cli(server, pki, "announce", "--selector", "zone", "--mode", "0")
        assert code == 1 and err.strip() == "audio-admin: invalid: 'zone' is not key=value"
        code, _, err = await cli(
            server, pki, "announce", "--selector", "all", "--mode", "0", "--priority", "12"
        )
        assert code == 1 and err.strip() == "audio-admin: invalid: priority 12 is outside 0..9"
