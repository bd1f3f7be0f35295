"""`mss serve`: every listener in one process, stopped cleanly by SIGTERM or SIGINT."""
from __future__ import annotations

import asyncio
import json
import logging
import signal
from pathlib import Path

from mss.config import Settings, load_settings
from mss.core import Core
from mss.http import health_handler, jwks_handler, serve_http
from mss.logging_setup import setup_logging

log = logging.getLogger("mss.serve")


def _port(server: asyncio.AbstractServer) -> int:
    return server.sockets[0].getsockname()[1]


async def run(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Open the core, start SMTP, IMAP and HTTP, log `ready`, wait for a stop signal."""
    from imap.server import start as start_imap
    from smtp.server import start as start_smtp

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
        servers["http"] = await serve_http(settings.listen.host, settings.listen.http, _http_handlers(core))
        ports = {name: _port(srv) for name, srv in servers.items()}
        log.info("ready host=%s ports=%s", settings.listen.host, json.dumps(ports, sort_keys=True))
        await stop.wait()
        log.info("stopping")
    finally:
        for srv in servers.values():
            srv.close()
        for srv in servers.values():
            try:
                await asyncio.wait_for(srv.wait_closed(), 5)
            except asyncio.TimeoutError:
                pass
        await core.close()
        log.info("stopped")


def _http_handlers(core: Core) -> list:
    handlers = [health_handler, jwks_handler(core.settings)]
    try:
        from annuaire.http import handle as annuaire_handle
    except ImportError:
        return handlers

    async def directory(method: str, path: str, query: dict[str, list[str]]):
        return await annuaire_handle(method, path, query, core.sessions)

    handlers.append(directory)
    return handlers


def main(config: Path | str | None) -> None:
    settings = load_settings(config)
    setup_logging(settings)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(run(settings))
