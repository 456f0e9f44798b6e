"""Reload material when its files change, without a restart.

Kubernetes updates mounted Secrets by swapping a symlink, and editors replace
files, so inotify on one inode is unreliable; polling a cheap ``stat`` of each
path is not. A reload that fails keeps the previous material and is logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from server import metrics
from server.supervision import HealthCallback, TaskOwner

log = logging.getLogger(__name__)

Signature = tuple[tuple[str, int, int, int], ...]


def signature(paths: list[Path]) -> Signature:
    """(path, inode, size, mtime_ns) of each path and, for a directory, of each entry in it."""
    items: list[tuple[str, int, int, int]] = []
    for path in paths:
        candidates = sorted(path.iterdir()) if path.is_dir() else [path]
        for candidate in candidates:
            try:
                st = candidate.stat()
            except OSError:
                items.append((str(candidate), 0, -1, 0))
                continue
            items.append((str(candidate), st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(items)


class FileWatcher:
    """Calls ``reload()`` whenever the signature of ``paths`` changes. Owned by the app."""

    def __init__(
        self,
        name: str,
        paths: list[Path],
        reload: Callable[[], None],
        interval_s: float,
        every_interval: Callable[[], object] | None = None,
    ) -> None:
        self.name = name
        self._paths = paths
        self._reload = reload
        self._every_interval = every_interval  # checks that need no file change (a CRL going stale)
        self._interval_s = interval_s
        self._last = signature(paths)
        self._tasks = TaskOwner(f"watch-{name}")
        self.attempts = 0  # reloads tried (a change was seen), whatever their outcome: observable
        self.last_ok: bool | None = None

    def start(self, on_failing: HealthCallback | None = None) -> None:
        self._tasks.supervise(f"watch-{self.name}", self._run, on_failing)

    async def close(self) -> None:
        await self._tasks.close()

    def check(self) -> bool:
        """Reload if something changed; True when a reload succeeded."""
        current = signature(self._paths)
        if current == self._last:
            return False
        self._last = current
        try:
            self._reload()
        except Exception as exc:
            reason = getattr(exc, "reason", type(exc).__name__)
            log.error(
                "reload.failed",
                extra={"what": self.name, "reason": reason, "error": str(exc), "kept": "previous"},
            )
            ok = False
        else:
            log.info("reload.done", extra={"what": self.name})
            ok = True
        metrics.RELOADS.labels(what=self.name, result="ok" if ok else "refused").inc()
        self.last_ok = ok
        self.attempts += 1
        return ok

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            self.check()
            if self._every_interval is not None:
                self._every_interval()
