"""How many live pages (``/events`` streams) one console session and one operator may hold.

Each stream is a watch on the whole fleet: without a cap one session could open any number
(60 were accepted) while gRPC calls are capped at 32 per caller. Counted per process: a page
that reconnects lands on the same worker's count or another's, never on none.
"""

from __future__ import annotations

from collections import Counter

PER_SESSION = 4  # a few tabs
PER_OPERATOR = 16  # several signed-in browsers of one operator
LIVE_LIMIT_TEXT = (
    f"Too many live pages are open for this sign-in (at most {PER_SESSION}, "
    f"{PER_OPERATOR} per operator); close some tabs and reload."
)


class LiveStreams:
    def __init__(self, per_session: int = PER_SESSION, per_operator: int = PER_OPERATOR) -> None:
        self._per_session = per_session
        self._per_operator = per_operator
        self._sessions: Counter[str] = Counter()
        self._operators: Counter[str] = Counter()

    def open(self, session: str, operator: str) -> bool:
        """One more stream, or False when either cap is reached (nothing counted then)."""
        if self._sessions[session] >= self._per_session or self._operators[operator] >= self._per_operator:
            return False
        self._sessions[session] += 1
        self._operators[operator] += 1
        return True

    def close(self, session: str, operator: str) -> None:
        for counter, key in ((self._sessions, session), (self._operators, operator)):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]
