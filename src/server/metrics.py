"""Prometheus metrics of the service (docs/reference/metrics.md is generated from them).

Module-level collectors in the default registry: one process serves one
service. Labels are low-cardinality on purpose (no device ids).

Gauges of live things (connected devices, open streams, unsaved records) are
not incremented and decremented: ``LiveCollector`` reads them from the live
registries and store guards at scrape time, so they cannot drift.
"""

from __future__ import annotations

import weakref
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

STREAM_KINDS = ("status", "event", "audio")


class LiveSource(Protocol):
    def connected_by_tenant(self) -> Mapping[str, int]: ...
    def streams_by_kind(self) -> Mapping[str, int]: ...


class StoreSource(Protocol):
    @property
    def healthy(self) -> bool: ...

    @property
    def pending(self) -> int: ...


@dataclass(frozen=True)
class LiveCounts:
    tenants: Tally[str]  # devices with a live session, per tenant
    kinds: Tally[str]  # open streams per kind
    pending: int  # records not yet in the store
    store_up: bool


class LiveCollector(Collector):
    """Counts what is live right now in every registry and store guard of this process."""

    def __init__(self) -> None:
        self.sources: weakref.WeakSet[LiveSource] = weakref.WeakSet()
        self.stores: weakref.WeakSet[StoreSource] = weakref.WeakSet()

    def counts(self) -> LiveCounts:
        tenants: Tally[str] = Tally()
        kinds: Tally[str] = Tally()
        for source in list(self.sources):
            tenants.update(source.connected_by_tenant())
            kinds.update(source.streams_by_kind())
        stores = list(self.stores)
        return LiveCounts(
            tenants, kinds, sum(store.pending for store in stores), all(store.healthy for store in stores)
        )

    def collect(self) -> Iterator[Metric]:
        live = self.counts()
        tenants, kinds = live.tenants, live.kinds
        devices = GaugeMetricFamily(
            "audio_connected_devices", "Devices with a live session", labels=["tenant"]
        )
        for tenant, count in sorted(tenants.items()):
            devices.add_metric([tenant], count)
        streams = GaugeMetricFamily("audio_open_streams", "Open DeviceService streams", labels=["kind"])
        for kind in STREAM_KINDS:
            streams.add_metric([kind], kinds[kind])
        pending = GaugeMetricFamily("audio_store_pending_writes", "Device records not yet in the state store")
        pending.add_metric([], live.pending)
        up = GaugeMetricFamily("audio_store_up", "1 while the state store takes writes, else 0")
        up.add_metric([], float(live.store_up))
        yield from (devices, streams, pending, up)


LIVE = LiveCollector()
REGISTRY.register(LIVE)


def track_live(source: LiveSource) -> None:
    LIVE.sources.add(source)


def track_store(store: StoreSource) -> None:
    LIVE.stores.add(store)


SESSIONS_CREATED = Counter("audio_sessions_created_total", "CreateSession calls answered", ["kind"])
SESSIONS_OPENED = Counter("audio_sessions_opened_total", "Sessions whose streams opened")
SESSIONS_SUPERSEDED = Counter(
    "audio_sessions_superseded_total", "Sessions ended because the device connected again"
)
AUTH_FAILURES = Counter("audio_auth_failures_total", "Rejected calls", ["reason"])
EVENTS_RATE_LIMITED = Counter(
    "audio_events_rate_limited_total", "Button events acked with ack=false and not applied (rate limit)"
)
EVENTS_STALE = Counter(
    "audio_events_stale_total",
    "Button events acked with ack=false and not applied: their session was over or the link stalled",
    ["reason"],
)
BUTTON_EVENTS = Counter("audio_button_events_total", "Button events received", ["button", "type"])
SOUNDS_STARTED = Counter("audio_sounds_started_total", "Sounds started")
SOUNDS_STOPPED = Counter("audio_sounds_stopped_total", "Sounds ended early", ["reason"])
AUDIO_PACKETS_SENT = Counter("audio_packets_sent_total", "Opus packets queued to devices")
AUDIO_PACKETS_DROPPED = Counter(
    "audio_packets_dropped_total", "Opus packets dropped because a device's stream was stuck"
)
AUDIO_PACKETS_SKIPPED = Counter(
    "audio_packets_skipped_total",
    "Packets not sent to keep devices at the live edge (late, overflow) or after a Stop (stopped)",
    ["reason"],
)
AUDIO_LATE_PACKETS = Counter(
    "audio_late_packets_total", "Packets offered more than one frame behind schedule"
)
STATUS_ERRORS = Counter(
    "audio_status_errors_total",
    "Status responses that report an error or break the protocol",
    ["kind"],
)
BAD_MESSAGES = Counter(
    "audio_bad_messages_total", "Request messages that did not parse (answered INVALID_ARGUMENT)", ["method"]
)
STORE_ERRORS = Counter("audio_store_errors_total", "State store operations that failed", ["op"])
STORE_RESETS = Counter(
    "audio_store_resets_total", "Times this node found the shared store emptied (generation marker gone)"
)
BACKGROUND_RESTARTS = Counter(
    "audio_background_restarts_total", "Background loops restarted after an error", ["task"]
)
RELOADS = Counter("audio_reloads_total", "Reloads of watched files by outcome", ["what", "result"])
CRL_RELOAD_FAILURES = Counter(
    "audio_crl_reload_failures_total",
    "CRL files refused (the previous CRL stays enforced), by reason",
    ["reason"],
)
CRL_NEXT_UPDATE = Gauge(
    "audio_crl_next_update_timestamp_seconds",
    "nextUpdate of the CRL in force (Unix time; +Inf without one); past it the CRL is stale, still enforced",
    multiprocess_mode="livemin",
)
TLS_HANDSHAKES = Counter(
    "audio_tls_handshakes_total",
    "TLS connections by outcome: used (made a call) or failed (never did: refused, mostly)",
    ["outcome"],
)
BUS_DROPPED = Counter(
    "audio_bus_dropped_total", "Fleet bus messages refused because this node's bus queue was full"
)
POSSIBLE_CLONES = Counter(
    "audio_possible_clones_total", "Supersedes that look like two devices sharing one certificate"
)
ENROLMENTS = Counter(
    "audio_enrolments_total",
    "Enrolment attempts (EnrollmentService Enroll, Claim and Poll), by result (ok: a certificate "
    "issued; pending: a request queued for approval; or the refusal's reason)",
    ["result"],
)
RENEWALS = Counter(
    "audio_renewals_total",
    "Certificate renewals (RenewalService.Renew), by result (ok or the refusal's reason)",
    ["result"],
)
ADMIN_CALLS = Counter(
    "audio_admin_calls_total",
    "Operator API (FleetService) calls, by method and status code",
    ["method", "code"],
)
SESSIONS_ENDED = Counter("audio_sessions_ended_total", "Sessions ended, by why", ["reason"])


class SupervisorCollector(Collector):
    """For the ``--workers`` supervisor's /metrics: its own loops' restarts (worker keepers, health
    poller), under a name of their own beside the workers' summed ``audio_background_restarts_total``."""

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "audio_supervisor_restarts",
            "Supervisor loops (worker keepers, health poller) restarted after an error",
            labels=["task"],
        )
        for metric in BACKGROUND_RESTARTS.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    family.add_metric([sample.labels["task"]], sample.value)
        yield family


def mirror_live_gauges() -> Callable[[], None]:
    """In a worker (Prometheus multiprocess mode): copy the live counts into gauges the supervisor's
    /metrics sums over live workers. Still derived from the registries, never incremented."""
    devices = Gauge(
        "audio_connected_devices",
        "Devices with a live session",
        ["tenant"],
        registry=None,
        multiprocess_mode="livesum",
    )
    streams = Gauge(
        "audio_open_streams",
        "Open DeviceService streams",
        ["kind"],
        registry=None,
        multiprocess_mode="livesum",
    )
    pending = Gauge(
        "audio_store_pending_writes",
        "Device records not yet in the state store",
        registry=None,
        multiprocess_mode="livesum",
    )
    up = Gauge(
        "audio_store_up",
        "1 while the state store takes writes, else 0",
        registry=None,
        multiprocess_mode="livemin",
    )
    seen: set[str] = set()

    def update() -> None:
        live = LIVE.counts()
        for tenant in seen - set(live.tenants):
            devices.labels(tenant).set(0)
        seen.update(live.tenants)
        for tenant, count in live.tenants.items():
            devices.labels(tenant).set(count)
        for kind in STREAM_KINDS:
            streams.labels(kind).set(live.kinds[kind])
        pending.set(live.pending)
        up.set(float(live.store_up))

    return update
