"""Refused TLS handshakes, seen from Python: counted and logged in our format.

gRPC's C-core rejects a bad client certificate inside the handshake and only
writes its own stderr line; Python never hears of that connection. Two things
are reachable: the server-credentials fetch callback runs once per handshake
(``started``), and the interceptor sees the peer address of every call
(``used``: connections that got as far as a call). Handshakes that never became
a used connection are, almost always, refused ones (a client that connects and
never calls counts too). Once a minute a ``tls.handshakes_failed`` warning says
how many; ``audio_tls_handshakes_total{outcome}`` counts them for alerting.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict

from server import metrics

log = logging.getLogger(__name__)

REPORT_EVERY_S = 60.0
PEERS_REMEMBERED = 65_536  # connections recognised as seen before (bounded memory)


class HandshakeMonitor:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # started() runs on a gRPC core thread
        self.started = 0
        self.used = 0
        self._reported = (0, 0)
        self._peers: OrderedDict[str, None] = OrderedDict()

    def handshake_started(self) -> None:
        with self._lock:
            self.started += 1

    def call_from(self, peer: str) -> None:
        """Every authenticated or refused call: its connection's handshake succeeded."""
        if peer in self._peers:
            self._peers.move_to_end(peer)
            return
        self._peers[peer] = None
        if len(self._peers) > PEERS_REMEMBERED:
            self._peers.popitem(last=False)
        with self._lock:
            self.used += 1
        metrics.TLS_HANDSHAKES.labels(outcome="used").inc()

    def check(self) -> int:
        """Log and count the handshakes since the last check that never became a used connection."""
        with self._lock:
            started, used = self.started, self.used
        failed = max(0, (started - self._reported[0]) - (used - self._reported[1]))
        self._reported = (started, used)
        if failed:
            metrics.TLS_HANDSHAKES.labels(outcome="failed").inc(failed)
            log.warning(
                "tls.handshakes_failed",
                extra={
                    "count": failed,
                    "hint": "clients whose certificate the server refused (foreign CA, expired), "
                    "or that connected and never called",
                },
            )
        return failed

    async def run(self) -> None:
        while True:
            await asyncio.sleep(REPORT_EVERY_S)
            self.check()
