"""Requests are parsed only after authentication; bytes that do not parse are INVALID_ARGUMENT.

Also: one audio stream per session, ``start=false`` starts nothing, and one noisy
client cannot flood the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
import pytest

from auth.tls import channel_credentials
from comms.gen import comms_pb2 as pb
from comms.gen import comms_pb2_grpc as pb_grpc
from comms.log_sampling import SampledLog
from server import metrics
from server.access import interceptor
from server.app import AudioServer
from server.devices.streams import DeviceService
from tests.conftest import Connect, ServerFactory
from tests.helpers import MODE, PLAY, EphemeralPki, auth_failures, counted_since, open_session, wait_for

SERVICE = "/com.opalcamera.test.DeviceService/"
GARBAGE = b"\xff\xff\xff\xff"  # a truncated varint: protobuf cannot parse it as any message
TIMEOUT_S = 10.0


def bad_messages(method: str) -> float:
    return metrics.BAD_MESSAGES.labels(method=method)._value.get()


async def send_garbage(
    channel: grpc.aio.Channel, method: str, metadata: tuple[tuple[str, str], ...]
) -> grpc.aio.AioRpcError:
    """Send raw bytes that are no valid message on ``method``; return how the call ended."""
    raw = {"request_serializer": None, "response_deserializer": None}
    with pytest.raises(grpc.aio.AioRpcError) as info:
        if method == "ServerAudioStream":
            call = channel.unary_stream(SERVICE + method, **raw)(GARBAGE, metadata=metadata)
            await asyncio.wait_for(call.read(), TIMEOUT_S)
        else:
            call = channel.stream_stream(SERVICE + method, **raw)(metadata=metadata)
            if method == "StatusStream":
                await asyncio.wait_for(call.read(), TIMEOUT_S)  # the server asks first
            await call.write(GARBAGE)
            while True:
                await asyncio.wait_for(call.read(), TIMEOUT_S)
    return info.value


@pytest.mark.parametrize("method", ["StatusStream", "EventStream", "ServerAudioStream"])
async def test_garbage_after_auth_is_invalid_argument(
    method: str, server: AudioServer, pki: EphemeralPki, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    async with connect(server, "acme", "healthy") as healthy:
        tls = pki.device_tls("acme", "garbler")
        async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", channel_credentials(tls)) as channel:
            metadata = await open_session(channel)
            before = bad_messages(method)
            error = await send_garbage(channel, method, metadata)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details() == "request message could not be parsed"
        assert bad_messages(method) == before + 1
        assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]  # not a server bug
        assert [r for r in caplog.records if r.getMessage() == "request.malformed"]
        await healthy.press(MODE)
        assert not healthy.ends


@pytest.mark.parametrize("method", ["StatusStream", "EventStream", "ServerAudioStream"])
async def test_garbage_before_auth_learns_only_unauthenticated(
    method: str, server: AudioServer, pki: EphemeralPki
) -> None:
    tls = pki.device_tls("acme", "garbler")
    before, bad_before = auth_failures(), bad_messages(method)
    async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", channel_credentials(tls)) as channel:
        error = await send_garbage(channel, method, ())  # no token
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert counted_since(before) == {"token_missing": 1}
    assert bad_messages(method) == bad_before  # never parsed


async def test_start_false_opens_no_audio(server: AudioServer, pki: EphemeralPki, connect: Connect) -> None:
    async with connect(server, "acme", "dev-1") as device:
        await device.press(PLAY)
        await wait_for(lambda: device.packets_received > 0)
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{server.port}", channel_credentials(pki.device_tls("acme", "dev-1"))
        ) as channel:
            metadata = (("authorization", f"Bearer {device.session.token}"),)  # type: ignore[union-attr]
            call = pb_grpc.DeviceServiceStub(channel).ServerAudioStream(
                pb.AudioStreamRequest(start=False), metadata=metadata
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await asyncio.wait_for(call.read(), TIMEOUT_S)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "start must be true" in (info.value.details() or "")
        assert "audio" not in device.ends  # the device's own audio stream was not touched


async def test_a_newer_audio_stream_replaces_the_older(
    server: AudioServer, pki: EphemeralPki, connect: Connect
) -> None:
    async with connect(server, "acme", "dev-1") as device:
        assert device.session is not None
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{server.port}", channel_credentials(pki.device_tls("acme", "dev-1"))
        ) as channel:
            metadata = (("authorization", f"Bearer {device.session.token}"),)
            newer = pb_grpc.DeviceServiceStub(channel).ServerAudioStream(
                pb.AudioStreamRequest(start=True), metadata=metadata
            )
            await asyncio.wait_for(newer.initial_metadata(), TIMEOUT_S)
            await wait_for(lambda: "audio" in device.ends)
            assert device.ends["audio"].code == grpc.StatusCode.ABORTED
            assert device.ends["audio"].details == "replaced by a newer audio stream of this session"
            received = device.packets_received
            await device.press(PLAY)  # status and events still work; the sound goes to the newer stream
            packet = await asyncio.wait_for(newer.read(), TIMEOUT_S)
            assert packet.is_start and packet.data
            assert device.packets_received == received
            newer.cancel()


async def test_one_refused_client_cannot_flood_the_log(
    server: AudioServer, pki: EphemeralPki, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, logger="server.access.interceptor")
    # A fresh sampler: the process-wide one may still hold a window other tests' refusals filled.
    monkeypatch.setattr(interceptor, "_rejections_log", SampledLog())
    tls = pki.device_tls("acme", "noisy")
    before = auth_failures()
    async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", channel_credentials(tls)) as channel:
        stub = pb_grpc.DeviceServiceStub(channel)
        for _ in range(40):
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.ServerAudioStream(pb.AudioStreamRequest(start=True)).read()
    assert counted_since(before) == {"token_missing": 40}  # the metric counts every one
    lines = [r for r in caplog.records if r.getMessage() == "auth.rejected"]
    assert 1 <= len(lines) <= 5  # the log only a few


def test_sampled_log_reports_what_it_held_back() -> None:
    now = [0.0]
    sampler = SampledLog(burst=2, window_s=10, max_keys=2, clock=lambda: now[0])
    assert [sampler.admit("a") for _ in range(5)] == [0, 0, None, None, None]
    assert sampler.admit("b") == 0  # other keys have their own budget
    now[0] = 11
    assert sampler.admit("a") == 3  # the first line of a new window says how many were dropped
    sampler.admit("c")
    sampler.admit("d")  # beyond max_keys: the oldest windows are forgotten, memory stays bounded
    assert len(sampler._windows) == 2


async def test_a_send_that_grpc_fails_on_a_closed_call_is_left_to_grpc(
    server_factory: ServerFactory,
    pki: EphemeralPki,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When a device has already left, gRPC fails the status or metadata we send on its call with
    its own InternalError (ExecuteBatchError) and ignores that for a call the client closed. Our
    nets must pass it to gRPC instead of logging a bug and aborting again: make bench at 500
    devices logged 826 such tracebacks (request.internal_error, then gRPC's "Abort already called")
    before; none after. Here the handler ends its call, then raises what a send on it raises."""
    from grpc._cython import cygrpc

    reached = asyncio.Event()

    async def send_fails(
        self: DeviceService, request_iterator: object, context: grpc.aio.ServicerContext
    ) -> None:
        reached.set()
        with contextlib.suppress(grpc.aio.AbortError):
            await context.abort(grpc.StatusCode.UNAVAILABLE, "server is shutting down")  # the call is over
        raise cygrpc.ExecuteBatchError("Failed execute_batch")  # what a send on it then raises

    monkeypatch.setattr(DeviceService, "EventStream", send_fails)
    server = await server_factory()
    tls = pki.device_tls("acme", "leaver")
    async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", channel_credentials(tls)) as channel:
        metadata = await open_session(channel)
        call = pb_grpc.DeviceServiceStub(channel).EventStream(metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await asyncio.wait_for(call.read(), TIMEOUT_S)
    assert reached.is_set()
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE  # what was said before the failed send
    ours = [r for r in caplog.records if r.name.startswith("server.")]
    assert not [r for r in ours if r.getMessage() in {"request.internal_error", "stream.failed"}]
    assert not [r for r in ours if r.exc_info]
