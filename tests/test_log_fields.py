"""No log call can fail: a key in ``extra`` that a ``LogRecord`` already has makes ``logging`` raise
``KeyError`` inside the call, which once turned a stored sound upload into an UNAVAILABLE answer.

Every ``extra=`` in the product is checked statically: dict literals key by key, anything else must be
one of the few named field sources whose keys are checked here at run time.
"""

from __future__ import annotations

import ast
import logging
from dataclasses import fields
from pathlib import Path

import pytest

from auth.identity import Identity
from comms.logfmt import FieldSafeLogger
from server.devices.live_session import DeviceSession
from server.operator.audit import AuditEvent, audit_log_fields

SRC = Path(__file__).resolve().parent.parent / "src"
RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# ``extra=`` values (or ``**`` spreads) that are not dict literals; their keys are checked below.
NAMED_SOURCES = {
    "session.log_fields",
    "controller.log_fields",
    "self._log_fields",  # a Player's: its controller's log_fields
    "log_fields",  # abort_rejected(context, failure, **log_fields): its callers pass tenant=, device=
    "audit_log_fields(event)",
    "edge_fields",  # Outage.lost(**edge_fields) / restored(**edge_fields): its callers' keywords
}


def _extra_values() -> list[tuple[str, int, ast.expr]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if "_pb2" in path.name:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                for keyword in node.keywords:
                    if keyword.arg == "extra" and _is_log_call(node):
                        found.append((str(path.relative_to(SRC)), node.lineno, keyword.value))
    return found


def _is_log_call(call: ast.Call) -> bool:
    func = call.func
    return isinstance(func, ast.Attribute) and func.attr in {
        "debug",
        "info",
        "warning",
        "error",
        "exception",
        "critical",
        "log",
    }


def test_the_scan_finds_the_log_calls() -> None:
    assert len(CALLS) > 80  # the scan finds the log calls (91 when written)


CALLS = _extra_values()


@pytest.mark.parametrize(("where", "line", "value"), CALLS, ids=[f"{w}:{n}" for w, n, _ in CALLS])
def test_no_extra_key_collides_with_a_log_record_attribute(where: str, line: int, value: ast.expr) -> None:
    if isinstance(value, ast.Dict):
        for key, item in zip(value.keys, value.values, strict=True):
            if key is None:  # a ``**spread``: only of a named source, whose keys are checked below
                spread = ast.unparse(item)
                assert spread in NAMED_SOURCES, f"{where}:{line}: extra=**{spread} is unchecked"
            elif isinstance(key, ast.Constant):
                assert key.value not in RESERVED, f"{where}:{line}: extra key {key.value!r} is reserved"
            else:
                pytest.fail(f"{where}:{line}: extra keys must be literal strings")
    else:
        assert ast.unparse(value) in NAMED_SOURCES, f"{where}:{line}: extra={ast.unparse(value)} is unchecked"


async def test_the_named_field_sources_use_no_reserved_key() -> None:
    event = AuditEvent("spiffe://x", "admin", "acme", "Play", "dev-1", {"mode": 1}, "OK", "fine", "r1")
    assert not set(audit_log_fields(event)) & RESERVED
    assert {f.name for f in fields(AuditEvent)} - {"message"} <= set(audit_log_fields(event))
    session = DeviceSession(Identity("acme", "dev-1"), "s1", 1)
    assert not set(session.log_fields) & RESERVED


def test_the_interceptor_is_given_only_safe_keywords() -> None:
    """``abort_rejected(context, failure, **log_fields)``: its callers' keywords."""
    calls = [
        node
        for path in sorted(SRC.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name | ast.Attribute)
        and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr) == "abort_rejected"
    ]
    assert calls
    for call in calls:
        assert all(k.arg is not None and k.arg not in RESERVED for k in call.keywords)


def test_the_outage_edges_are_given_only_safe_keywords() -> None:
    """``Outage.lost(**edge_fields)`` / ``restored(**edge_fields)``: its callers' keywords."""
    calls = [
        node
        for path in sorted(SRC.rglob("*.py"))
        if "_pb2" not in path.name
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in {"lost", "restored"}
    ]
    assert len(calls) >= 6  # the guard, the bus and presence, each at both edges
    for call in calls:
        assert all(k.arg is not None and k.arg not in RESERVED for k in call.keywords), ast.unparse(call)


def test_in_production_a_colliding_key_is_renamed_not_raised() -> None:
    logger = FieldSafeLogger("test")
    record = logger.makeRecord("test", logging.INFO, "f", 1, "m", None, None, extra={"filename": "a.wav"})
    assert record.filename_ == "a.wav"  # type: ignore[attr-defined]
    assert record.filename == "f"


def test_a_colliding_key_would_fail_the_call() -> None:
    """The hazard is real: this is what the scan prevents."""
    with pytest.raises(KeyError):
        logger = logging.getLogger("test")
        logger.makeRecord("test", logging.INFO, "f", 1, "m", None, None, extra={"filename": 1})
