"""`mss serve`: every listener in one process, stopped cleanly by SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from pathlib import Path

from mss.config import ConfigError, Settings, check_http_transport, default_config_path, load_settings
from mss.core import Core
from mss.logging_setup import setup_logging

log = logging.getLogger("mss.serve")


def _port(server: asyncio.AbstractServer) -> int:
    return server.sockets[0].getsockname()[1]


async def run(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Open the core, start SMTP, IMAP and HTTP, log `ready`, wait for a stop signal."""
    from imap.server import start as start_imap
    from smtp.server import start as start_smtp
    from web.server import start as start_web

    check_http_transport(settings)

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    core = await Core.open(settings)
    core.start_background()
    servers: dict[str, asyncio.AbstractServer] = {}
    http = None
    try:
        servers.update(await start_smtp(core))
        limits = settings.limits
        servers.update(
            await start_imap(
                core,
                max_connections=limits.imap_max_connections,
                max_per_ip=limits.imap_max_connections_per_ip,
                preauth_timeout=limits.imap_preauth_timeout_s,
            )
        )
        # uvicorn on this loop; the core is its WebServices (settings, directory).
        http = await start_web(core)
        ports = {name: _port(srv) for name, srv in servers.items()}
        ports["http"] = http.port
        log.info("ready host=%s ports=%s", settings.listen.host, json.dumps(ports, sort_keys=True))
        await stop.wait()
        log.info("stopping")
    finally:
        if http is not None:
            http.close()
        for srv in servers.values():
            srv.close()
        for srv in servers.values():
            try:
                await asyncio.wait_for(srv.wait_closed(), 5)
            except TimeoutError:
                pass
        if http is not None:
            # uvicorn gives requests in flight web.server.GRACEFUL_SHUTDOWN_S, then cancels them.
            try:
                await asyncio.wait_for(http.wait_closed(), 10)
            except TimeoutError:
                log.warning("http listener did not stop in time")
        await core.close()
        log.info("stopped")


def main(config: Path | str | None) -> None:
    settings = load_settings(config)
    try:
        check_http_transport(settings)
    except ConfigError as exc:
        raise ConfigError(f"{config or default_config_path()}: {exc}") from None
    setup_logging(settings)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(run(settings))
