"""Device labels (``key=value`` per tenant) and the selectors that pick devices by them.

Labels are operator data about a device ("zone=kitchen", "floor=2"), set and
removed only by operators, read to resolve a selector. They live in the shared
data store as one table per tenant (``labels:<tenant>``), one entry per label,
keyed ``<device>/<key>`` (device ids never hold a ``/``), rather than in the
device record:

* the record is changed by intent, compare-and-set on the device's session;
  labels have nothing to do with sessions, so a label change never races a
  session claim or a replica's telemetry write, and needs no new store intent
  in the three backends (memory, SQLite, Redis already share tables);
* one entry per label makes setting or removing one label a single atomic
  write: two operators labelling one device at once never lose each other's
  labels (a JSON blob per device would be read-modify-write);
* one read of the tenant's table resolves a selector for the whole fleet.

The limit of labels per device is checked against the device's labels read just
before the write; two calls on one device at the same instant on two replicas
could each pass it (the overshoot is bounded by their own counts).

Selectors: comma-separated ``key=value`` terms, all of which must match, or
``all``. Everything is validated strictly; the errors say what to fix.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from server.state.shared_data import SharedData

MAX_KEY = 32
MAX_VALUE = 64
MAX_LABELS = 16  # per device
MAX_TERMS = 16  # per selector
MAX_SELECTOR = MAX_TERMS * (MAX_KEY + 1 + MAX_VALUE + 1)
ALL = "all"
_KEY = re.compile(r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$")
_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
KEY_RULE = f"1..{MAX_KEY} of a-z 0-9 . _ -, starting and ending with a letter or digit"
VALUE_RULE = f"1..{MAX_VALUE} of A-Z a-z 0-9 . _ -, starting and ending with a letter or digit"
Labels = dict[str, str]


class BadLabel(ValueError):
    """A label, key or selector that breaks the rules; the message says which and how (INVALID_ARGUMENT)."""


def _shown(text: str, limit: int = 40) -> str:
    """A bad value quoted back, cut short (never echo a 10 kB value)."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def check_key(key: str) -> str:
    if not 1 <= len(key) <= MAX_KEY or not _KEY.fullmatch(key):
        raise BadLabel(f"label key {_shown(key)} is invalid: use {KEY_RULE}")
    return key


def check_value(key: str, value: str) -> str:
    if not 1 <= len(value) <= MAX_VALUE or not _VALUE.fullmatch(value):
        raise BadLabel(f"label {key}: value {_shown(value)} is invalid: use {VALUE_RULE}")
    return value


def parse_term(term: str) -> tuple[str, str]:
    """``key=value`` as a checked pair."""
    key, equals, value = term.partition("=")
    if not equals:
        raise BadLabel(f"{_shown(term)} is not key=value")
    return check_key(key), check_value(key, value)


@dataclass(frozen=True)
class Selector:
    """Which devices: those carrying every one of ``terms`` (``everything``: every device)."""

    terms: tuple[tuple[str, str], ...] = ()
    everything: bool = False

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.everything or all(labels.get(key) == value for key, value in self.terms)

    def __str__(self) -> str:
        return ALL if self.everything else ",".join(f"{k}={v}" for k, v in self.terms)


def parse_selector(text: str) -> Selector:
    """``all`` or ``key=value[,key=value...]``; spaces around terms are allowed, nothing else is."""
    if len(text) > MAX_SELECTOR:
        raise BadLabel(f"the selector is {len(text)} characters; at most {MAX_SELECTOR}")
    stripped = text.strip()
    if not stripped:
        raise BadLabel("the selector is empty: give key=value[,key=value...] or all")
    if stripped == ALL:
        return Selector(everything=True)
    parts = [part.strip() for part in stripped.split(",")]
    if len(parts) > MAX_TERMS:
        raise BadLabel(f"the selector has {len(parts)} terms; at most {MAX_TERMS}")
    terms: dict[str, str] = {}
    for part in parts:
        if not part:
            raise BadLabel("the selector has an empty term (two commas, or one at an end)")
        key, value = parse_term(part)
        if key in terms:
            raise BadLabel(f"the selector names {key} twice")
        terms[key] = value
    return Selector(tuple(sorted(terms.items())))


def labels_table(tenant: str) -> str:
    return f"labels:{tenant}"


class DeviceLabels:
    """The labels of every tenant's devices, in the shared data store (see the module docstring)."""

    def __init__(self, data: SharedData) -> None:
        self._data = data

    async def of_tenant(self, tenant: str) -> dict[str, Labels]:
        """device id -> its labels, for every labelled device of ``tenant`` (one read)."""
        found: dict[str, Labels] = {}
        for entry, value in (await self._data.entries(labels_table(tenant))).items():
            device, _, key = entry.partition("/")
            if device and key:
                found.setdefault(device, {})[key] = value
        return found

    async def of_device(self, tenant: str, device: str) -> Labels:
        return (await self.of_tenant(tenant)).get(device, {})

    async def change(
        self, tenant: str, device: str, set_labels: Iterable[tuple[str, str]], remove: Iterable[str]
    ) -> Labels:
        """Check everything first (a bad label changes nothing), then write; the labels after."""
        wanted: Labels = {}
        for key, value in set_labels:
            check_key(key)
            check_value(key, value)
            if key in wanted and wanted[key] != value:
                raise BadLabel(f"label {key} is given twice with different values")
            wanted[key] = value
        dropped = {check_key(key) for key in remove}
        if both := sorted(dropped & set(wanted)):
            raise BadLabel(f"label {both[0]} is both set and removed")
        current = await self.of_device(tenant, device)
        after = {k: v for k, v in current.items() if k not in dropped} | wanted
        if len(after) > MAX_LABELS:
            raise BadLabel(f"a device carries at most {MAX_LABELS} labels; this would make {len(after)}")
        table = labels_table(tenant)
        for key in sorted(dropped & set(current)):
            await self._data.set_entry(table, f"{device}/{key}", None)
        for key, value in sorted(wanted.items()):
            if current.get(key) != value:
                await self._data.set_entry(table, f"{device}/{key}", value)
        return dict(sorted(after.items()))
