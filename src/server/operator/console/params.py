"""Numbers from a request (query strings, form fields, path parts), parsed one way.

``str.isdigit()`` admits "²" and "٣", which ``int()`` or protobuf then refuse deep in a handler;
a 20-digit mode overflows a protobuf field. Every number the console reads goes through
``whole_number``: ASCII digits only, a bounded length and range, or ``BadParameter`` with a
sentence the page shows (HTTP 400).
"""

from __future__ import annotations

import re

MAX_DIGITS = 9  # below 2**31: fits every protobuf integer field the console fills
_ASCII_DIGITS = re.compile(rf"[0-9]{{1,{MAX_DIGITS}}}")


class BadParameter(ValueError):
    """A request value that is not what the page asks for; its text says what was wrong."""


def whole_number(text: str, what: str, *, below: int | None = None) -> int:
    """``text`` as a non-negative integer (less than ``below`` if given)."""
    if not _ASCII_DIGITS.fullmatch(text):
        raise BadParameter(f"{what} must be a whole number of at most {MAX_DIGITS} digits (0-9)")
    value = int(text)
    if below is not None and value >= below:
        raise BadParameter(f"{what} {value} is outside 0..{below - 1}")
    return value
