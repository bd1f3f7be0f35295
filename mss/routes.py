"""Where another operator's mail goes: the static transport map, else DNS MX (RFC 5321 5.1).

`resolve_route(domain, settings)` gives the routes to try, in order. The relay worker tries
each until one answers; when none does, the entry waits for its next retry. What cannot get
better by waiting raises `RelayUnavailable(permanent=True)`: a domain that does not exist
(NXDOMAIN) or that says it takes no mail (null MX, RFC 7505). What may get better (a DNS
timeout, SERVFAIL) raises it temporary.

The static map (`[relay] routes = {"b.test" = "mx.b.test:25"}`) comes first: tests, the demo
and closed networks route without DNS. Everything else goes through dnspython's asynchronous
resolver, so a slow DNS server never blocks the event loop.
"""

from __future__ import annotations

import logging
import random
from typing import Any, Protocol

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver
import idna

from mss.config import Settings
from mss.services import RelayReply, RelayRoute, RelayUnavailable

log = logging.getLogger("mss.routes")

#: The port of SMTP relay between MTAs (RFC 5321 4.5.4.1 via the IANA "smtp" service).
SMTP_PORT = 25


class MxResolver(Protocol):
    """What `resolve_route` needs of a resolver: `dns.asyncresolver.Resolver.resolve`'s shape.
    Tests inject a fake one (no DNS server runs in the test environment)."""

    async def resolve(self, qname: str, rdtype: str, **kwargs: Any) -> Any: ...


def normalize_domain(domain: str) -> str:
    """Lower case, no trailing dot, IDNA A-label (the form DNS and the route map use)."""
    d = domain.strip().rstrip(".").lower()
    try:
        return idna.encode(d, uts46=True).decode("ascii")  # IDNA 2008 (RFC 5891), not Python's 2003 codec
    except (idna.IDNAError, UnicodeError):
        return d


def parse_target(target: str, *, source: str = "static") -> RelayRoute:
    """`host:port` (or `[v6-address]:port`) from the route map as a `RelayRoute`."""
    host, _, port = target.strip().rpartition(":")
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return RelayRoute(host=host.lower().rstrip("."), port=int(port), source=source)  # type: ignore[arg-type]


def static_route(domain: str, settings: Settings) -> RelayRoute | None:
    """The route `[relay] routes` gives `domain` (keys are normalised by the settings)."""
    target = settings.relay.routes.get(normalize_domain(domain))
    if target is None:
        target = settings.relay.routes.get(domain.strip().lower().rstrip("."))
    return parse_target(target) if target is not None else None


def _default_resolver(settings: Settings) -> MxResolver:
    r = dns.asyncresolver.Resolver()
    # One answer may take at most the connect timeout: a dead resolver delays the entry, it
    # does not hold a worker slot for long.
    r.lifetime = float(settings.relay.connect_timeout_s)
    return r


async def resolve_route(domain: str, settings: Settings, *, resolver: MxResolver | None = None) -> list[RelayRoute]:
    """The routes to try for `domain`, best first.

    RFC 5321 5.1: MX records sorted by preference, equal preferences in random order (load
    spreading); no MX record at all: the domain itself is the implicit MX. RFC 7505: a null
    MX (`0 .`) means the domain accepts no mail, a permanent failure.
    """
    static = static_route(domain, settings)
    if static is not None:
        return [static]
    name = normalize_domain(domain)
    resolver = resolver or _default_resolver(settings)
    try:
        answer = await resolver.resolve(name, "MX")
    except dns.resolver.NXDOMAIN as exc:
        reason = f"domain {name} does not exist (NXDOMAIN)"
        # RFC 3463 X.1.2: bad destination system address.
        raise RelayUnavailable(reason, permanent=True, reply=RelayReply(550, f"5.1.2 {reason}")) from exc
    except dns.resolver.NoAnswer:
        # RFC 5321 5.1: "If an empty list of MXs is returned, the address is treated as if
        # it was associated with an implicit MX RR, with a preference of 0, pointing to that host."
        log.info("no MX for %s: implicit MX (the domain itself)", name)
        return [RelayRoute(host=name, port=SMTP_PORT, source="a")]
    except dns.exception.Timeout as exc:
        reason = f"DNS timeout resolving MX of {name}"
        raise RelayUnavailable(
            reason, reply=RelayReply(451, f"4.4.3 {reason}")
        ) from exc  # X.4.3 routing server failure
    except dns.resolver.NoNameservers as exc:
        # Every server answered SERVFAIL/REFUSED or could not be reached: may get better.
        reason = f"DNS failure resolving MX of {name} (SERVFAIL)"
        raise RelayUnavailable(reason, reply=RelayReply(451, f"4.4.3 {reason}")) from exc
    except dns.exception.DNSException as exc:
        reason = f"DNS error resolving MX of {name}: {exc.__class__.__name__}"
        raise RelayUnavailable(reason, reply=RelayReply(451, f"4.4.3 {reason}")) from exc

    records: list[tuple[int, str]] = []
    for rr in answer:
        exchange = rr.exchange
        if not isinstance(exchange, dns.name.Name):
            exchange = dns.name.from_text(str(exchange))
        host = exchange.to_text(omit_final_dot=True).lower()
        if exchange == dns.name.root:
            # RFC 7505 3: a single MX with an empty (root) exchange: "no mail here". A domain
            # with a null MX must not have others; one present anyway still means no mail.
            reason = f"domain {name} accepts no mail (null MX, RFC 7505)"
            # RFC 7505 4.2: "556 5.1.10" for a recipient domain with a null MX.
            raise RelayUnavailable(reason, permanent=True, reply=RelayReply(556, f"5.1.10 {reason}"))
        records.append((int(rr.preference), host))
    if not records:
        return [RelayRoute(host=name, port=SMTP_PORT, source="a")]
    random.shuffle(records)
    records.sort(key=lambda r: r[0])  # stable: equal preferences keep the shuffled order
    routes: list[RelayRoute] = []
    for _, host in records:
        route = RelayRoute(host=host, port=SMTP_PORT, source="mx")
        if route not in routes:
            routes.append(route)
    return routes
