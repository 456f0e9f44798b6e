"""Argument types shared by the CLI's commands.

A number an operator types goes into a protobuf ``uint32`` field: a negative or huge value would
stop the command with protobuf's ``ValueError`` and a traceback instead of a usage line.
"""

from __future__ import annotations

import argparse

MAX_WHOLE = 2**31 - 1


def whole(text: str) -> int:
    """argparse ``type``: a whole number 0 or more (as the server's fields take)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number") from None
    if not 0 <= value <= MAX_WHOLE:
        raise argparse.ArgumentTypeError(f"{value} is outside 0..{MAX_WHOLE}")
    return value
