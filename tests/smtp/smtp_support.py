"""Support for the SMTP front-end tests: the listeners of `smtp.server.start` running in
process (on their own event loop thread, uvloop as in `mss serve`) over the demo deployment,
real sockets on 127.0.0.1 and real TLS with the demo's certificates.

In process rather than `mss serve` so that a test can read the server's log records and
swap one core service for a failing one (`SmtpServer.patched`); the bytes on the wire and
the core underneath are the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import smtplib
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support import Deployment, stored_messages

# The shared in-process server's limits, small so that limit tests run fast.
MAX_MESSAGE_SIZE = 256 * 1024
MAX_RECIPIENTS = 10

ENHANCED = re.compile(rb"^[245]\.\d{1,3}\.\d{1,3} ")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.guard = threading.Lock()
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))  # with tracebacks

    def emit(self, record: logging.LogRecord) -> None:
        with self.guard:
            self.lines.append(self.format(record))


@dataclass
class SmtpServer:
    deployment: Deployment
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=dict)
    core: Any = None
    loop: asyncio.AbstractEventLoop | None = None
    records: _Records = field(default_factory=_Records)
    _thread: threading.Thread | None = None
    _stop: asyncio.Event | None = None

    def port(self, role: str) -> int:
        return self.ports[role]

    # -- life -------------------------------------------------------------------------------

    def start(self, **limits: Any) -> SmtpServer:
        ready = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            from mss.core import Core
            from smtp.server import start, stop

            settings = self.deployment.settings()
            for name, value in limits.items():
                setattr(settings.limits, name, value)
            self.host = settings.listen.host
            try:
                self.core = await Core.open(settings)
                servers = await start(self.core)
            except BaseException as exc:  # noqa: BLE001 - reported to the test thread
                failure.append(exc)
                ready.set()
                return
            self.ports = {k: s.sockets[0].getsockname()[1] for k, s in servers.items()}
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            ready.set()
            await self._stop.wait()
            await stop(servers)
            await self.core.close()

        def run() -> None:
            try:
                import uvloop

                uvloop.run(main())
            except ImportError:
                asyncio.run(main())

        logger = logging.getLogger("mss")
        logger.addHandler(self.records)
        logger.setLevel(logging.INFO)
        self._thread = threading.Thread(target=run, name="smtp-test-server", daemon=True)
        self._thread.start()
        if not ready.wait(60):
            raise RuntimeError("SMTP test server did not start")
        if failure:
            raise failure[0]
        return self

    def close(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(15)
        logging.getLogger("mss").removeHandler(self.records)

    # -- looking inside -----------------------------------------------------------------------

    def log_text(self) -> str:
        with self.records.guard:
            return "\n".join(self.records.lines)

    def log_mark(self) -> int:
        with self.records.guard:
            return len(self.records.lines)

    def log_since(self, mark: int) -> str:
        with self.records.guard:
            return "\n".join(self.records.lines[mark:])

    def stored(self, mailbox: str, folder: str = "INBOX") -> int:
        return len(asyncio.run(stored_messages(self.deployment, mailbox, folder)))

    def total_stored(self) -> int:
        """Messages in every folder of every demo mailbox: "nothing stored" means unchanged."""
        total = 0
        for entry in self.deployment.doc["mailboxes"]:
            for folder in ("INBOX", "Sent"):
                total += self.stored(entry["address"], folder)
        return total

    @contextlib.contextmanager
    def patched(self, obj: Any, name: str, value: Any) -> Iterator[None]:
        """Swap an attribute of a core object for the duration of a test."""
        old = getattr(obj, name)
        setattr(obj, name, value)
        try:
            yield
        finally:
            setattr(obj, name, old)


# -- clients ------------------------------------------------------------------------------------


def client_context(dep: Deployment, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """Trusts only the deployment's anchors; presents `cert` when given."""
    ctx = ssl.create_default_context(cafile=str(dep.trust_anchors))
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def entry_context(dep: Deployment, entry: dict | None) -> ssl.SSLContext:
    if entry is None:
        return client_context(dep)
    return client_context(dep, dep.path(entry, "tls_cert"), dep.path(entry, "tls_key"))


def starttls_client(server: SmtpServer, ctx: ssl.SSLContext, *, timeout: float = 20) -> smtplib.SMTP:
    client = smtplib.SMTP(server.host, server.port("submission"), local_hostname="client.test", timeout=timeout)
    client.ehlo()
    client.starttls(context=ctx)
    client.ehlo()
    return client


def smtps_client(server: SmtpServer, ctx: ssl.SSLContext, *, timeout: float = 20) -> smtplib.SMTP_SSL:
    client = smtplib.SMTP_SSL(
        server.host, server.port("submissions"), local_hostname="client.test", context=ctx, timeout=timeout
    )
    client.ehlo()
    return client


def connect(server: SmtpServer, ctx: ssl.SSLContext, implicit: bool) -> smtplib.SMTP:
    return smtps_client(server, ctx) if implicit else starttls_client(server, ctx)


def raw_command(client: smtplib.SMTP, data: bytes) -> tuple[int, bytes]:
    """Send bytes exactly as given (smtplib would fix line ends) and read one reply."""
    client.send(data)
    return client.getreply()


def message(sender: str, to: str, body: str = "Bonjour.\r\n", *, subject: str = "test") -> bytes:
    return (
        f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
        "Date: Mon, 02 Nov 2026 10:00:00 +0100\r\nMessage-ID: <t@client.test>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body
    ).encode("utf-8")


def handshake_fails(fn) -> bool:
    """True when `fn` dies on TLS: TLS 1.3 reports a refused client certificate on the
    first read after the handshake, TLS 1.2 during it."""
    try:
        fn()
    except (TimeoutError, ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError, OSError):
        return True
    return False
