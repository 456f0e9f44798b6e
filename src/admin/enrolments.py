"""``audio-admin enrollments``: one-time enrolment codes (create, list, cancel).

    audio-admin ... enrollments create --device kitchen-1 [--ttl 24h]
    audio-admin ... enrollments create --count 50 --prefix kitchen- [--ttl 7d] [--csv]
    audio-admin ... enrollments list
    audio-admin ... enrollments cancel ID
    audio-admin ... enrollments claim enable|rotate|disable|show    (open enrolment; enable: admin)
    audio-admin ... enrollments pending
    audio-admin ... enrollments approve ID [--device-id D] | enrollments deny ID

A code is printed once, here, and never again (the server keeps only its hash); with it goes
the fingerprint of the fleet CA the device pins (``audio-device enroll --ca-fingerprint``).
Open enrolment: the tenant's claim code (also shown once) lets devices queue requests
(``audio-device enroll --claim``); ``pending`` lists them with their key fingerprints, which the
operator compares with what each device printed before approving it.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from admin.args import whole
from comms.gen import admin_pb2 as apb

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}
HEADER = ("DEVICE", "CODE", "EXPIRES", "ID")


def duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``24h``, ``7d`` -> seconds."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 3600, 30m, 24h or 7d")
    return float(match[1]) * _UNITS[match[2]]


def configure(topics: Any, shared: list[argparse.ArgumentParser]) -> None:
    topic = topics.add_parser(
        "enrollments", help="enrolment of new devices: one-time codes, the claim code, pending requests"
    )
    codes = topic.add_subparsers(dest="action", required=True)
    create = codes.add_parser("create", help="codes for devices (each shown once)", parents=shared)
    which = create.add_mutually_exclusive_group(required=True)
    which.add_argument("--device", help="one code for this device id")
    which.add_argument("--count", type=whole, help="codes for PREFIX1 .. PREFIXN")
    create.add_argument("--prefix", default="", help="device id prefix for --count (e.g. kitchen-)")
    create.add_argument("--ttl", type=duration, default=0.0, help="how long they stay valid (24h by default)")
    create.add_argument("--csv", action="store_true", help="print device,code,expires,id as CSV")
    codes.add_parser("list", help="pending codes (not used, cancelled or expired)", parents=shared)
    cancel = codes.add_parser("cancel", help="cancel a pending code by its id", parents=shared)
    cancel.add_argument("id")
    claim = codes.add_parser("claim", help="the tenant's claim code for open enrolment", parents=shared)
    claim.add_argument(
        "claim_action",
        choices=["enable", "rotate", "disable", "show"],
        help="enable or rotate: a new code (shown once; the old one stops working); role admin",
    )
    codes.add_parser("pending", help="enrolment requests waiting for a decision", parents=shared)
    approve = codes.add_parser("approve", help="approve a request (issues its certificate)", parents=shared)
    approve.add_argument("id")
    approve.add_argument("--device-id", default="", help="the device id to issue (default: the proposed one)")
    deny = codes.add_parser("deny", help="deny a request", parents=shared)
    deny.add_argument("id")


def _expires(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(unix))


def created_text(response: apb.CreateEnrollmentsResponse, as_csv: bool, table: Callable[..., str]) -> str:
    rows = [[e.device_id, e.code, _expires(e.expires_unix), e.id] for e in response.enrollments]
    if as_csv:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["device", "code", "expires", "id"])
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    lines = [table(rows, HEADER), ""]
    lines.append(f"fleet CA fingerprint: {response.ca_fingerprint}")
    lines.append(
        "on each device: audio-device enroll --server <enrolment HOST:PORT> --code <CODE> "
        f"--ca-fingerprint {response.ca_fingerprint}"
    )
    lines.append("the codes are shown only now: the server keeps a hash of each")
    return "\n".join(lines)


def listed_text(enrollments: Sequence[apb.Enrollment], table: Callable[..., str]) -> str:
    rows = [
        [f"{e.tenant}/{e.device_id}", e.id, _expires(e.expires_unix), e.created_by.rsplit("/", 1)[-1] or "-"]
        for e in enrollments
    ]
    return table(rows, ("DEVICE", "ID", "EXPIRES", "BY")) + f"\n{len(rows)} pending"


def claim_text(claim: apb.ClaimCode) -> str:
    if not claim.enabled:
        return f"open enrolment is off for {claim.tenant} (no claim code)"
    by = claim.created_by.rsplit("/", 1)[-1] or "-"
    lines = [f"claim code {claim.id} of {claim.tenant}, made {_expires(claim.created_unix)} by {by}"]
    if claim.code:
        lines += [
            f"claim code: {claim.code}",
            f"fleet CA fingerprint: {claim.ca_fingerprint}",
            "on each device: audio-device enroll --server <enrolment HOST:PORT> --claim <CODE> "
            f"--device-id <PROPOSED ID> --ca-fingerprint {claim.ca_fingerprint}",
            "the code is shown only now (the server keeps a hash); the previous one no longer works",
        ]
    return "\n".join(lines)


def pending_text(requests: Sequence[apb.PendingEnrollment], table: Callable[..., str]) -> str:
    rows = [
        [
            r.id,
            f"{r.tenant}/{r.proposed_device_id}",
            r.key_fingerprint.removeprefix("SHA256:")[:16],
            r.peer or "-",
            _expires(r.created_unix),
            r.state
            + (f" as {r.device_id}" if r.device_id else "")
            + (" (id in use)" if r.proposed_id_known else ""),
        ]
        for r in requests
    ]
    header = ("ID", "PROPOSED", "KEY SHA256", "FROM", "ASKED", "STATE")
    return table(rows, header) + f"\n{len(rows)} requests"


def decided_text(decided: apb.PendingEnrollment) -> str:
    if decided.state == "approved":
        return (
            f"approved request {decided.id} as {decided.tenant}/{decided.device_id} "
            f"(key {decided.key_fingerprint}): the device gets its certificate at its next poll"
        )
    return f"denied request {decided.id} (proposed {decided.tenant}/{decided.proposed_device_id})"
