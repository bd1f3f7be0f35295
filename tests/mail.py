"""Building and sending test messages with real clients (smtplib over TLS)."""

from __future__ import annotations

import smtplib
import subprocess
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
