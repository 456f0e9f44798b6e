"""Commands an operator sends to a live device, as they travel between nodes.

Each one is applied by the node holding the device's session, through the same
paths as the device's own actions: a press goes through the state machine like
a button, a mode choice is the state machine's ``ModeSelected``, a disconnect
or revocation ends the session through the registry's one ending path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PRESS, MODE, DISCONNECT, REVOKE = "press", "mode", "disconnect", "revoke"
KINDS = (PRESS, MODE, DISCONNECT, REVOKE)


@dataclass(frozen=True)
class Command:
    op: str
    button: int = 0
    mode: int = 0

    def __post_init__(self) -> None:
        if self.op not in KINDS:
            raise ValueError(f"unknown command {self.op!r}")

    @classmethod
    def press(cls, button: int) -> Command:
        return cls(PRESS, button=button)

    @classmethod
    def select_mode(cls, mode: int) -> Command:
        return cls(MODE, mode=mode)

    def to_data(self) -> dict[str, Any]:
        return {"op": self.op, "button": self.button, "mode": self.mode}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Command:
        return cls(str(data["op"]), int(data.get("button", 0)), int(data.get("mode", 0)))
