"""``audio-server`` / ``python -m server``: run the service until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from auth.errors import AuthError
from comms.logfmt import configure_logging
from server.app import start_server
from server.settings import ServerSettings

log = logging.getLogger("server")


async def serve(settings: ServerSettings) -> None:
    app = await start_server(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"audio-server listening on {settings.bind} (port {app.port}, mTLS)",
        file=sys.stderr,
        flush=True,
    )
    await stop.wait()
    log.info("server.draining", extra={"grace_s": settings.shutdown_grace_s})
    await app.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = ServerSettings(_cli_parse_args=args)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        print(f"audio-server: bad setting {where}: {first['msg']}", file=sys.stderr)
        return 1
    configure_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(serve(settings))
    except (AuthError, OSError) as exc:
        print(f"audio-server: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
