"""SetMode for an offline device that connects between the operator's read and write (issue 17).

The write is a compare-and-set on the session the view was read with: the device
connecting meanwhile claimed a new session, so the stored write is refused and the
mode goes to the device's live session through its node. Without that, the store
said the new mode, the device kept its old one in memory (and wrote it back later)
while the operator was told "stored".
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from auth.identity import Identity
from comms.gen import admin_pb2 as apb
from server.app import AudioServer
from tests.conftest import Admin, Connect, ServerFactory
from tests.helpers import mode_of, wait_for
from tests.redis_server import RedisServer
from tests.test_admin_api import ref
from tests.test_admin_replicas import replica_pair
from tests.test_fleet import held_by

DEVICE = Identity("acme", "dev-1")
NEW_MODE = 3


async def seen_once_then_offline(server: AudioServer, connect: Connect) -> None:
    async with connect(server, DEVICE.tenant, DEVICE.device_id) as device:
        await held_by(server, device)
    await wait_for(lambda: server.registry.controller(DEVICE) is None)
    await server.fleet.idle()


async def race(
    operator_node: AudioServer,
    device_node: AudioServer,
    connect: Connect,
    admin: Admin,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The device connects (to ``device_node``) in the instant between SetMode's read and write."""
    await seen_once_then_offline(device_node, connect)
    real_update = operator_node.store.update_now
    hooked: list[bool] = []
    async with contextlib.AsyncExitStack() as stack:

        async def connect_in_between(identity: Identity, changes: dict[str, object], *args: Any) -> bool:
            if "mode" in changes and not hooked:
                hooked.append(True)
                device = await stack.enter_async_context(connect(device_node, "acme", "dev-1"))
                await held_by(device_node, device)
                devices.append(device)
            return await real_update(identity, changes, *args)

        devices: list[Any] = []
        monkeypatch.setattr(operator_node.store, "update_now", connect_in_between)
        async with admin(operator_node, role="operator") as ops:
            result = await ops.SetMode(apb.SetModeRequest(device=ref("dev-1"), mode=NEW_MODE))
        assert hooked, "the race did not happen: the device was not offline when SetMode started"
        assert not result.stored_only and result.node == device_node.fleet.node_id
        controller = device_node.registry.controller(DEVICE)
        assert controller is not None and controller.state.mode == NEW_MODE  # the live device has it
        await wait_for(lambda: mode_of(devices[0].view.leds) == NEW_MODE)
    await wait_for(lambda: device_node.registry.controller(DEVICE) is None)
    record = await device_node.store.load(DEVICE)
    assert record is not None and record.mode == NEW_MODE  # and its end did not write the old one back


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_set_mode_while_the_device_connects_reaches_the_device(
    backend: str,
    server_factory: ServerFactory,
    connect: Connect,
    admin: Admin,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = await server_factory(state_backend=backend)
    await race(server, server, connect, admin, monkeypatch)


async def test_set_mode_on_one_replica_while_the_device_connects_to_another(
    redis_server: RedisServer,
    server_factory: ServerFactory,
    connect: Connect,
    admin: Admin,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = await replica_pair(server_factory, redis_server)
    await race(a, b, connect, admin, monkeypatch)
