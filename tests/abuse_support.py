"""Helpers of the abuse-resistance tests: a served deployment with small `[abuse]` and
`[limits]` settings, clients bound to a chosen loopback source address (127.0.0.0/8 is all
local on Linux, so each address is a different "client" for the server's counters), and app
passwords made as `mss mailbox app-password` makes them."""

from __future__ import annotations

import asyncio
import imaplib
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support import Deployment, ServerProcess, drop_pg_database, make_deployment, start_server


def set_sections(config: Path, sections: dict[str, dict[str, object]]) -> None:
    """Add keys to TOML sections of a deployment's mss.toml (the section is created when
    missing; a key already there must not be given)."""
    text = config.read_text(encoding="utf-8")
    for name, values in sections.items():
        lines = "".join(f"{k} = {_toml(v)}\n" for k, v in values.items())
        header = f"[{name}]\n"
        if header in text:
            text = text.replace(header, header + lines, 1)
        else:
            text += f"\n{header}{lines}"
    config.write_text(text, encoding="utf-8")


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return str(v)


@contextmanager
def served(backend: str, tmp: Path, sections: dict[str, dict[str, object]]) -> Iterator[ServerProcess]:
    """`mss serve` of a new demo deployment whose mss.toml got `sections`."""
    dep, pg_name = make_deployment(tmp, backend)
    set_sections(dep.config, sections)
    server = start_server(dep)
    try:
        yield server
    finally:
        server.stop()
        if pg_name:
            drop_pg_database(pg_name)


class IMAP4From(imaplib.IMAP4_SSL):
    """imaplib's IMAPS client connecting from a chosen local address."""

    def __init__(self, host: str, port: int, *, source: str, ssl_context: ssl.SSLContext, timeout: float = 20):
        self._source = source
        super().__init__(host, port, ssl_context=ssl_context, timeout=timeout)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout, source_address=(self._source, 0))
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


class IMAP4PlainFrom(imaplib.IMAP4):
    """imaplib's clear-text IMAP client (then STARTTLS) connecting from a chosen local address."""

    def __init__(self, host: str, port: int, *, source: str, timeout: float = 20):
        self._source = source
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(self._source, 0))


def imaps(server: ServerProcess, entry: dict, source: str = "127.0.0.1") -> IMAP4From:
    ctx = server.deployment.client_context(entry)
    return IMAP4From(server.host, server.port("imaps"), source=source, ssl_context=ctx)


def imap_login(server: ServerProcess, entry: dict, password: str, source: str = "127.0.0.1") -> str:
    """The tagged result of IMAP LOGIN over IMAPS from `source`: "OK", or the NO text."""
    m = imaps(server, entry, source)
    try:
        try:
            m.login(entry["address"], password)
        except imaplib.IMAP4.error as exc:
            return str(exc)
        return "OK"
    finally:
        try:
            m.logout()
        except (imaplib.IMAP4.abort, OSError):
            pass


def smtp_client(server: ServerProcess, entry: dict | None, source: str = "127.0.0.1") -> smtplib.SMTP:
    """STARTTLS on `submission` from `source`, with `entry`'s certificate."""
    client = smtplib.SMTP(server.host, server.port("submission"), timeout=20, source_address=(source, 0))
    client.ehlo("client.test")
    client.starttls(context=server.deployment.client_context(entry))
    client.ehlo("client.test")
    return client


def auth_plain(client: smtplib.SMTP, address: str, password: str) -> tuple[int, bytes]:
    import base64

    blob = base64.b64encode(f"\0{address}\0{password}".encode()).decode()
    return client.docmd("AUTH", f"PLAIN {blob}")


def wait_for(predicate, timeout: float = 10.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def retry_after(text: str) -> int:
    """The seconds a throttled reply asks to wait ("try again in N s")."""
    m = re.search(r"try again in (\d+) s", text)
    assert m, text
    return int(m.group(1))


def _throttle(deployment: Deployment):
    from mss.config import resolve_database_url
    from mss.db.engine import create_engine, sessionmaker
    from mss.throttle import Throttle

    engine = create_engine(resolve_database_url(deployment.database_url, deployment.directory))
    return engine, Throttle(deployment.settings(), sessionmaker(engine))


def seed_failures(deployment: Deployment, keys: list[str], failures: int) -> None:
    """Earlier failures under `keys`, as if from an attack hours ago whose back-off is over:
    through `Throttle.attempt` with past clocks (two hours apart, longer than any cap), so
    the next real failure starts a long wait and a test need not wait its way up there."""
    from datetime import UTC, datetime, timedelta

    async def run() -> None:
        engine, throttle = _throttle(deployment)
        try:
            start = datetime.now(UTC) - timedelta(hours=2 * failures + 2)
            for i in range(failures):
                assert await throttle.attempt(keys, now=start + timedelta(hours=2 * i)) == 0
        finally:
            await engine.dispose()

    asyncio.run(run())


def throttle_wait(deployment: Deployment, keys: list[str]) -> float:
    async def run() -> float:
        engine, throttle = _throttle(deployment)
        try:
            return await throttle.wait(keys)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def throttle_rows(deployment: Deployment) -> dict[str, int]:
    """Every counter: key -> failures."""
    from sqlalchemy import select

    from mss.db.models import ThrottleCounter

    async def run() -> dict[str, int]:
        engine, throttle = _throttle(deployment)
        try:
            async with throttle._sessions() as s:
                rows = (await s.execute(select(ThrottleCounter.key, ThrottleCounter.failures))).all()
            return {k: f for k, f in rows}
        finally:
            await engine.dispose()

    return asyncio.run(run())


def non_reading_client(host: str, port: int, source: str, command: bytes, octets: int = 2_000_000) -> socket.socket:
    """A client that pipelines `command` over and over and never reads a reply: a 4 KB
    receive buffer, and sends until the kernel buffers are full (the server stopped reading
    because its replies cannot be delivered)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect((host, port))
    sock.setblocking(False)
    payload = command * (octets // len(command))
    sent = 0
    idle = 0
    while sent < len(payload) and idle < 20:
        try:
            sent += sock.send(payload[sent : sent + 65536])
            idle = 0
        except BlockingIOError:
            idle += 1
            time.sleep(0.01)
    return sock


def server_side_established(port: int, source: str) -> int:
    """How many ESTABLISHED TCP connections the server's `port` has with `source` (`ss`),
    counted on the server's side: a client that does not read still sees its own end open."""
    import subprocess

    out = subprocess.run(
        ["ss", "-Htn", "state", "established", f"( sport = :{port} and dst {source} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return len([line for line in out.splitlines() if line.strip()])
