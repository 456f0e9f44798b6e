"""What one device needs to play an announcement: the sound, the instant, the priority.

The announcement core (``server.announce``) builds one ``Cue`` per announcement
and node and hands it to every targeted device live there; a schedule or a live
talk hands over a cue the same way, its clip a ``LiveFeed`` (packets as they
arrive; see ``server.audio.live``). ``t0`` is in this node's loop time, so
every device of the node starts on one timeline (a talk starts at once).
"""

from __future__ import annotations

from dataclasses import dataclass

from server.audio.library import Clip
from server.audio.live import LiveFeed


@dataclass(frozen=True)
class Cue:
    announcement: str  # its id (logs, the device's recent events)
    clip: Clip | LiveFeed
    t0: float  # loop time packet 0 is due: the same instant for every device
    priority: int
    resume: bool = True  # the interrupted sound continues afterwards

    @property
    def talk(self) -> bool:
        return isinstance(self.clip, LiveFeed)


STARTED, REFUSED, OFFLINE = "started", "refused", "offline"
BUSY = "busy"  # a talk reached a device already in another talk (one talker per device)
