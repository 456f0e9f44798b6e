"""Start-up of both programs: settings from the command line, or one clear line and exit 1."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

S = TypeVar("S", bound=BaseSettings)


def parse_settings(cls: type[S], prog: str, argv: Sequence[str] | None) -> S | None:
    """Build ``cls`` from argv + env + .env; on a bad value print one line and return None."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return cls(_cli_parse_args=args)  # type: ignore[call-arg]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        print(f"{prog}: bad setting {where}: {first['msg']}", file=sys.stderr)
        return None
