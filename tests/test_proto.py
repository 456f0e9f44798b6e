"""The wire contract: generated code is fresh, and the schema matches PROTOCOL.md exactly."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from google.protobuf.descriptor import FieldDescriptor

from comms.gen import comms_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent


def test_committed_generated_code_is_fresh(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    assert spec and spec.loader
    gen_proto = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_proto)
    for fresh in gen_proto.generate(tmp_path):
        committed = ROOT / "src" / "comms" / "gen" / fresh.name
        assert committed.exists(), f"{committed} missing: run `make proto`"
        assert fresh.read_text() == committed.read_text(), f"{committed.name} is stale: run `make proto`"


T = FieldDescriptor
# (message, field, number, type, message/enum type name or None, in oneof)
FIELDS = [
    ("RGBAColor", "rgba", 1, T.TYPE_FIXED32, None, None),
    *[("DeviceStatus", f"led_{i}", i + 1, T.TYPE_MESSAGE, "RGBAColor", None) for i in range(6)],
    *[("DeviceStatus", f"button_{i}", i + 6, T.TYPE_ENUM, "ButtonStatus", None) for i in range(1, 5)],
    ("DeviceStatus", "battery_level", 11, T.TYPE_FLOAT, None, None),
    *[("DeviceStatusSet", f"led_{i}", i + 1, T.TYPE_MESSAGE, "RGBAColor", None) for i in range(6)],
    ("DeviceStatusRequest", "get", 1, T.TYPE_BOOL, None, "request"),
    ("DeviceStatusRequest", "set", 2, T.TYPE_MESSAGE, "DeviceStatusSet", "request"),
    ("DeviceStatusResponse", "state", 1, T.TYPE_MESSAGE, "DeviceStatus", "response"),
    ("DeviceStatusResponse", "status", 2, T.TYPE_STRING, None, "response"),
    ("ButtonEvent", "button_id", 1, T.TYPE_ENUM, "ButtonId", None),
    ("ButtonEvent", "event", 2, T.TYPE_ENUM, "ButtonEventType", None),
    ("DeviceEvent", "button_event", 1, T.TYPE_MESSAGE, "ButtonEvent", "event"),
    ("DeviceEventResponse", "ack", 1, T.TYPE_BOOL, None, None),
    ("AudioStreamRequest", "start", 1, T.TYPE_BOOL, None, None),
    ("AudioPacket", "is_start", 1, T.TYPE_BOOL, None, None),
    ("AudioPacket", "is_end", 2, T.TYPE_BOOL, None, None),
    ("AudioPacket", "data", 3, T.TYPE_BYTES, None, None),
]


@pytest.mark.parametrize(("message", "field", "number", "type_", "type_name", "oneof"), FIELDS)
def test_field(
    message: str, field: str, number: int, type_: int, type_name: str | None, oneof: str | None
) -> None:
    descriptor = pb.DESCRIPTOR.message_types_by_name[message]
    assert descriptor.full_name == f"com.opalcamera.test.{message}"
    f = descriptor.fields_by_name[field]
    assert (f.number, f.type) == (number, type_)
    if type_name:
        assert (f.message_type or f.enum_type).name == type_name
    assert (f.containing_oneof.name if f.containing_oneof else None) == oneof


def test_no_extra_fields() -> None:
    declared: dict[str, set[str]] = {}
    for message, field, *_ in FIELDS:
        declared.setdefault(message, set()).add(field)
    for name, descriptor in pb.DESCRIPTOR.message_types_by_name.items():
        assert set(descriptor.fields_by_name) == declared[name], name


def test_enums() -> None:
    assert dict(pb.DeviceStatus.ButtonStatus.items()) == {"PRESSED": 0, "RELEASED": 1}
    assert dict(pb.ButtonEvent.ButtonId.items()) == {
        "BUTTON_1": 0,
        "BUTTON_2": 1,
        "BUTTON_3": 2,
        "BUTTON_4": 3,
    }
    assert dict(pb.ButtonEvent.ButtonEventType.items()) == {"PRESS": 0, "HOLD": 1, "RELEASE": 2}
    assert (
        pb.DeviceStatus.ButtonStatus.DESCRIPTOR.full_name == "com.opalcamera.test.DeviceStatus.ButtonStatus"
    )


def test_service() -> None:
    service = pb.DESCRIPTOR.services_by_name["DeviceService"]
    assert service.full_name == "com.opalcamera.test.DeviceService"
    methods = {
        m.name: (m.input_type.name, m.output_type.name, m.client_streaming, m.server_streaming)
        for m in service.methods
    }
    assert methods == {
        "StatusStream": ("DeviceStatusResponse", "DeviceStatusRequest", True, True),
        "EventStream": ("DeviceEvent", "DeviceEventResponse", True, True),
        "ServerAudioStream": ("AudioStreamRequest", "AudioPacket", False, True),
    }
    assert pb.DESCRIPTOR.package == "com.opalcamera.test"
