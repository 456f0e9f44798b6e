"""Writing a file so a reader sees the old bytes or the new ones, never a torn half, and never
with wider permissions than asked for.

One implementation for every program (private keys, certificates and the CRL in ``auth``, the
server's Opus cache): it lives in ``comms`` because that is the one package every program may
import and that imports none of them (tests/test_layers.py); ``auth`` would do for the PKI but
is the wrong home for a cache file.

The steps: a temporary file in the same directory (so the rename never crosses a file
system), its mode set first (``mkstemp`` makes it 0600; nothing is written before the mode is
the asked one, and the rename publishes it already so), the bytes written and fsynced, then
``os.replace`` over the target and an fsync of the directory so the rename itself survives a
power cut (a Pi's SD card). Any failure removes the temporary file and leaves the target as it
was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` at permission ``mode`` (creating its directory), all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_dir(path.parent)


def _sync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable. Some file systems cannot fsync a directory: the
    rename is then as durable as they make it, which is no reason to fail a write that happened."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
