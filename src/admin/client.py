"""A FleetService client over mTLS with an operator certificate."""

from __future__ import annotations

from types import TracebackType

import grpc

from auth.tls import TlsMaterial, channel_credentials
from comms.gen import admin_pb2_grpc as apb_grpc


class FleetClient:
    """``async with FleetClient(target, tls) as fleet: await fleet.stub.ListDevices(...)``."""

    def __init__(self, target: str, tls: TlsMaterial, server_name: str | None = None) -> None:
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        self.channel = grpc.aio.secure_channel(target, channel_credentials(tls), options=options)
        self.stub = apb_grpc.FleetServiceStub(self.channel)

    async def __aenter__(self) -> FleetClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()
