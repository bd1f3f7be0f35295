"""Building and sending test messages with real clients (smtplib over TLS)."""

from __future__ import annotations

import re
import smtplib
import socket
import subprocess
import time
import uuid
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid
from pathlib import Path

from support import Deployment, ServerProcess


def build_message(sender: str, to: list[str], subject: str, body: str, *, extra: str = "") -> tuple[bytes, str]:
    """A plain RFC 5322 message with CRLF line ends, and its Message-ID."""
    msgid = make_msgid(idstring=uuid.uuid4().hex[:8], domain=sender.rpartition("@")[2])
    head = (
        f"From: <{sender}>\r\n"
        f"To: {', '.join(f'<{t}>' for t in to)}\r\n"
        f"Subject: {subject}\r\n"
        f"Date: {format_datetime(datetime.now(UTC))}\r\n"
        f"Message-ID: {msgid}\r\n"
        f"{extra}"
        "MIME-Version: 1.0\r\n"
        'Content-Type: text/plain; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: 8bit\r\n"
    )
    return (head + "\r\n" + body.replace("\n", "\r\n") + "\r\n").encode("utf-8"), msgid


def smtp_submission(server: ServerProcess, entry: dict | None, *, implicit: bool = False, timeout: float = 30):
    """An authenticated-by-certificate SMTP client on submission (STARTTLS) or submissions."""
    dep = server.deployment
    ctx = dep.client_context(entry)
    if implicit:
        client = smtplib.SMTP_SSL(server.host, server.port("submissions"), context=ctx, timeout=timeout)
        client.ehlo("client.test")
    else:
        client = smtplib.SMTP(server.host, server.port("submission"), timeout=timeout)
        client.ehlo("client.test")
        client.starttls(context=ctx)
        client.ehlo("client.test")
    return client


def find_stored(messages: list[bytes], msgid: str) -> bytes:
    hits = [m for m in messages if msgid.encode() in m]
    assert len(hits) == 1, f"expected one stored message with {msgid}, found {len(hits)}"
    return hits[0]


def openssl_decrypt(deployment: Deployment, entry: dict, stored: bytes, tmp: Path) -> bytes:
    """Decrypt a stored message with the real `openssl cms` and the mailbox's private key."""
    src = tmp / f"stored-{uuid.uuid4().hex}.eml"
    src.write_bytes(stored)
    out = subprocess.run(
        [
            "openssl",
            "cms",
            "-decrypt",
            "-in",
            str(src),
            "-recip",
            str(deployment.path(entry, "smime_cert")),
            "-inkey",
            str(deployment.path(entry, "smime_key")),
        ],
        capture_output=True,
        check=True,
    )
    return out.stdout


class RawImap:
    """A line-level IMAP client over TLS with a client certificate: imaplib has no IDLE."""

    def __init__(self, srv: ServerProcess, entry: dict) -> None:
        ctx = srv.deployment.client_context(entry)
        raw = socket.create_connection((srv.host, srv.port("imaps")), timeout=20)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        self.buf = b""
        self.n = 0
        assert b"OK" in self.line()

    def line(self, timeout: float = 20) -> bytes:
        self.sock.settimeout(timeout)
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            self.buf += data
        out, self.buf = self.buf.split(b"\r\n", 1)
        return out

    def command(self, text: str) -> list[bytes]:
        self.n += 1
        tag = f"t{self.n}"
        self.sock.sendall(f"{tag} {text}\r\n".encode())
        lines = []
        while True:
            ln = self.line()
            lines.append(ln)
            if ln.startswith(tag.encode() + b" "):
                assert ln.startswith(f"{tag} OK".encode()), lines
                return lines

    def idle(self) -> None:
        self.sock.sendall(b"idle IDLE\r\n")
        while not self.line().startswith(b"+"):
            pass

    def wait_for(self, pattern: bytes, timeout: float) -> tuple[bytes, float]:
        """The first line matching `pattern`, and when it came (time.monotonic)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern!r} within {timeout}s")
            try:
                ln = self.line(left)
            except TimeoutError:
                continue
            if re.search(pattern, ln):
                return ln, time.monotonic()

    def done(self) -> None:
        self.sock.sendall(b"DONE\r\n")
        while not self.line().startswith(b"idle "):
            pass

    def close(self) -> None:
        try:
            self.command("LOGOUT")
        except (OSError, AssertionError, ConnectionError):
            pass
        self.sock.close()


def imap_login(srv: ServerProcess, entry: dict) -> RawImap:
    c = RawImap(srv, entry)
    c.command("AUTHENTICATE EXTERNAL =")
    return c


def send(srv: ServerProcess, sender: dict, to: str, subject: str) -> tuple[str, float]:
    raw, msgid = build_message(sender["address"], [to], subject, "Bonjour")
    with smtp_submission(srv, sender) as client:
        assert client.sendmail(sender["address"], [to], raw) == {}
        acked = time.monotonic()
    return msgid, acked
