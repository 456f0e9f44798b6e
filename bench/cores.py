"""Which cores the server under test gets and which the load generators get.

On a shared machine the load generators (Python, like the server) and the server fight for the
same cores, so a figure swings with the generators' load and "CPU per packet" includes waiting
for a core. Pinning each side to its own half of the cores (``os.sched_setaffinity``, inherited
by every process and thread started afterwards) lets the server's CPU be read on cores of its
own, and shows when the generators, not the server, are the limit. The split is taken from the
cores this process may use when this module is first imported, before anything is pinned.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

AVAILABLE = frozenset(os.sched_getaffinity(0))


@dataclass(frozen=True)
class CoreSplit:
    server: frozenset[int]
    generators: frozenset[int]

    @property
    def shared(self) -> bool:
        """One core only: both sides run on it (nothing to pin apart)."""
        return self.server == self.generators

    def describe(self) -> str:
        if self.shared:
            return f"server and load generators share {_cores(self.server)} (a single core: not pinned apart)"
        return f"server pinned to {_cores(self.server)}, load generators to {_cores(self.generators)}"


def split_cores(available: Iterable[int] = AVAILABLE) -> CoreSplit:
    """The lower half of the cores for the server, the upper half for the generators (a single
    core is shared; an odd count gives the generators the extra core: they cost more per packet)."""
    cores = sorted(set(available))
    if not cores:
        raise ValueError("no cores to run on")
    if len(cores) == 1:
        return CoreSplit(frozenset(cores), frozenset(cores))
    half = len(cores) // 2
    return CoreSplit(frozenset(cores[:half]), frozenset(cores[half:]))


def pin(cores: Iterable[int]) -> None:
    """Pin this process (and whatever it starts from now on) to ``cores``."""
    os.sched_setaffinity(0, set(cores))


def pin_process(pid: int, cores: Iterable[int]) -> None:
    """Pin a process just started (before its interpreter has made any thread): every thread
    it makes from then on (gRPC's included) and every process it starts inherit the cores.
    Done from the parent rather than in a ``preexec_fn``, which is unsafe in a threaded parent."""
    os.sched_setaffinity(pid, set(cores))


def _cores(cores: frozenset[int]) -> str:
    ordered = sorted(cores)
    return f"core {ordered[0]}" if len(ordered) == 1 else "cores " + ",".join(map(str, ordered))
