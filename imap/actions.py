"""What the session hands the I/O layer besides responses, and what an AUTHENTICATE in
progress keeps: the small values that command handlers, the session and the asyncio layer
(`imap.server`) share.

They live here, below all three, so that no handler imports the session module (which
imports the handlers) and the asyncio layer needs no handler.
"""

from __future__ import annotations

from dataclasses import dataclass

from imap.protocol.response import Response
from mss.services import SaslExchange


@dataclass(frozen=True)
class StartTLS:
    """Action: perform the server side of the TLS handshake now, then call
    `Session.tls_started` (RFC 9051 6.2.1)."""


@dataclass(frozen=True)
class Close:
    """Action: close the connection once what precedes it has been written."""


Action = StartTLS | Close
#: What `Session.process` returns, in the order to act on it.
Output = Response | Action


@dataclass(frozen=True)
class PendingAuthentication:
    """An AUTHENTICATE waiting for the client's next line (RFC 9051 6.2.2): the command's tag
    and the core's exchange, which knows which step it is at."""

    tag: str
    exchange: SaslExchange
