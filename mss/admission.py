"""Connection caps of the SMTP and IMAP listeners that do not lock legitimate users out.

A flat "N connections per address" cap lets anybody who can reach a port hold N idle
connections and keep everyone else behind that address out (issue 13: 50 anonymous IMAP
connections made every later one from that address get BYE). Here a connection is one of:

- *pre-authentication* (it has proved nothing yet): from its accept until it authenticates,
  or its TLS handshake presents a client certificate the TLS stack validated against the
  trust anchors (`promote`). These have their own, small cap per source (`max_preauth_per_ip`)
  and a short life (`preauth_timeout_s`); when a source is at its cap, the *oldest* of its
  pre-authentication connections is closed to make room for the newcomer if it is at least
  `evict_after_s` old (else the newcomer is refused: a burst of new connections cannot push
  out a client that is just authenticating), so an idle hoard never keeps a client out,
  while the source never holds more than the cap.
- *authenticated*: counted against `max_per_ip`, as before.

Every connection counts against `max_total`; when that is reached, the oldest
pre-authentication connection of any source is closed for the newcomer, and only a server
full of authenticated connections refuses one. A slot is given back when its connection ends
(`Ticket.release`, idempotent), so a client is never refused because of connections that
have gone.

Sources are IPv4 addresses and IPv6 /64 networks (`source_network`): one IPv6 host usually
has a whole /64 to pick addresses from.

A connection the server ends (evicted, timed out, refused) keeps its slot until it has
really gone (`connection_lost`, `Ticket.release`): asyncio's `close()` waits for the write
buffer to drain, forever if the peer never reads, so `close_soon` closes and then aborts
after a short grace. Until then an evicted connection is *closing*: it no longer counts as
pre-authentication (it cannot be evicted twice) but it still counts against `max_total`,
and a source may have at most `max_preauth_per_ip` closing connections before newcomers
are refused, so a client that stops reading cannot hold more than twice its cap, each for
at most `CLOSE_GRACE_S`.

Pure bookkeeping on the event loop (no locks needed); the front ends say what to send
(`on_evict`) and close with `close_soon`.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["CLOSE_GRACE_S", "Admission", "Ticket", "close_soon", "source_network"]

#: How long a connection the server ended may take to flush its last reply before it is
#: aborted (a peer that does not read would otherwise keep it open for ever).
CLOSE_GRACE_S = 2.0
#: Over this many unsent octets, a connection being ended is aborted at once: its peer has
#: not been reading, and nothing useful is left to say.
CLOSE_MAX_BUFFER = 64 * 1024


def close_soon(transport: asyncio.BaseTransport | None, grace: float = CLOSE_GRACE_S) -> None:
    """End a connection the server decided to end: `close()` (what was written is flushed
    first), then `abort()` after `grace` seconds, or at once when more than
    `CLOSE_MAX_BUFFER` octets are still unsent. Idempotent."""
    if transport is None:
        return
    try:
        buffered = transport.get_write_buffer_size()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a transport without one
        buffered = 0
    try:
        if buffered > CLOSE_MAX_BUFFER:
            transport.abort()  # type: ignore[attr-defined]
            return
        if not transport.is_closing():
            transport.close()
        asyncio.get_running_loop().call_later(grace, _abort, transport)
    except Exception:  # noqa: BLE001, S110 - the connection is going away anyway
        pass


def _abort(transport: asyncio.BaseTransport) -> None:
    try:
        transport.abort()  # type: ignore[attr-defined] - a no-op once the connection is lost
    except Exception:  # noqa: BLE001, S110
        pass


def source_network(peer: object) -> str:
    """The source a connection is counted under: an IPv4 address, an IPv6 /64 (an IPv4-mapped
    IPv6 address counts as its IPv4 address). Accepts a `peername` tuple, `ip`, `ip:port` or
    `[ip6]:port`; anything else is returned as text (a Unix socket path)."""
    if isinstance(peer, tuple) and peer:
        text = str(peer[0])
    else:
        text = str(peer or "").strip()
        if text.startswith("[") and "]" in text:
            text = text[1 : text.index("]")]
        elif text.count(":") == 1:
            text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text or "?"
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    if ip.version == 4:
        return str(ip)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False))


class Ticket:
    """One admitted connection's slot."""

    def __init__(self, admission: Admission, source: str, on_evict: Callable[[str], None]) -> None:
        self._admission = admission
        self.source = source
        #: Called with the reason when the connection must go (evicted, timed out); the
        #: front end writes its reply and closes. Front ends may replace it as the
        #: connection moves on (after a TLS handshake, say).
        self.on_evict = on_evict
        self.authenticated = False
        self.released = False
        #: Evicted (or refused on promotion): being closed, its slot given back when the
        #: connection is lost (`release`).
        self.closing = False
        self.opened = 0.0  # the event loop's clock at admission
        self._timer: asyncio.TimerHandle | None = None

    def promote(self) -> str | None:
        """The connection authenticated (or presented a validated client certificate): it
        leaves the pre-authentication pool. Returns why it may not stay (its source has
        `max_per_ip` authenticated connections already), else None."""
        return self._admission._promote(self)

    def release(self) -> None:
        """The connection ended (idempotent)."""
        self._admission._release(self)

    def evict(self, reason: str) -> None:
        """The server ends the connection (`on_evict` says why and closes it); the slot is
        kept until the connection is lost (`release`). Idempotent."""
        if self.released or self.closing:
            return
        self._admission._mark_closing(self)
        try:
            self.on_evict(reason)
        except Exception:  # noqa: BLE001, S110 - the connection is going away anyway
            pass


class Admission:
    """Counts a listener group's connections (the three SMTP listeners share one, the two
    IMAP listeners another)."""

    TOO_MANY = "Too many connections to this server; try again later"
    TOO_MANY_FROM_YOU = "Too many connections from your address; try again later"
    EVICTED = "Too many unauthenticated connections from your address; closing the oldest"
    EVICTED_FULL = "Server busy; closing an unauthenticated connection"
    TIMEOUT = "Not authenticated in time"

    def __init__(
        self,
        *,
        max_total: int,
        max_per_ip: int,
        max_preauth_per_ip: int,
        preauth_timeout_s: float | None = None,
        evict_after_s: float = 5.0,
    ) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.max_preauth_per_ip = max_preauth_per_ip
        self.preauth_timeout_s = preauth_timeout_s
        #: Only pre-authentication connections at least this old give way to a newcomer: a
        #: flood of new connections cannot push out a client that is just authenticating.
        self.evict_after_s = evict_after_s
        self.total = 0
        self._authenticated: dict[str, int] = {}
        # Oldest first: per source, and over all sources.
        self._preauth: dict[str, OrderedDict[Ticket, None]] = {}
        self._preauth_all: OrderedDict[Ticket, None] = OrderedDict()
        # Evicted connections not yet lost, per source and in all.
        self._closing: dict[str, int] = {}
        self.closing_total = 0

    def preauth(self, source: str) -> int:
        return len(self._preauth.get(source, ()))

    def authenticated(self, source: str) -> int:
        return self._authenticated.get(source, 0)

    def admit(self, peer: object, on_evict: Callable[[str], None]) -> Ticket | str:
        """A slot for a new connection from `peer`, or the reason it is refused (the front end
        answers it: `421 4.7.0` on SMTP, `* BYE` on IMAP). Older pre-authentication
        connections may be evicted (their `on_evict` is called) to make room."""
        source = source_network(peer)
        now = asyncio.get_running_loop().time()
        mine = self._preauth.get(source)
        while mine and len(mine) >= self.max_preauth_per_ip:
            oldest = next(iter(mine))
            if self._closing.get(source, 0) >= self.max_preauth_per_ip or now - oldest.opened < self.evict_after_s:
                return self.TOO_MANY_FROM_YOU  # its evicted ones have not gone yet, or none is old enough
            oldest.evict(self.EVICTED)
            mine = self._preauth.get(source)
        while self.total - self.closing_total >= self.max_total and self._preauth_all:
            oldest = next(iter(self._preauth_all))
            if self.closing_total >= self.max_total or now - oldest.opened < self.evict_after_s:
                break
            oldest.evict(self.EVICTED_FULL)
        if self.total - self.closing_total >= self.max_total or self.total >= 2 * self.max_total:
            return self.TOO_MANY
        ticket = Ticket(self, source, on_evict)
        ticket.opened = now
        self.total += 1
        self._preauth.setdefault(source, OrderedDict())[ticket] = None
        self._preauth_all[ticket] = None
        if self.preauth_timeout_s is not None:
            ticket._timer = asyncio.get_running_loop().call_later(self.preauth_timeout_s, ticket.evict, self.TIMEOUT)
        return ticket

    def _mark_closing(self, ticket: Ticket) -> None:
        if not ticket.authenticated:
            self._leave_preauth(ticket)
        ticket.closing = True
        self._closing[ticket.source] = self._closing.get(ticket.source, 0) + 1
        self.closing_total += 1

    def _promote(self, ticket: Ticket) -> str | None:
        if ticket.released or ticket.authenticated or ticket.closing:
            return None
        if self._authenticated.get(ticket.source, 0) >= self.max_per_ip:
            return self.TOO_MANY_FROM_YOU
        self._leave_preauth(ticket)
        ticket.authenticated = True
        self._authenticated[ticket.source] = self._authenticated.get(ticket.source, 0) + 1
        return None

    def _leave_preauth(self, ticket: Ticket) -> None:
        if ticket._timer is not None:
            ticket._timer.cancel()
            ticket._timer = None
        mine = self._preauth.get(ticket.source)
        if mine is not None:
            mine.pop(ticket, None)
            if not mine:
                del self._preauth[ticket.source]
        self._preauth_all.pop(ticket, None)

    def _release(self, ticket: Ticket) -> None:
        if ticket.released:
            return
        ticket.released = True
        self.total -= 1
        if ticket.closing:
            self.closing_total -= 1
            left = self._closing.get(ticket.source, 0) - 1
            if left > 0:
                self._closing[ticket.source] = left
            else:
                self._closing.pop(ticket.source, None)
        if ticket.authenticated:
            left = self._authenticated.get(ticket.source, 0) - 1
            if left > 0:
                self._authenticated[ticket.source] = left
            else:
                self._authenticated.pop(ticket.source, None)
        else:
            self._leave_preauth(ticket)
