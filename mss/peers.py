"""How a connection's peer is written in log lines and handed to the core: one form for all.

Every front end names the peer the same way, so that one grep over the log finds a client
whatever listener it used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["format_peer", "peer_host"]


def format_peer(peername: Any) -> str:
    """``ip:port`` for IPv4, ``[ip6]:port`` for IPv6, ``?`` when there is no peer.

    ``peername`` is what `transport.get_extra_info("peername")` gives: a ``(host, port)``
    tuple for AF_INET, ``(host, port, flowinfo, scope_id)`` for AF_INET6, a path (``str``,
    empty for an unnamed socket, ``bytes`` for a Linux abstract one) for AF_UNIX, or None.
    An IPv6 address is bracketed as in a URI authority (RFC 3986 §3.2.2, IP-literal), since
    its colons would otherwise run into the port's.
    """
    if isinstance(peername, tuple) and len(peername) >= 2:
        host, port = str(peername[0]), peername[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(peername, (bytes, bytearray)):
        peername = bytes(peername).decode("utf-8", "backslashreplace")
    if peername is None or peername == "" or peername == ():
        return "?"
    return str(peername)


def peer_host(peer: str) -> str:
    """The address of a `format_peer` string without its port: `ip` of `ip:port`, `ip6` of
    `[ip6]:port` (RFC 3986 §3.2.2); anything else (`?`, a socket path, a bare IPv6 address)
    unchanged."""
    if peer.startswith("[") and "]" in peer:
        return peer[1 : peer.index("]")]
    if peer.count(":") == 1:
        return peer.rsplit(":", 1)[0]
    return peer
