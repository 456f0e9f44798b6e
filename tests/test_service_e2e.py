"""End to end: a real mTLS server on 127.0.0.1 and headless devices speaking the fixed protocol."""

from __future__ import annotations

import asyncio
import os
import time

import grpc
import pytest

from auth.identity import Identity
from comms.audio_format import FRAME_SECONDS
from comms.gen import comms_pb2 as pb
from device.audio_sink import RecordingSink
from device.client import DeviceClient
from server.app import AudioServer
from server.audio.library import AudioLibrary
from server.devices import leds
from server.state.store import DeviceRecord
from tests.conftest import Connect, ServerFactory
from tests.helpers import MODE, PLAY, STOP, best_correlation, heard_clip, mode_of, open_session, wait_for

# "At once", in bounds a loaded machine (CI) keeps: a stall of a few hundred ms must not fail a test;
# a sound that plays on (64 s) or waits for the old one to finish does. The figures are in bench/.
AT_ONCE_PACKETS = 25
AT_ONCE_S = 0.5


def sink_of(client: object) -> RecordingSink:
    sink = client.sink  # type: ignore[attr-defined]
    assert isinstance(sink, RecordingSink)
    return sink


async def test_status_stream_sends_leds_first(server: AudioServer, connect: Connect) -> None:
    async with connect(server) as client:
        await wait_for(lambda: client.status_requests >= 1)
        assert client.view.leds[1] == leds.LED1_IDLE
        assert mode_of(client.view.leds) == 0
        assert client.view.leds[0] == 0  # led_0 never set by the server


async def test_mode_cycles_through_all_modes_and_wraps(server: AudioServer, connect: Connect) -> None:
    async with connect(server) as client:
        await wait_for(lambda: client.status_requests >= 1)
        seen = []
        for _ in range(6):
            assert (await client.press(MODE)).ack
            expected = (len(seen) + 1) % 5
            await wait_for(lambda e=expected: mode_of(client.view.leds) == e)  # type: ignore[misc]
            seen.append(mode_of(client.view.leds))
        assert seen == [1, 2, 3, 4, 0, 1]


async def test_play_streams_the_mode_sound_and_returns_to_idle(
    server: AudioServer, connect: Connect, library: AudioLibrary
) -> None:
    async with connect(server) as client:
        await client.press(MODE)
        await client.press(MODE)  # mode 2: the 2 s chirp
        started = time.monotonic()
        await client.press(PLAY)
        await wait_for(lambda: client.view.leds[1] == leds.LED1_PLAYING)
        await wait_for(lambda: bool(sink_of(client).sounds) and sink_of(client).sounds[0].ended, timeout=5)
        sound = sink_of(client).sounds[0]
        clip = library.clip_for(2)
        assert sound.packets == len(clip.packets)
        # Real-time pacing: a 2 s clip cannot arrive much faster than 2 s minus the lead.
        assert sound.arrivals[-1] - started >= clip.duration - 0.3
        assert best_correlation(sound.pcm, clip.pcm) > 0.9
        await wait_for(lambda: client.view.leds[1] == leds.LED1_IDLE)  # finished -> idle


async def test_stop_mid_long_sound_ends_it_at_once(server: AudioServer, connect: Connect) -> None:
    """Counted in packets, not milliseconds (bench/ measures Stop -> is_end): after the Stop's ack
    the device gets at most what was already on its way and the end, never more of the sound."""
    async with connect(server) as client:
        await client.press(MODE)  # mode 1: the 64 s melody
        await client.press(PLAY)
        await wait_for(lambda: bool(sink_of(client).sounds) and sink_of(client).sounds[0].packets > 20)
        await client.press(STOP)
        acked = time.monotonic()
        await wait_for(lambda: sink_of(client).sounds[0].ended, timeout=2)
        sound = sink_of(client).sounds[0]
        assert len([t for t in sound.arrivals if t > acked]) <= AT_ONCE_PACKETS
        assert sound.duration < 5
        await wait_for(lambda: client.view.leds[1] == leds.LED1_IDLE)
        count = len(sink_of(client).sounds[0].arrivals)
        await client.press(PLAY)  # a marker: the next thing on the audio stream is a new sound
        await wait_for(lambda: len(sink_of(client).sounds) == 2)
        assert len(sink_of(client).sounds[0].arrivals) == count  # nothing more after the end


async def test_long_sound_interrupted_by_mode_change_and_play(
    server: AudioServer, connect: Connect, library: AudioLibrary
) -> None:
    async with connect(server) as client:
        await client.press(MODE)  # mode 1
        await client.press(PLAY)
        await wait_for(lambda: bool(sink_of(client).sounds) and sink_of(client).sounds[0].packets > 25)
        await client.press(MODE)  # mode 2 while playing: keeps playing, shows mode 2
        await wait_for(lambda: mode_of(client.view.leds) == 2)
        assert client.view.leds[1] == leds.LED1_PLAYING
        before = sink_of(client).sounds[0].packets
        await asyncio.sleep(0.2)
        assert sink_of(client).sounds[0].packets > before  # still streaming mode 1
        assert len(sink_of(client).sounds) == 1
        await client.press(PLAY)  # preempt
        await wait_for(
            lambda: len(sink_of(client).sounds) == 2 and sink_of(client).sounds[1].ended, timeout=5
        )
        first, second = sink_of(client).sounds
        assert first.ended  # the mode 1 sound got its is_end
        assert first.duration < 10
        assert second.arrivals[0] - first.arrivals[-1] < AT_ONCE_S  # the new sound starts at once
        assert heard_clip(second.pcm, library.clip_for(2).pcm)
        assert heard_clip(first.pcm[:48_000], library.clip_for(1).pcm[:48_000])


async def test_stop_while_idle_and_other_events_are_harmless(server: AudioServer, connect: Connect) -> None:
    async with connect(server) as client:
        await wait_for(lambda: client.status_requests >= 1)
        history = len(client.view.history)
        events = [
            (STOP, pb.ButtonEvent.PRESS),
            (MODE, pb.ButtonEvent.HOLD),
            (MODE, pb.ButtonEvent.RELEASE),
            (PLAY, pb.ButtonEvent.RELEASE),
            (0, pb.ButtonEvent.PRESS),  # Connect is device-local
            (9, pb.ButtonEvent.PRESS),  # unknown button
            (MODE, 7),  # unknown event type
        ]
        for button, kind in events:
            assert (await client.press(button, kind)).ack
        await client.press(MODE)  # a marker: its LED change is the next one, so the others made none
        await wait_for(lambda: len(client.view.history) > history)
        assert len(client.view.history) == history + 1 and mode_of(client.view.leds) == 1
        assert client.packets_received == 0


async def test_events_acked_in_order_promptly_while_audio_streams(
    server_factory: ServerFactory, connect: Connect
) -> None:
    server = await server_factory(event_rate_per_s=1000, event_burst=100)
    async with connect(server) as client:
        await client.press(MODE)
        await client.press(PLAY)
        await wait_for(lambda: client.packets_received > 5)
        worst = 0.0
        for _ in range(50):
            sent = time.monotonic()
            assert (await client.press(MODE, pb.ButtonEvent.HOLD)).ack
            worst = max(worst, time.monotonic() - sent)
        assert worst < 0.5
        assert client.packets_received > 5


async def test_play_without_audio_stream_runs_the_timeline(
    server: AudioServer, pki: object, library: AudioLibrary
) -> None:
    from auth.tls import channel_credentials
    from comms.gen import comms_pb2_grpc as pb_grpc
    from tests.helpers import button_event

    tls = pki.device_tls("acme", "no-audio")  # type: ignore[attr-defined]
    async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", channel_credentials(tls)) as channel:
        stub = pb_grpc.DeviceServiceStub(channel)
        events = stub.EventStream(metadata=await open_session(channel))
        for button in (MODE, MODE, MODE):  # mode 3: the 1 s arpeggio
            await events.write(button_event(button))
            assert (await events.read()).ack
        await events.write(button_event(PLAY))
        assert (await events.read()).ack
        from auth.identity import Identity

        controller = server.registry.controller(Identity("acme", "no-audio"))
        assert controller is not None and controller.state.playing is not None
        await wait_for(lambda: controller.state.playing is None, timeout=library.clip_for(3).duration + 2)
        await events.done_writing()


async def test_periodic_get_records_battery_and_buttons(
    server_factory: ServerFactory, connect: Connect
) -> None:
    from auth.identity import Identity

    app = await server_factory(status_poll_interval_s=0.05)
    async with connect(app) as client:
        client.view.battery_level = 0.42
        client.view.buttons[2] = pb.DeviceStatus.PRESSED
        await wait_for(lambda: app.registry.controller(Identity("acme", "dev-1")) is not None)
        controller = app.registry.controller(Identity("acme", "dev-1"))
        assert controller is not None
        await wait_for(lambda: controller.record.battery_level is not None)
        assert controller.record.battery_level == pytest.approx(0.42)
        assert controller.record.buttons == (1, 1, 0, 1)


async def test_device_error_status_is_counted_and_stream_survives(
    server: AudioServer, connect: Connect
) -> None:
    from server import metrics

    before = metrics.STATUS_ERRORS.labels(kind="device_error")._value.get()
    async with connect(server) as client:
        original = client._status_response

        def failing(request: pb.DeviceStatusRequest) -> pb.DeviceStatusResponse:
            original(request)
            return pb.DeviceStatusResponse(status="error: led driver fault")

        client._status_response = failing  # type: ignore[method-assign]
        await client.press(MODE)
        await wait_for(lambda: metrics.STATUS_ERRORS.labels(kind="device_error")._value.get() > before)
        client._status_response = original  # type: ignore[method-assign]
        await client.press(MODE)
        await wait_for(lambda: mode_of(client.view.leds) == 2)
        assert "status" not in client.ends


async def test_twenty_devices_each_keep_their_own_state(
    server_factory: ServerFactory, connect: Connect
) -> None:
    server = await server_factory(status_poll_interval_s=BARRIER_POLL_S)
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(connect(server, "fleet", f"d{i}")) for i in range(20)]
        for i, client in enumerate(clients):
            for _ in range(i % 5):
                await client.press(MODE)
        for i, client in enumerate(clients):
            await wait_for(lambda c=client, m=i % 5: mode_of(c.view.leds) == m)  # type: ignore[misc]
        await clients[3].press(PLAY)
        await wait_for(lambda: clients[3].packets_received > 3)
        for j, client in enumerate(clients):
            if j != 3:
                await status_round_trip(client)
                assert server_record(server, "fleet", f"d{j}").playing is None
        assert all(c.packets_received == 0 for j, c in enumerate(clients) if j != 3)
        assert len(server.registry) == 20


BARRIER_POLL_S = 0.05  # the server asks each device for its status this often in the barrier tests


async def status_round_trip(client: DeviceClient) -> None:
    """Barrier: two more status polls answered, so what the server sent before on that stream arrived."""
    seen = client.status_requests
    await wait_for(lambda: client.status_requests >= seen + 2)


def server_record(server: AudioServer, tenant: str, device: str) -> DeviceRecord:
    controller = server.registry.controller(Identity(tenant, device))
    assert controller is not None
    return controller.record


async def test_tenants_are_isolated_even_with_equal_device_ids(
    server_factory: ServerFactory, connect: Connect
) -> None:
    server = await server_factory(status_poll_interval_s=BARRIER_POLL_S)
    async with (
        connect(server, "acme", "dev-1") as acme,
        connect(server, "globex", "dev-1") as globex,
    ):
        await acme.press(MODE)
        await acme.press(MODE)
        await globex.press(PLAY)
        await wait_for(lambda: mode_of(acme.view.leds) == 2)
        await wait_for(lambda: globex.packets_received > 0)
        await status_round_trip(globex)
        await status_round_trip(acme)
        assert server_record(server, "globex", "dev-1").mode == 0  # what the server holds, directly
        assert server_record(server, "acme", "dev-1").playing is None
        assert mode_of(globex.view.leds) == 0
        assert acme.packets_received == 0
        assert acme.view.leds[1] == leds.LED1_IDLE
        assert globex.view.leds[1] == leds.LED1_PLAYING


async def test_legacy_device_id_metadata_changes_nothing(
    server_factory: ServerFactory, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    server = await server_factory(status_poll_interval_s=BARRIER_POLL_S)
    async with connect(server, "acme", "dev-2") as victim:
        await wait_for(lambda: victim.status_requests >= 1)
        async with connect(server, "acme", "dev-1", legacy_device_id="dev-2") as attacker:
            await attacker.press(MODE)
            await attacker.press(PLAY)
            await wait_for(lambda: attacker.packets_received > 0)
        await status_round_trip(victim)
        victim_record = server_record(server, "acme", "dev-2")
        assert (victim_record.mode, victim_record.playing) == (0, None)
        assert mode_of(victim.view.leds) == 0
        assert victim.packets_received == 0
        assert "status" not in victim.ends  # not superseded by the impostor
    mismatches = [r for r in caplog.records if r.getMessage() == "auth.device_id_metadata_mismatch"]
    assert mismatches and mismatches[0].device == "dev-1" and mismatches[0].claimed == "dev-2"  # type: ignore[attr-defined]


async def test_reconnect_restores_mode(server: AudioServer, connect: Connect) -> None:
    async with connect(server) as client:
        for _ in range(3):
            await client.press(MODE)
        await wait_for(lambda: mode_of(client.view.leds) == 3)
    await wait_for(lambda: len(server.registry) == 0)
    async with connect(server) as client:
        await wait_for(lambda: client.status_requests >= 1)
        assert mode_of(client.view.leds) == 3  # the first SET carries the restored state


async def test_server_restart_restores_mode_from_sqlite(
    server_factory: ServerFactory, connect: Connect
) -> None:
    app = await server_factory(state_backend="sqlite")
    async with connect(app) as client:
        for _ in range(4):
            await client.press(MODE)
    await app.stop(grace_s=1.0)
    again = await server_factory(state_backend="sqlite")
    async with connect(again) as client:
        await wait_for(lambda: client.status_requests >= 1)
        assert mode_of(client.view.leds) == 4


async def test_second_connection_supersedes_the_first(server: AudioServer, connect: Connect) -> None:
    async with connect(server) as first:
        await first.press(MODE)
        await first.press(MODE)
        await first.press(PLAY)
        await wait_for(lambda: first.packets_received > 2)
        async with connect(server) as second:
            await wait_for(lambda: first.closed.is_set() and len(first.ends) == 3)
            for kind in ("status", "event", "audio"):
                assert first.ends[kind].code == grpc.StatusCode.ABORTED, (kind, first.ends)
                assert "superseded" in first.ends[kind].details
            await wait_for(lambda: second.status_requests >= 1)
            assert mode_of(second.view.leds) == 2
            assert second.view.leds[1] == leds.LED1_IDLE  # the old sound stopped with the old session
            await second.press(MODE)
            await wait_for(lambda: mode_of(second.view.leds) == 3)
            assert "status" not in second.ends


def live_tasks() -> int:
    """Tasks that must not outlive a connection: ours and gRPC's RPC handlers.

    The gRPC server's idle "waiting for the next call" tasks are excluded: their
    number depends on how many calls were in flight at once, not on leaks.
    """
    return sum(1 for task in asyncio.all_tasks() if "_request_registered_call" not in repr(task))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_disconnects_leave_no_tasks_or_sockets_behind(server: AudioServer, connect: Connect) -> None:
    async with connect(server, "acme", "warm-up") as client:  # let gRPC set up its pollers first
        await client.press(MODE)
    await wait_for(lambda: len(server.registry) == 0)
    baseline, baseline_fds = live_tasks(), open_fds()
    for round_ in range(10):
        async with connect(server, "acme", f"churn-{round_}") as client:
            await client.press(MODE)
            await client.press(PLAY)
            await wait_for(lambda c=client: c.packets_received > 2)  # type: ignore[misc]
    await wait_for(lambda: len(server.registry) == 0)
    await wait_for(lambda: live_tasks() <= baseline, timeout=5)
    await wait_for(lambda: open_fds() <= baseline_fds + 2, timeout=5)
    assert server.registry.locks_held() == 0  # per-device locks do not pile up


async def test_status_answers_are_matched_to_requests_in_order(
    server: AudioServer, pki: object, caplog: pytest.LogCaptureFixture
) -> None:
    """A device that answers a SET with a state, or answers unasked, is counted; the stream lives on."""
    from auth.tls import channel_credentials
    from comms.gen import comms_pb2_grpc as pb_grpc
    from server import metrics

    def count(kind: str) -> float:
        return float(metrics.STATUS_ERRORS.labels(kind=kind)._value.get())

    mismatch, unsolicited = count("mismatch"), count("unsolicited")
    tls = pki.device_tls("acme", "odd-status")  # type: ignore[attr-defined]
    async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", channel_credentials(tls)) as channel:
        status = pb_grpc.DeviceServiceStub(channel).StatusStream(metadata=await open_session(channel))
        first = await status.read()
        assert first.HasField("set")
        await status.write(pb.DeviceStatusResponse(state=pb.DeviceStatus()))  # wrong answer to a SET
        await status.write(pb.DeviceStatusResponse(status="success"))  # nothing was asked
        await wait_for(lambda: count("mismatch") == mismatch + 1 and count("unsolicited") == unsolicited + 1)
        await status.done_writing()


async def test_a_server_bug_ends_one_stream_with_a_generic_internal_error(
    server: AudioServer, connect: Connect, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from server.devices.controller import DeviceController

    async def broken(self: DeviceController, button: int, kind: int) -> None:
        raise RuntimeError("secret internal detail")

    async with connect(server, "acme", "healthy") as healthy:
        await healthy.press(MODE)
        monkeypatch.setattr(DeviceController, "press", broken)
        async with connect(server, "acme", "unlucky") as unlucky:
            with pytest.raises(grpc.aio.AioRpcError):
                await unlucky.press(MODE)
            await wait_for(lambda: "event" in unlucky.ends)
            assert unlucky.ends["event"].code == grpc.StatusCode.INTERNAL
            assert "secret" not in unlucky.ends["event"].details
        monkeypatch.undo()
        await healthy.press(MODE)
        await wait_for(lambda: mode_of(healthy.view.leds) == 2)
    assert any(r.getMessage() == "stream.failed" and r.exc_info for r in caplog.records)


async def test_play_sends_the_lead_at_once_then_real_time(server: AudioServer, connect: Connect) -> None:
    """Default lead 100 ms: packets 0..5 go out immediately, the rest one per 20 ms.

    Judged from the arrival times, as bounds a loaded machine cannot fake: paced packets never
    come faster than one per frame (a stall only makes them later), and the six of the lead come
    as one burst, in less than the five frames pacing would have taken."""
    async with connect(server) as client:
        await client.press(MODE)  # the long sound
        await client.press(PLAY)
        await wait_for(lambda: bool(sink_of(client).sounds) and sink_of(client).sounds[0].packets >= 56)
        arrivals = sink_of(client).sounds[0].arrivals
        assert arrivals[5] - arrivals[0] < 3 * FRAME_SECONDS  # the lead: at once (paced: 5 frames)
        assert arrivals[55] - arrivals[5] >= 48 * FRAME_SECONDS  # then real time: 50 frames, no faster


async def test_connected_devices_gauge_survives_supersede(server: AudioServer, connect: Connect) -> None:
    from tests.helpers import connected

    async with connect(server, "gauge", "dev-1") as first:
        await wait_for(lambda: first.status_requests >= 1)
        async with connect(server, "gauge", "dev-1") as second:  # supersedes the first session
            await wait_for(lambda: second.status_requests >= 1 and len(first.ends) >= 3)
            assert connected("gauge") == 1  # one device, however many sessions it had
    await wait_for(lambda: len(server.registry) == 0)
    assert connected("gauge") == 0


async def test_button_events_are_logged_by_name(
    server: AudioServer, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="server.devices.streams")
    async with connect(server, "acme", "named") as client:
        await client.press(MODE)
        await client.press(PLAY)
    lines = [r for r in caplog.records if r.getMessage() == "event.button"]
    assert [(r.button, r.button_id, r.type) for r in lines] == [  # type: ignore[attr-defined]
        ("Mode", "BUTTON_2", "PRESS"),
        ("Play", "BUTTON_4", "PRESS"),
    ]


async def test_a_stream_whose_call_breaks_under_grpc_is_no_server_error(
    server_factory: ServerFactory,
    pki: object,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In a reconnect storm a device gives up on a stream the server has not answered yet, and
    gRPC's core fails the server's first send on it (``ExecuteBatchError``, seen in
    ``bench_outage``). That is the peer leaving, not a bug: no stream.failed, no INTERNAL."""
    from grpc._cython import cygrpc

    from auth.tls import channel_credentials
    from comms.gen import comms_pb2_grpc as pb_grpc
    from server.devices.streams import DeviceService

    class BrokenCall:
        """The call as gRPC hands it over, except that its core has lost the connection."""

        def __init__(self, context: grpc.aio.ServicerContext) -> None:
            self._context = context

        async def send_initial_metadata(self, metadata: object) -> None:
            raise cygrpc.ExecuteBatchError('Failed "execute_batch"')

        def __getattr__(self, name: str) -> object:
            return getattr(self._context, name)

    event_stream = DeviceService.EventStream
    breaking = [True]

    async def through_a_broken_call(
        self: DeviceService, requests: object, context: grpc.aio.ServicerContext
    ) -> None:
        call = BrokenCall(context) if breaking and breaking.pop() else context
        await event_stream(self, requests, call)  # type: ignore[arg-type]

    monkeypatch.setattr(DeviceService, "EventStream", through_a_broken_call)
    server = await server_factory()
    tls = pki.device_tls("acme", "impatient")  # type: ignore[attr-defined]

    def ended() -> list[object]:
        return [getattr(r, "status", None) for r in caplog.records if r.getMessage() == "stream.end"]

    async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", channel_credentials(tls)) as channel:
        events = pb_grpc.DeviceServiceStub(channel).EventStream(metadata=await open_session(channel))
        await wait_for(lambda: bool(ended()))
        events.cancel()  # the device had given up
    assert ended() == ["CANCELLED"]
    assert "stream.broken" in [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if r.getMessage() in ("stream.failed", "request.internal_error")]
    async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", channel_credentials(tls)) as channel:
        events = pb_grpc.DeviceServiceStub(channel).EventStream(metadata=await open_session(channel))
        await events.write(pb.DeviceEvent(button_event=pb.ButtonEvent(button_id=MODE)))
        assert (await events.read()).ack  # and the device is served when it comes back
        await events.done_writing()
