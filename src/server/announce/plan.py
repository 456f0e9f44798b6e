"""What an announcement is, as it travels between nodes, and what became of it.

An ``Announcement`` names its sound (a ``SoundChoice``: every node plays the same
blob), the instant every device starts (wall clock: the nodes' clocks are kept
in step by NTP, their loop clocks are not comparable), a priority and whether
the interrupted sounds resume. The targets travel beside it, per node.
``Outcome`` is per device: started, refused (a higher or equal announcement
plays there), busy (a talk reached a device in another talk) or offline (no
live session where it was expected).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server.audio.tenant_sounds import SoundChoice

MAX_PRIORITY = 9


@dataclass(frozen=True)
class Announcement:
    id: str
    tenant: str
    sound: SoundChoice
    start_at: float  # unix time every targeted device starts
    priority: int = 0
    resume: bool = True

    def to_data(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "sound": self.sound.to_data(),
            "start_at": self.start_at,
            "priority": self.priority,
            "resume": self.resume,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Announcement:
        return cls(
            str(data["id"]),
            str(data["tenant"]),
            SoundChoice.from_data(dict(data["sound"])),
            float(data["start_at"]),
            int(data["priority"]),
            bool(data["resume"]),
        )


@dataclass
class Outcome:
    """Device ids by what happened to them."""

    started: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    offline: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # talks only

    def add(self, other: Outcome) -> None:
        self.started += other.started
        self.refused += other.refused
        self.offline += other.offline
        self.busy += other.busy

    def sorted(self) -> Outcome:
        return Outcome(*(sorted(ids) for ids in (self.started, self.refused, self.offline, self.busy)))

    def to_data(self) -> dict[str, list[str]]:
        data = {"started": self.started, "refused": self.refused, "offline": self.offline}
        return {**data, "busy": self.busy} if self.busy else data  # an announcement is never busy

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Outcome:
        kinds = ("started", "refused", "offline", "busy")
        return cls(*([str(d) for d in data.get(k, [])] for k in kinds))
