"""Trace fields: the `Received:` line each hop prepends (RFC 5321 4.4) and the hop count
that detects loops (RFC 5321 6.3).

Pure functions, no I/O: the submission path (`mss.outbound`) and the inbound relay
(`mss.inbound`) both build their `Received:` here, so every hop of this operator reads the
same way in a message's header.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from email.utils import format_datetime

from crypto.rfc5322 import scan
from mss.message import MAX_HEADER_FIELDS
from mss.peers import peer_host
from mss.records import TraceInfo

__all__ = ["FOLD_AT", "hop_count", "new_id", "received_field"]

#: RFC 5322 2.1.1: lines SHOULD be at most 78 characters; the field is folded before that.
FOLD_AT = 78

#: What may appear as an atom of the field as we write it: anything else a client sent (its
#: EHLO name is its own choice) is replaced, so that a hostile name cannot add a line, a
#: comment end or a semicolon (which would move the date) to our trace field.
_UNSAFE = re.compile(r"[^A-Za-z0-9.\-_\[\]:]")
_PROTOCOL = re.compile(r"^[A-Za-z0-9-]{1,32}$")


def new_id() -> str:
    """An id for the `id` clause (RFC 5321 4.4: the receiving host's own identifier of the
    transaction), 64 random bits: also written in the log line of the delivery."""
    return secrets.token_hex(8).upper()


def _atom(value: str, fallback: str) -> str:
    cleaned = _UNSAFE.sub("_", value.strip())[:255]
    return cleaned or fallback


def _fold(tokens: list[str]) -> bytes:
    """Join `tokens` with spaces, folding (CRLF TAB) before a token that would pass
    `FOLD_AT` (RFC 5322 2.2.3: folding only where white space is allowed)."""
    lines: list[str] = []
    line = ""
    for token in tokens:
        candidate = f"{line} {token}" if line else token
        if line and len(candidate) > FOLD_AT:
            lines.append(line)
            line = "\t" + token
        else:
            line = candidate
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def received_field(
    trace: TraceInfo | None, *, by: str, recipient: str | None, id: str, now: datetime | None = None
) -> bytes:
    """``Received: from HELO ([IP]) by BY with PROTO (TLS) id ID for <RCPT>; DATE`` CRLF.

    RFC 5321 4.4 (Stamp: From-domain By-domain Opt-info ";" date-time): the client's EHLO
    name and its address as a TCP-info comment, our host, the protocol name of RFC 3848
    (ESMTPS, ESMTPSA, UTF8SMTPS...), the TLS version and cipher as a comment (what Postfix
    writes too), our id, and the recipient only when there is one (RFC 5321 7.6: naming
    every recipient of a message in each copy discloses the Bcc list). Without `trace` (a
    message made in the core: the portal, a DSN) the ``from`` and ``with`` clauses are left
    out, as Postfix's pickup does ("Received: by host id X; date").
    """
    when = (now or datetime.now(UTC)).replace(microsecond=0)
    tokens = ["Received:"]
    if trace is not None:
        host = peer_host(trace.peer)
        # RFC 5321 4.1.3 address literals: [192.0.2.1], [IPv6:2001:db8::1].
        ip = _atom(host, "unknown")
        tcp_info = (f"([IPv6:{ip}])" if ":" in ip else f"([{ip}])") if host and host != "?" else "(unknown)"
        tokens += ["from", _atom(trace.helo, "unknown"), tcp_info]
    tokens += ["by", _atom(by, "localhost")]
    if trace is not None:
        protocol = trace.protocol if _PROTOCOL.match(trace.protocol) else "ESMTP"
        tokens += ["with", protocol]
        if trace.tls:
            tokens.append("(" + re.sub(r"[()\\\r\n]", "_", trace.tls)[:200] + ")")
    tokens += ["id", _atom(id, "0")]
    if recipient:
        rcpt = re.sub(r"[<>\s\\\"()]", "", recipient)
        if rcpt:
            tokens += ["for", f"<{rcpt}>;"]
        else:
            tokens[-1] += ";"
    else:
        tokens[-1] += ";"
    tokens += format_datetime(when).split(" ")
    return _fold(tokens)


def hop_count(raw: bytes, *, max_fields: int | None = MAX_HEADER_FIELDS) -> int:
    """How many `Received:` fields the message's header section has: RFC 5321 6.3's simple
    loop detection (every hop adds one; a message that went round has many). Raises
    `crypto.rfc5322.TooManyFields` past `max_fields` (the bound of `mss.message`)."""
    return sum(1 for f in scan(raw, max_fields=max_fields).fields if f.key == "received")
