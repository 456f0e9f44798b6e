"""Structured logging shared by server and device: one event per line.

``log.info("session.open", extra={"tenant": ..., "device": ...})``. JSON lines
for machines (containers), ``key=value`` text for terminals. The formatter
never prints tokens or keys because callers never pass them: fields are
explicit and named.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Literal

LogFormat = Literal["json", "text", "auto"]

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class FieldSafeLogger(logging.Logger):
    """A logger whose ``extra`` can never make the log call raise.

    ``logging`` raises ``KeyError`` when an ``extra`` key names a ``LogRecord`` attribute
    (``filename``, ``module``, ``message``...): inside a handler that turns a change already made
    into an error answer. Such a key is kept, renamed ``<key>_``; the test suite (which runs without
    this class) still fails on it, so the rename is a last line of defence, not a habit.
    """

    def makeRecord(
        self,
        name: str,
        level: int,
        fn: str,
        lno: int,
        msg: object,
        args: Any,
        exc_info: Any,
        func: str | None = None,
        extra: Any = None,
        sinfo: str | None = None,
    ) -> logging.LogRecord:
        if extra:
            extra = {(f"{k}_" if k in _STANDARD else k): v for k, v in extra.items()}
        return super().makeRecord(name, level, fn, lno, msg, args, exc_info, func, extra, sinfo)


def _make_loggers_field_safe() -> None:
    """Loggers are created at import (``getLogger(__name__)``), before logging is configured."""
    logging.setLoggerClass(FieldSafeLogger)
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if type(logger) is logging.Logger:
            logger.__class__ = FieldSafeLogger


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        parts = [ts, f"{record.levelname:<7}", record.getMessage()]
        parts += [f"{k}={v}" for k, v in _fields(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class StaticFields(logging.Filter):
    """Fields every line of this process carries (e.g. which node and worker wrote it)."""

    def __init__(self, fields: dict[str, object]) -> None:
        super().__init__()
        self._fields = fields

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in self._fields.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def configure_logging(
    level: str = "INFO", fmt: LogFormat = "auto", static: dict[str, object] | None = None
) -> None:
    """Install one stderr handler on the root logger (idempotent)."""
    _make_loggers_field_safe()
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    if static:
        handler.addFilter(StaticFields(static))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
