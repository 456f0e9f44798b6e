"""``audio-admin``: the operator API from a terminal. Tables for people, ``--json`` for scripts.

    audio-admin --tenant acme --operator alice devices list [--watch]
    audio-admin ... devices show|events|play|stop|disconnect|revoke|unrevoke DEVICE
    audio-admin ... devices mode DEVICE N
    audio-admin ... devices label DEVICE key=value ... [--remove KEY ...]
    audio-admin ... devices list --selector zone=kitchen,floor=2
    audio-admin ... sounds list | sounds upload --mode N FILE | sounds reset --mode N
    audio-admin ... audit list [--device D] [--action A] [--refused]
    audio-admin ... announce (--selector S | --device ID ...) (--mode N | --sound NAME | --file F)
                             [--priority N] [--no-resume]
    audio-admin ... schedules create --selector S (--mode N | --sound NAME)
                              (--at 2026-12-03T09:00 | --cron "0 9 * * 1-5") [--tz ZONE]
    audio-admin ... schedules list | show|pause|resume|delete ID
    audio-admin ... talk (--selector S | --device ID ...) [--priority N] [--no-resume] FILE
    audio-admin ... console login
    audio-admin ... enrollments create --device D [--ttl 24h] | --count N --prefix P [--csv]
    audio-admin ... enrollments list | enrollments cancel ID
    audio-admin ... enrollments claim enable|rotate|disable|show
    audio-admin ... enrollments pending | approve ID [--device-id D] | deny ID

Every failure is one line on stderr (offline device, not found, permission
denied with the role needed, an unreachable server) and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from admin import enrolments, schedules
from admin.args import whole
from admin.client import FleetClient
from admin.settings import AdminSettings
from admin.talk_file import TalkFileError, paced, read_pcm
from auth.errors import PkiError
from comms.cli import parse_settings
from comms.gen import admin_pb2 as apb
from comms.renewal_words import renewal_words

PROG = "audio-admin"
CHUNK = 256 * 1024
ANNOUNCE_CLIP_MAX = 3 * 1024 * 1024  # what Announce takes with the call (the server says the same)
EXIT_FAILED = 1
_CODE_WORDS = {
    grpc.StatusCode.NOT_FOUND: "not found",
    grpc.StatusCode.PERMISSION_DENIED: "",  # the server's text already says "permission denied: ..."
    grpc.StatusCode.FAILED_PRECONDITION: "",
    grpc.StatusCode.INVALID_ARGUMENT: "invalid",
    grpc.StatusCode.UNAUTHENTICATED: "not accepted as an operator",
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "no answer in time",
}


JSON_HELP = "Print JSON (one object per line for --watch)"


def configure(parser: argparse.ArgumentParser, options: argparse.ArgumentParser) -> None:
    """The commands; every global option (settings, ``--json``) also works after the command."""
    parser.add_argument("--json", action="store_true", help=JSON_HELP)
    common = argparse.ArgumentParser(add_help=False, parents=[options])
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=JSON_HELP)
    shared = [common]
    topics = parser.add_subparsers(
        dest="topic",
        required=True,
        metavar="{devices,sounds,audit,console,enrollments,announce,schedules,talk}",
    )
    devices = topics.add_parser("devices", help="list, show and command devices").add_subparsers(
        dest="action", required=True
    )
    listing = devices.add_parser(
        "list", help="the tenant's devices (every tenant's for a platform operator)", parents=shared
    )
    listing.add_argument("--watch", action="store_true", help="then print every change as it happens")
    online = listing.add_mutually_exclusive_group()
    online.add_argument("--online", action="store_true", help="only devices online now")
    online.add_argument("--offline", action="store_true", help="only devices offline now")
    listing.add_argument("--mode", type=whole, help="only devices in this mode")
    listing.add_argument("--search", default="", help="device ids containing this")
    listing.add_argument(
        "--selector", default="", help="only devices whose labels match: key=value[,key=value...] or all"
    )
    for name, text in (
        ("show", "everything about one device"),
        ("events", "its recent events: connects, presses, modes, sounds (newest first)"),
        ("play", "press Play on the device (like its button)"),
        ("stop", "press Stop on the device"),
        ("disconnect", "end the device's session (it reconnects)"),
        ("revoke", "deny the device at once, on every replica, until unrevoked (admin)"),
        ("unrevoke", "lift a revocation (admin)"),
    ):
        devices.add_parser(name, help=text, parents=shared).add_argument("device")
    mode = devices.add_parser(
        "mode", help="set the mode (stored for its next connection when offline)", parents=shared
    )
    mode.add_argument("device")
    mode.add_argument("mode", type=whole)
    label = devices.add_parser(
        "label", help="set (key=value) and remove (--remove KEY) the device's labels", parents=shared
    )
    label.add_argument("device")
    label.add_argument("labels", nargs="*", metavar="key=value", help="labels to set (or change)")
    label.add_argument("--remove", action="append", default=[], metavar="KEY", help="a label to remove")
    sounds = topics.add_parser("sounds", help="the tenant's sounds per mode").add_subparsers(
        dest="action", required=True
    )
    sounds.add_parser("list", help="the sound of every mode", parents=shared)
    upload = sounds.add_parser(
        "upload", help="use FILE (any format libsndfile reads) for a mode", parents=shared
    )
    upload.add_argument("--mode", type=whole, required=True)
    upload.add_argument("file", type=Path)
    reset = sounds.add_parser("reset", help="back to the built-in sound", parents=shared)
    reset.add_argument("--mode", type=whole, required=True)
    console = topics.add_parser("console", help="the web console").add_subparsers(
        dest="action", required=True
    )
    login = console.add_parser(
        "login", help="print a one-time sign-in link (5 minutes, usable once)", parents=shared
    )
    login.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the server to come up")
    announce = topics.add_parser(
        "announce",
        help="play one sound on many devices at the same instant (they resume what they played)",
        parents=shared,
    )
    announce.set_defaults(action="play")
    targets = announce.add_mutually_exclusive_group(required=True)
    targets.add_argument("--selector", help="the devices whose labels match: key=value[,key=value...] or all")
    targets.add_argument("--device", action="append", dest="devices", metavar="ID", help="a device (repeat)")
    sound = announce.add_mutually_exclusive_group(required=True)
    sound.add_argument("--mode", type=whole, help="the sound a Play of this mode plays")
    sound.add_argument("--sound", help="an uploaded sound, by its file name (extension optional)")
    sound.add_argument(
        "--file", type=Path, help="a sound file sent with the call (WAV, FLAC, Ogg, MP3; at most 3 MiB)"
    )
    announce.add_argument(
        "--priority", type=whole, default=0, help="0..9: a higher one preempts a lower one (default 0)"
    )
    announce.add_argument(
        "--no-resume", action="store_true", help="the interrupted sounds do not resume afterwards"
    )
    talk = topics.add_parser(
        "talk",
        help="say FILE live on many devices, in real time (push-to-talk from a file)",
        parents=shared,
    )
    talk.set_defaults(action="file")
    speakers = talk.add_mutually_exclusive_group(required=True)
    speakers.add_argument(
        "--selector", help="the devices whose labels match: key=value[,key=value...] or all"
    )
    speakers.add_argument("--device", action="append", dest="devices", metavar="ID", help="a device (repeat)")
    talk.add_argument("--priority", type=whole, default=0, help="0..9, as for announce (default 0)")
    talk.add_argument(
        "--no-resume", action="store_true", help="the interrupted sounds do not resume afterwards"
    )
    talk.add_argument("file", type=Path, help="any format libsndfile reads (resampled to 48 kHz mono)")
    audit = topics.add_parser("audit", help="the audit log").add_subparsers(dest="action", required=True)
    events = audit.add_parser("list", help="newest first", parents=shared)
    events.add_argument("--device", default="")
    events.add_argument("--action", dest="audit_action", default="")
    events.add_argument("--by", default="", help="operator name")
    events.add_argument("--refused", action="store_true", help="only refused calls")
    events.add_argument("--limit", type=whole, default=50)
    enrolments.configure(topics, shared)
    schedules.configure(topics, shared)


# --- output -------------------------------------------------------------------------


def as_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def when(unix: float) -> str:
    if not unix:
        return "-"
    ago = time.time() - unix
    if ago < 120:
        return f"{ago:.0f} s ago"
    if ago < 7200:
        return f"{ago / 60:.0f} min ago"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(unix))


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)) for row in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


DEVICE_HEADER = (
    "DEVICE", "STATE", "NODE", "MODE", "PLAYING", "BATTERY", "LAST SEEN", "CERT", "LAST END", "LABELS"
)  # fmt: skip


def labels_text(device: apb.Device) -> str:
    return ",".join(f"{label.key}={label.value}" for label in device.labels) or "-"


def device_row(device: apb.Device, with_tenant: bool) -> list[str]:
    state = "revoked" if device.revoked else ("online" if device.online else "offline")
    playing = (
        f"mode {device.playing.mode} {device.playing.position_s:.0f}/{device.playing.length_s:.0f} s"
        if device.HasField("playing")
        else "-"
    )
    battery = f"{device.battery_level:.0%}" if device.HasField("battery_level") else "-"
    cert = f"{device.cert_days_left} d" if device.HasField("cert_days_left") else "-"
    if device.HasField("renewal") and renewal_words(device.renewal)[1]:
        cert += " (renewal!)"  # failed, or overdue: `devices show` says which
    name = f"{device.tenant}/{device.device_id}" if with_tenant else device.device_id
    last_seen = "now" if device.online else when(device.last_seen_unix)
    return [name, state, device.node or "-", str(device.mode), playing, battery, last_seen, cert,
            device.last_disconnect_reason or "-", labels_text(device)]  # fmt: skip


def show_device(device: apb.Device) -> str:
    lines = [f"{device.tenant}/{device.device_id}"]
    facts = dict(zip(DEVICE_HEADER[1:], device_row(device, False)[1:], strict=True))
    facts["CONNECTED SINCE"] = when(device.connected_since_unix) if device.online else "-"
    facts["SESSION"] = device.session_id or "-"
    facts["CERT SERIAL"] = device.cert_serial or "-"
    if device.HasField("renewal"):
        words, look = renewal_words(device.renewal)
        facts["RENEWAL"] = f"{words} (!)" if look else words
    facts["BUTTONS"] = ", ".join(device.buttons) or "-"
    facts["LEDS"] = ", ".join(f"{led.index}: {led.label}" for led in device.leds)
    lines += [f"  {name.lower():<16} {value}" for name, value in facts.items()]
    return "\n".join(lines)


# --- commands -------------------------------------------------------------------------


class Cli:
    def __init__(self, settings: AdminSettings, args: argparse.Namespace, client: FleetClient) -> None:
        self.settings = settings
        self.args = args
        self.stub = client.stub
        self.tenant = settings.tenant or ""
        self.json = bool(args.json)

    def out(self, message: Message, text: str) -> None:
        print(json.dumps(as_dict(message)) if self.json else text, flush=True)

    def ref(self) -> apb.DeviceRef:
        return apb.DeviceRef(tenant=self.tenant, device_id=self.args.device)

    async def run(self) -> None:
        handler = getattr(self, f"{self.args.topic}_{self.args.action}")
        await handler()

    async def devices_list(self) -> None:
        request = apb.ListDevicesRequest(
            tenant=self.tenant, search=self.args.search, selector=self.args.selector, page_size=1000
        )
        if self.args.online:
            request.online = apb.ListDevicesRequest.ONLINE
        elif self.args.offline:
            request.online = apb.ListDevicesRequest.OFFLINE
        if self.args.mode is not None:
            request.mode = self.args.mode
        if self.args.watch:
            await self.watch()
            return
        devices: list[apb.Device] = []
        while True:
            page = await self.stub.ListDevices(request, timeout=self.settings.timeout_s)
            devices += page.devices
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
        if self.json:
            print(json.dumps([as_dict(d) for d in devices]))
            return
        many_tenants = len({d.tenant for d in devices}) > 1
        print(table([device_row(d, many_tenants) for d in devices], DEVICE_HEADER))
        online = sum(d.online for d in devices)
        print(f"{len(devices)} devices, {online} online")

    async def watch(self) -> None:
        call = self.stub.WatchDevices(apb.WatchDevicesRequest(tenant=self.tenant))
        rows: list[list[str]] = []
        async for update in call:
            if self.json:
                print(json.dumps(as_dict(update)), flush=True)
            elif update.kind == apb.DeviceUpdate.SNAPSHOT:
                rows.append(device_row(update.device, not self.tenant))
            elif update.kind == apb.DeviceUpdate.SNAPSHOT_END:
                print(table(rows, DEVICE_HEADER), flush=True)
                print("-- watching; Ctrl-C stops --", flush=True)
            else:
                row = "  ".join(device_row(update.device, True))
                print(f"{time.strftime('%H:%M:%S')} {update.change:<12} {row}", flush=True)

    async def devices_show(self) -> None:
        device = await self.stub.GetDevice(self.ref(), timeout=self.settings.timeout_s)
        self.out(device, show_device(device))

    async def devices_events(self) -> None:
        events = (await self.stub.ListDeviceEvents(self.ref(), timeout=self.settings.timeout_s)).events
        if self.json:
            print(json.dumps([as_dict(e) for e in events]))
            return
        rows = [
            [time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.time_unix)), e.what, e.node] for e in events
        ]
        print(table(rows, ("TIME", "WHAT", "NODE")))

    async def _command(self, method: str, what: str) -> None:
        result = await getattr(self.stub, method)(self.ref(), timeout=self.settings.timeout_s)
        self.out(result, f"{what} {self.args.device} (on {result.node})")

    async def devices_play(self) -> None:
        await self._command("Play", "played on")

    async def devices_stop(self) -> None:
        await self._command("Stop", "stopped")

    async def devices_disconnect(self) -> None:
        await self._command("Disconnect", "disconnected")

    async def devices_revoke(self) -> None:
        device = await self.stub.RevokeDevice(self.ref(), timeout=self.settings.timeout_s)
        self.out(device, f"revoked {self.args.device}: its streams are ended and every call refused")

    async def devices_unrevoke(self) -> None:
        device = await self.stub.UnrevokeDevice(self.ref(), timeout=self.settings.timeout_s)
        self.out(device, f"unrevoked {self.args.device}: it may connect again")

    async def devices_mode(self) -> None:
        request = apb.SetModeRequest(device=self.ref(), mode=self.args.mode)
        result = await self.stub.SetMode(request, timeout=self.settings.timeout_s)
        where = "stored for its next connection (offline)" if result.stored_only else f"on {result.node}"
        self.out(result, f"mode {self.args.mode} for {self.args.device}: {where}")

    async def devices_label(self) -> None:
        pairs = []
        for term in self.args.labels:
            key, equals, value = term.partition("=")
            if not equals:
                raise CliError(f"{term!r} is not key=value (remove a label with --remove KEY)")
            pairs.append(apb.Label(key=key, value=value))
        if not pairs and not self.args.remove:
            raise CliError("give labels to set (key=value) or --remove KEY")
        request = apb.SetLabelsRequest(device=self.ref(), set=pairs, remove=self.args.remove)
        device = await self.stub.SetLabels(request, timeout=self.settings.timeout_s)
        self.out(device, f"labels of {self.args.device}: {labels_text(device)}")

    async def sounds_list(self) -> None:
        sounds = (await self.stub.ListSounds(apb.ListSoundsRequest(tenant=self.tenant))).sounds
        if self.json:
            print(json.dumps([as_dict(s) for s in sounds]))
            return
        rows = [
            [str(s.mode), s.source, f"{s.length_s:.1f} s", s.filename or "-", when(s.uploaded_unix),
             s.uploaded_by.rsplit("/", 1)[-1] or "-"]
            for s in sounds
        ]  # fmt: skip
        print(table(rows, ("MODE", "SOURCE", "LENGTH", "FILE", "UPLOADED", "BY")))

    @staticmethod
    def read_file(path: Path, max_bytes: int | None = None) -> bytes:
        """A file the call sends, read before anything is sent; ``CliError`` saying why not."""
        try:
            if max_bytes is not None and path.stat().st_size > max_bytes:
                raise CliError(
                    f"{path} is larger than {max_bytes // (1024 * 1024)} MiB: upload it "
                    "(sounds upload) and announce it by --sound"
                )
            return path.read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None

    async def sounds_upload(self) -> None:
        path: Path = self.args.file
        data = self.read_file(path)

        async def chunks() -> AsyncIterator[apb.UploadSoundChunk]:
            yield apb.UploadSoundChunk(tenant=self.tenant, mode=self.args.mode, filename=path.name)
            for start in range(0, len(data), CHUNK):
                yield apb.UploadSoundChunk(data=data[start : start + CHUNK])

        sound = await self.stub.UploadSound(chunks(), timeout=max(self.settings.timeout_s, 120))
        self.out(sound, f"mode {sound.mode}: {path.name} ({sound.length_s:.1f} s) from the next Play on")

    async def sounds_reset(self) -> None:
        request = apb.ResetSoundRequest(tenant=self.tenant, mode=self.args.mode)
        sound = await self.stub.ResetSound(request, timeout=self.settings.timeout_s)
        self.out(sound, f"mode {sound.mode}: back to the built-in sound ({sound.length_s:.1f} s)")

    async def announce_play(self) -> None:
        args = self.args
        request = apb.AnnounceRequest(
            tenant=self.tenant,
            selector=args.selector or "",
            device_ids=args.devices or [],
            priority=args.priority,
            no_resume=args.no_resume,
        )
        if args.mode is not None:
            request.mode = args.mode
        elif args.file is not None:
            request.clip, request.clip_name = self.read_file(args.file, ANNOUNCE_CLIP_MAX), args.file.name
        else:
            request.sound_name = args.sound
        result = await self.stub.Announce(request, timeout=max(self.settings.timeout_s, 15))
        self.out(result, announce_report(result, args.selector or ""))

    async def schedules_create(self) -> None:
        request = schedules.create_request(self.tenant, self.args)
        created = await self.stub.CreateSchedule(request, timeout=self.settings.timeout_s)
        self.out(created, f"created schedule {created.id}\n" + schedules.shown_text(created, table))

    async def schedules_list(self) -> None:
        request = apb.ListSchedulesRequest(tenant=self.tenant)
        found = (await self.stub.ListSchedules(request, timeout=self.settings.timeout_s)).schedules
        if self.json:
            print(json.dumps([as_dict(s) for s in found]))
            return
        print(schedules.listed_text(list(found), table))

    async def _schedule(self, method: str) -> apb.Schedule:
        ref = apb.ScheduleRef(tenant=self.tenant, id=self.args.id)
        found: apb.Schedule = await getattr(self.stub, method)(ref, timeout=self.settings.timeout_s)
        return found

    async def schedules_show(self) -> None:
        found = await self._schedule("GetSchedule")
        self.out(found, schedules.shown_text(found, table))

    async def schedules_pause(self) -> None:
        found = await self._schedule("PauseSchedule")
        self.out(found, f"paused schedule {found.id}: no runs until it is resumed")

    async def schedules_resume(self) -> None:
        found = await self._schedule("ResumeSchedule")
        following = (
            schedules.local(found.next_runs_unix[0], found.time_zone) if found.next_runs_unix else "none"
        )
        self.out(found, f"resumed schedule {found.id} ({found.state}); next run: {following}")

    async def schedules_delete(self) -> None:
        found = await self._schedule("DeleteSchedule")
        self.out(found, f"deleted schedule {found.id}")

    async def talk_file(self) -> None:
        args = self.args
        try:
            pcm = await asyncio.to_thread(read_pcm, args.file)
        except TalkFileError as exc:
            raise CliError(str(exc)) from None
        start = apb.TalkStart(
            tenant=self.tenant,
            selector=args.selector or "",
            device_ids=args.devices or [],
            priority=args.priority,
            no_resume=args.no_resume,
        )
        call = self.stub.Talk(paced(start, pcm))
        started = dict(await call.initial_metadata())
        if not self.json and "talk-id" in started:
            print(talk_start_line(started), flush=True)
        result = await call
        self.out(result, talk_report(result))

    async def console_login(self) -> None:
        request = apb.CreateConsoleLoginRequest()
        deadline = time.monotonic() + self.args.wait
        while True:
            try:
                login = await self.stub.CreateConsoleLogin(request, timeout=self.settings.timeout_s)
                break
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        valid = time.strftime("%H:%M:%S", time.localtime(login.expires_unix))
        self.out(login, f"console sign-in link (once, until {valid}):\n{login.url}")

    async def audit_list(self) -> None:
        request = apb.ListAuditEventsRequest(
            tenant=self.tenant,
            page_size=self.args.limit,
            device_id=self.args.device,
            action=self.args.audit_action,
            operator=self.args.by,
            refused_only=self.args.refused,
        )
        events = (await self.stub.ListAuditEvents(request, timeout=self.settings.timeout_s)).events
        if self.json:
            print(json.dumps([as_dict(e) for e in events]))
            return
        rows = [
            [time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.time_unix)), e.operator.split("/", 3)[-1],
             e.role, e.action, e.target or "-", e.result, e.message or _params(e.parameters)]
            for e in events
        ]  # fmt: skip
        print(table(rows, ("TIME", "OPERATOR", "ROLE", "ACTION", "TARGET", "RESULT", "DETAIL")))

    async def enrollments_create(self) -> None:
        request = apb.CreateEnrollmentsRequest(tenant=self.tenant, ttl_s=self.args.ttl)
        if self.args.device:
            request.device_id = self.args.device
        else:
            if self.args.count < 1 or not self.args.prefix:
                raise CliError("--count N needs --prefix P (devices P1 .. PN)")
            request.count, request.prefix = self.args.count, self.args.prefix
        response = await self.stub.CreateEnrollments(request, timeout=self.settings.timeout_s)
        self.out(response, enrolments.created_text(response, self.args.csv, table))

    async def enrollments_list(self) -> None:
        request = apb.ListEnrollmentsRequest(tenant=self.tenant)
        response = await self.stub.ListEnrollments(request, timeout=self.settings.timeout_s)
        self.out(response, enrolments.listed_text(response.enrollments, table))

    async def enrollments_cancel(self) -> None:
        request = apb.CancelEnrollmentRequest(tenant=self.tenant, id=self.args.id)
        cancelled = await self.stub.CancelEnrollment(request, timeout=self.settings.timeout_s)
        self.out(cancelled, f"cancelled the code for {cancelled.tenant}/{cancelled.device_id}")

    async def enrollments_claim(self) -> None:
        request, action = apb.ClaimCodeRequest(tenant=self.tenant), self.args.claim_action
        method = {"enable": "SetClaimCode", "rotate": "SetClaimCode", "disable": "DisableClaimCode"}
        call = getattr(self.stub, method.get(action, "GetClaimCode"))
        claim = await call(request, timeout=self.settings.timeout_s)
        self.out(claim, enrolments.claim_text(claim))

    async def enrollments_pending(self) -> None:
        request = apb.ClaimCodeRequest(tenant=self.tenant)
        response = await self.stub.ListPendingEnrollments(request, timeout=self.settings.timeout_s)
        self.out(response, enrolments.pending_text(response.requests, table))

    async def enrollments_approve(self) -> None:
        request = apb.DecideEnrollmentRequest(
            tenant=self.tenant, id=self.args.id, device_id=self.args.device_id
        )
        decided = await self.stub.ApproveEnrollment(request, timeout=self.settings.timeout_s)
        self.out(decided, enrolments.decided_text(decided))

    async def enrollments_deny(self) -> None:
        request = apb.DecideEnrollmentRequest(tenant=self.tenant, id=self.args.id)
        decided = await self.stub.DenyEnrollment(request, timeout=self.settings.timeout_s)
        self.out(decided, enrolments.decided_text(decided))


def announce_report(result: apb.AnnounceResult, selector: str) -> str:
    """The outcome per device as a table, under one line of counts."""
    if not result.targeted:
        return f"0 devices match {selector}: nothing played" if selector else "0 devices: nothing played"
    at = (
        time.strftime("%H:%M:%S", time.localtime(result.start_unix))
        + f".{int(result.start_unix * 1000) % 1000:03d}"
    )
    head = (
        f"announcement {result.announcement_id[:12]} ({result.sound}) at {at}: {result.targeted} targeted, "
        f"{len(result.started)} started, {len(result.offline)} offline, {len(result.refused)} refused"
    )
    rows = sorted(
        [[d, "started"] for d in result.started]
        + [[d, "offline"] for d in result.offline]
        + [[d, "refused (a higher or equal announcement plays)"] for d in result.refused]
    )
    return head + "\n" + table(rows, ("DEVICE", "RESULT"))


def talk_start_line(metadata: dict[str, Any]) -> str:
    count = {kind: metadata.get(f"talk-{kind}", "0") for kind in ("started", "busy", "offline", "refused")}
    return (
        f"talk {str(metadata['talk-id'])[:12]}: {metadata.get('talk-targeted', '0')} targeted, "
        + ", ".join(f"{n} {kind}" for kind, n in count.items())
    )


def talk_report(result: apb.TalkResult) -> str:
    rows = sorted(
        [[d, "started"] for d in result.started]
        + [[d, "busy (in another talk)"] for d in result.busy]
        + [[d, "offline"] for d in result.offline]
        + [[d, "refused (a higher or equal announcement plays)"] for d in result.refused]
    )
    lines = [table(rows, ("DEVICE", "RESULT"))] if rows else ["0 devices: nobody heard it"]
    lines.append(f"talk ended ({result.ended}) after {result.seconds:.1f} s ({result.frames} frames)")
    return "\n".join(lines)


def _params(parameters: str) -> str:
    return "-" if parameters in ("", "{}") else parameters


class CliError(Exception):
    """A failure to print as one line."""


def explain(error: grpc.aio.AioRpcError, settings: AdminSettings) -> str:
    code, details = error.code(), error.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE and (
        "connect" in details.lower() or "handshake" in details.lower()
    ):
        return f"cannot reach the operator API at {settings.server}: {details}"
    words = _CODE_WORDS.get(code, code.name.lower().replace("_", " "))
    return f"{words}: {details}" if words else details


async def run(settings: AdminSettings, args: argparse.Namespace) -> int:
    try:
        material = settings.material()
    except PkiError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    async with FleetClient(settings.server, material, settings.server_name) as client:
        try:
            await Cli(settings, args, client).run()
        except grpc.aio.AioRpcError as exc:
            print(f"{PROG}: {explain(exc, settings)}", file=sys.stderr)
            return EXIT_FAILED
        except CliError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return EXIT_FAILED
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parsed = parse_settings(AdminSettings, PROG, argv, __doc__ or "", configure=configure)
    if parsed is None:
        return EXIT_FAILED
    settings, args = parsed
    try:
        return asyncio.run(run(settings, args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
