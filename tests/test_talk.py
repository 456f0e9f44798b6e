"""Push-to-talk over gRPC (issue 21): real servers, two replicas on a real Redis, real devices decoding
real Opus.

A talk reaches every targeted device on whichever replica it is, live; it preempts what plays and the
interrupted sound resumes; one talker per device (busy); a caller that goes away, the maximum length
and a bad frame each end the sound with is_end on every device; roles and scope, audited.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import numpy as np
import numpy.typing as npt
import pytest

from auth.identity import Identity
from auth.operators import Role
from comms.audio_format import SAMPLES_PER_FRAME
from comms.gen import admin_pb2 as apb
from device.audio_sink import RecordingSink
from server.app import AudioServer
from tests.conftest import Admin, Connect, ServerFactory
from tests.helpers import MODE, PLAY, EphemeralPki, best_offset, heard_clip, wait_for
from tests.redis_server import RedisServer
from tests.test_admin_api import refused, talk_requests
from tests.test_admin_cli import cli, provision
from tests.test_admin_replicas import replica_pair
from tests.test_announce import MELODY, SKIP, clip_pcm, labelled, online
from tests.test_operator_robustness import audit_events

FRAME_BYTES = SAMPLES_PER_FRAME * 2


def voice(seconds: float) -> npt.NDArray[np.int16]:
    """Something to say: a chirp that never repeats (every 100 ms window fits one place only)."""
    t = np.arange(int(seconds * 48_000)) / 48_000
    sweep = np.sin(2 * np.pi * (200 * t + 900 * t**2 / seconds))
    return (0.5 * sweep * 32767).astype(np.int16)


async def held(release: asyncio.Event, start: apb.TalkStart) -> AsyncIterator[apb.TalkRequest]:
    """A talk held open until ``release``: silence-free frames of a tone, in real time."""
    yield apb.TalkRequest(start=start)
    tone = voice(1.0)
    index = 0
    while not release.is_set():
        at = (index % 50) * SAMPLES_PER_FRAME
        yield apb.TalkRequest(pcm=tone[at : at + SAMPLES_PER_FRAME].tobytes())
        index += 1
        await asyncio.sleep(0.02)
    yield apb.TalkRequest(end=True)


def playing(app: AudioServer, device: str) -> int | None:
    controller = app.registry.controller(Identity("acme", device))
    assert controller is not None
    return controller.state.playing


async def test_a_talk_reaches_the_targeted_devices_on_both_replicas_live(
    redis_server: RedisServer, server_factory: ServerFactory, connect: Connect, admin: Admin
) -> None:
    a, b = await replica_pair(server_factory, redis_server)
    sinks = {name: RecordingSink() for name in ("kitchen-1", "kitchen-2", "hall-1")}
    async with (
        connect(a, "acme", "kitchen-1", sink=sinks["kitchen-1"]) as k1,
        connect(b, "acme", "kitchen-2", sink=sinks["kitchen-2"]) as k2,
        connect(a, "acme", "hall-1", sink=sinks["hall-1"]) as hall,
        admin(b, "acme", role="operator") as ops,
    ):
        for node, device, name in ((a, k1, "kitchen-1"), (b, k2, "kitchen-2"), (a, hall, "hall-1")):
            await online(node, device, "acme", name)
        for name in ("kitchen-1", "kitchen-2"):
            await ops.SetLabels(labelled(name, zone="kitchen"))
        said = voice(2.0)
        call = ops.Talk(talk_requests(apb.TalkStart(selector="zone=kitchen"), said))
        metadata = dict(await call.initial_metadata())
        assert (metadata["talk-started"], metadata["talk-offline"]) == ("2", "0")
        result = await call
        assert (result.targeted, list(result.started), list(result.busy)) == (
            2,
            ["kitchen-1", "kitchen-2"],
            [],
        )
        assert (result.ended, result.frames) == ("released", 100)
        heard = [sinks["kitchen-1"], sinks["kitchen-2"]]
        await wait_for(lambda: all(s.sounds and s.sounds[0].ended for s in heard), timeout=5)
        for sink in heard:
            assert len(sink.sounds) == 1
            assert heard_clip(sink.sounds[0].pcm, said)
        assert not sinks["hall-1"].sounds
        await wait_for(lambda: playing(a, "kitchen-1") is None and playing(b, "kitchen-2") is None)
        assert a.talks.live == b.talks.live == 0
    events = [e for e in await audit_events(b) if e.action == "Talk"]
    assert [e.result for e in events] == ["OK"]
    assert events[0].target == "zone=kitchen"
    assert events[0].parameters["started_ids"] == ["kitchen-1", "kitchen-2"]
    assert (events[0].parameters["ended"], events[0].parameters["frames"]) == ("released", 100)
    assert events[0].parameters["seconds"] >= 1.9


async def test_a_talk_preempts_and_the_interrupted_sound_resumes_where_it_was_cut(
    server: AudioServer, connect: Connect, admin: Admin
) -> None:
    sink = RecordingSink()
    async with connect(server, "acme", "dev-1", sink=sink) as device, admin(server, role="operator") as ops:
        await online(server, device, "acme", "dev-1")
        await device.press(MODE)  # mode 1: the 64 s melody
        await device.press(PLAY)
        await wait_for(lambda: bool(sink.sounds) and sink.sounds[0].packets >= 75, timeout=5)
        said = voice(1.0)
        result = await ops.Talk(talk_requests(apb.TalkStart(device_ids=["dev-1"]), said))
        assert list(result.started) == ["dev-1"]
        await wait_for(lambda: len(sink.sounds) == 3 and sink.sounds[2].packets >= SKIP + 100, timeout=8)
        cut, talked, resumed = sink.sounds
        assert cut.ended and talked.ended and not resumed.ended
        assert heard_clip(talked.pcm, said)
        got = cut.packets - 1
        needle = resumed.pcm[SKIP * SAMPLES_PER_FRAME : (SKIP + 100) * SAMPLES_PER_FRAME]
        offset, score = best_offset(needle, clip_pcm(server, MELODY)[: 30 * 48_000])
        assert score > 0.9
        assert abs(offset - (got + SKIP) * SAMPLES_PER_FRAME) < 2 * SAMPLES_PER_FRAME, offset


async def test_a_second_talker_is_busy_on_a_device_in_a_talk_and_refused_if_all_are(
    server: AudioServer, connect: Connect, admin: Admin
) -> None:
    sinks = [RecordingSink(), RecordingSink()]
    async with (
        connect(server, "acme", "dev-1", sink=sinks[0]) as one,
        connect(server, "acme", "dev-2", sink=sinks[1]) as two,
        admin(server, role="operator", name="first") as first,
        admin(server, role="operator", name="second") as second,
    ):
        await online(server, one, "acme", "dev-1")
        await online(server, two, "acme", "dev-2")
        release = asyncio.Event()
        talking = first.Talk(held(release, apb.TalkStart(device_ids=["dev-1"])))
        assert dict(await talking.initial_metadata())["talk-started"] == "1"
        await wait_for(lambda: bool(sinks[0].sounds) and sinks[0].sounds[0].packets >= 5)
        for priority in (0, 9):  # whatever its priority
            all_busy = await refused(
                second.Talk(talk_requests(apb.TalkStart(device_ids=["dev-1"], priority=priority), voice(0.2)))
            )
            assert all_busy.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert all_busy.details() == (
                "busy: every targeted device that is online is in another talk (dev-1)"
            )
        partly = await second.Talk(talk_requests(apb.TalkStart(device_ids=["dev-1", "dev-2"]), voice(0.5)))
        assert (list(partly.started), list(partly.busy)) == (["dev-2"], ["dev-1"])
        await wait_for(lambda: bool(sinks[1].sounds) and sinks[1].sounds[0].ended)
        assert len(sinks[0].sounds) == 1 and not sinks[0].sounds[0].ended  # the first talk goes on
        release.set()
        result = await talking
        assert (result.ended, list(result.started)) == ("released", ["dev-1"])
        await wait_for(lambda: sinks[0].sounds[0].ended)
    events = [e for e in reversed(await audit_events(server)) if e.action == "Talk"]  # oldest first
    assert [e.result for e in events] == ["FAILED_PRECONDITION", "FAILED_PRECONDITION", "OK", "OK"]
    assert events[2].parameters["busy_ids"] == ["dev-1"]


async def test_a_talk_whose_caller_goes_away_ends_on_every_device_with_is_end(
    redis_server: RedisServer, server_factory: ServerFactory, connect: Connect, admin: Admin
) -> None:
    a, b = await replica_pair(server_factory, redis_server)
    sinks = [RecordingSink(), RecordingSink()]
    async with (
        connect(a, "acme", "dev-1", sink=sinks[0]) as one,
        connect(b, "acme", "dev-2", sink=sinks[1]) as two,
        admin(a, role="operator", name="gone") as ops,
    ):
        await online(a, one, "acme", "dev-1")
        await online(b, two, "acme", "dev-2")
        call = ops.Talk(held(asyncio.Event(), apb.TalkStart(device_ids=["dev-1", "dev-2"])))
        await wait_for(lambda: all(s.sounds and s.sounds[0].packets >= 10 for s in sinks), timeout=5)
        call.cancel()
        await wait_for(lambda: all(s.sounds[0].ended for s in sinks), timeout=2)
        await wait_for(lambda: playing(a, "dev-1") is None and playing(b, "dev-2") is None)
        assert a.talks.live == b.talks.live == 0
    for _ in range(200):  # the audit of a cancelled call is written as the handler ends
        events = [e for e in await audit_events(a) if e.action == "Talk"]
        if events:
            break
        await asyncio.sleep(0.02)
    assert [e.parameters["ended"] for e in events] == ["caller_gone"]
    assert events[0].result in ("CANCELLED", "OK")  # cancelled as it streamed, or its stream just stopped


async def test_a_node_whose_talk_hears_nothing_ends_it_by_itself(
    redis_server: RedisServer, server_factory: ServerFactory, connect: Connect, admin: Admin
) -> None:
    a, b = await replica_pair(server_factory, redis_server)
    sink = RecordingSink()
    async with connect(b, "acme", "dev-1", sink=sink) as device, admin(a, role="operator") as ops:
        await online(b, device, "acme", "dev-1")
        talk = await a.talks.open("acme", ["dev-1"], 0, True)  # the caller's node, then silence
        assert talk.outcome.started == ["dev-1"]
        await talk.send(voice(0.02).tobytes())
        await wait_for(lambda: bool(sink.sounds) and sink.sounds[0].ended, timeout=3)  # b's idle rule
        assert b.talks.live == 0
        talk.end()
        del ops


async def test_a_talk_ends_at_the_maximum_length(
    server_factory: ServerFactory, connect: Connect, admin: Admin
) -> None:
    server = await server_factory(talk_max_s=0.5)
    sink = RecordingSink()
    async with connect(server, "acme", "dev-1", sink=sink) as device, admin(server, role="operator") as ops:
        await online(server, device, "acme", "dev-1")
        result = await ops.Talk(held(asyncio.Event(), apb.TalkStart(device_ids=["dev-1"])))
        assert result.ended == "max_length" and 0.4 < result.seconds < 5
        await wait_for(lambda: bool(sink.sounds) and sink.sounds[0].ended)
        await wait_for(lambda: playing(server, "dev-1") is None)


async def test_a_frame_of_the_wrong_size_is_refused_and_the_talk_ends_cleanly(
    server: AudioServer, connect: Connect, admin: Admin
) -> None:
    sink = RecordingSink()

    async def frames() -> AsyncIterator[apb.TalkRequest]:
        yield apb.TalkRequest(start=apb.TalkStart(device_ids=["dev-1"]))
        for _ in range(10):
            yield apb.TalkRequest(pcm=voice(0.02).tobytes())
            await asyncio.sleep(0.02)
        yield apb.TalkRequest(pcm=b"\0" * 1764)  # 44.1 kHz frames

    async with connect(server, "acme", "dev-1", sink=sink) as device, admin(server, role="operator") as ops:
        await online(server, device, "acme", "dev-1")
        error = await refused(ops.Talk(frames()))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details() == (
            "a talk frame is 20 ms of 48 kHz mono 16-bit PCM: 1920 bytes (960 samples), not 1764"
        )
        await wait_for(lambda: bool(sink.sounds) and sink.sounds[0].ended)
        await wait_for(lambda: playing(server, "dev-1") is None)
        rate = await refused(ops.Talk(talk_requests(apb.TalkStart(device_ids=["dev-1"], sample_rate=16_000))))
        assert rate.details() == "talk frames are 48000 Hz, not 16000: resample them first"
        assert len(sink.sounds) == 1
    events = [e for e in await audit_events(server) if e.action == "Talk"]
    assert [(e.result, e.parameters.get("ended")) for e in events] == [
        ("INVALID_ARGUMENT", None),  # newest first
        ("INVALID_ARGUMENT", "bad_frame"),
    ]


@pytest.mark.parametrize(
    ("who", "start", "code"),
    [
        (("acme", "viewer"), apb.TalkStart(selector="all"), grpc.StatusCode.PERMISSION_DENIED),
        (("acme", "operator"), apb.TalkStart(tenant="globex", selector="all"), grpc.StatusCode.NOT_FOUND),
        (("acme", "operator"), apb.TalkStart(device_ids=["dev-9"]), grpc.StatusCode.NOT_FOUND),
        ((None, "operator"), apb.TalkStart(selector="all"), grpc.StatusCode.INVALID_ARGUMENT),
        (("acme", "operator"), apb.TalkStart(), grpc.StatusCode.INVALID_ARGUMENT),
        (("acme", "operator"), apb.TalkStart(selector="all", priority=10), grpc.StatusCode.INVALID_ARGUMENT),
    ],
    ids=["viewer", "other tenant", "other tenant's device", "platform without tenant", "no targets",
         "priority 10"],
)  # fmt: skip
async def test_talk_role_and_scope_refusals_reach_nobody_and_are_audited(
    server: AudioServer,
    connect: Connect,
    admin: Admin,
    who: tuple[str | None, str],
    start: apb.TalkStart,
    code: grpc.StatusCode,
) -> None:
    theirs = RecordingSink()
    async with connect(server, "acme", "dev-1"), connect(server, "globex", "dev-9", sink=theirs) as victim:
        await online(server, victim, "globex", "dev-9")
        tenant, role = who
        async with admin(server, tenant, role=role, name="caller") as ops:
            error = await refused(ops.Talk(talk_requests(start, voice(0.2))))
        assert error.code() == code
        await victim.press(PLAY)  # its next sound is its own beep: nothing was said to it
        await wait_for(lambda: bool(theirs.sounds) and theirs.sounds[0].ended, timeout=15)
        assert len(theirs.sounds) == 1
    assert server.audit is not None
    events = [e for e in (await server.audit.list(tenant, 100))[0] if e.action == "Talk"]
    assert [e.result for e in events] == [code.name]
    assert events[0].operator.endswith("/operator/caller")


async def test_the_cli_talks_a_file_in_real_time_and_prints_the_outcome(
    server: AudioServer, connect: Connect, admin: Admin, pki: EphemeralPki, tmp_path: pytest.TempPathFactory
) -> None:
    import soundfile

    provision(pki, "acme", "talker", Role.OPERATOR)  # not alice: the session PKI keeps her role
    said = voice(1.0)
    path = f"{tmp_path}/say.wav"
    soundfile.write(path, said[::3], 16_000)  # another rate: the CLI resamples like an upload
    sink = RecordingSink()
    async with connect(server, "acme", "dev-1", sink=sink) as device, admin(server, role="operator") as ops:
        await online(server, device, "acme", "dev-1")
        await ops.SetLabels(labelled("dev-1", zone="kitchen"))
        code, out, err = await cli(server, pki, "talk", "--selector", "zone=kitchen", path, who="talker")
        assert code == 0, err
        assert out.splitlines()[-1].startswith("talk ended (released) after ")
        assert "1 started, 0 busy, 0 offline, 0 refused" in out
        await wait_for(lambda: bool(sink.sounds) and sink.sounds[0].ended)
        assert heard_clip(sink.sounds[0].pcm, voice(1.0))
        code, _, err = await cli(
            server, pki, "talk", "--device", "dev-1", f"{tmp_path}/none.wav", who="talker"
        )
        assert code == 1 and "none.wav" in err


async def test_two_talkers_on_two_replicas_one_device_the_second_is_busy(
    redis_server: RedisServer, server_factory: ServerFactory, connect: Connect, admin: Admin
) -> None:
    a, b = await replica_pair(server_factory, redis_server)
    sink = RecordingSink()
    async with (
        connect(b, "acme", "dev-1", sink=sink) as device,
        admin(a, role="operator", name="first") as first,
        admin(b, role="operator", name="second") as second,
    ):
        await online(b, device, "acme", "dev-1")
        release = asyncio.Event()
        talking = first.Talk(held(release, apb.TalkStart(device_ids=["dev-1"])))  # via a, to b's device
        assert dict(await talking.initial_metadata())["talk-started"] == "1"
        error = await refused(second.Talk(talk_requests(apb.TalkStart(device_ids=["dev-1"]), voice(0.2))))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        release.set()
        assert (await talking).ended == "released"
        await wait_for(lambda: bool(sink.sounds) and sink.sounds[0].ended, timeout=3)
        assert len(sink.sounds) == 1
