"""mss.routes: the static transport map, then DNS MX (RFC 5321 5.1, RFC 7505).

No DNS server runs in the test environment, so the DNS cases inject a fake resolver with the
shape of `dns.asyncresolver.Resolver.resolve`; it answers with real dnspython MX rdata and
raises dnspython's own exceptions, which is what `resolve_route` interprets.
"""

from __future__ import annotations

import dns.exception
import dns.rdata
import dns.resolver
import pytest

from mss.config import Settings
from mss.routes import parse_target, resolve_route
from mss.services import RelayRoute, RelayUnavailable


class FakeResolver:
    """Answers MX queries from a table: a list of "pref host." strings, or an exception."""

    def __init__(self, table: dict[str, list[str] | Exception]) -> None:
        self.table = table
        self.queries: list[tuple[str, str]] = []

    async def resolve(self, qname: str, rdtype: str, **kwargs):
        self.queries.append((str(qname), rdtype))
        entry = self.table.get(str(qname), dns.resolver.NXDOMAIN())
        if isinstance(entry, Exception):
            raise entry
        return [dns.rdata.from_text("IN", "MX", text) for text in entry]


def settings(**relay) -> Settings:
    return Settings(domain="a.test", relay=relay)


async def test_static_route_first_without_dns() -> None:
    resolver = FakeResolver({"b.test": ["10 mx.b.test."]})
    routes = await resolve_route("B.Test.", settings(routes={"b.test": "127.0.0.1:2525"}), resolver=resolver)
    assert routes == [RelayRoute(host="127.0.0.1", port=2525, source="static")]
    assert resolver.queries == []  # the map answers, DNS is not asked


def test_parse_target_ipv6_literal() -> None:
    assert parse_target("[::1]:2525") == RelayRoute(host="::1", port=2525, source="static")


async def test_mx_sorted_by_preference() -> None:
    resolver = FakeResolver({"b.test": ["20 backup.b.test.", "5 MX1.b.test.", "10 mx2.b.test."]})
    routes = await resolve_route("b.test", settings(), resolver=resolver)
    assert [(r.host, r.port, r.source) for r in routes] == [
        ("mx1.b.test", 25, "mx"),
        ("mx2.b.test", 25, "mx"),
        ("backup.b.test", 25, "mx"),
    ]
    assert resolver.queries == [("b.test", "MX")]


async def test_equal_preferences_all_kept() -> None:
    resolver = FakeResolver({"b.test": ["10 a.b.test.", "10 b.b.test.", "5 first.b.test."]})
    routes = await resolve_route("b.test", settings(), resolver=resolver)
    assert routes[0].host == "first.b.test"
    assert {r.host for r in routes[1:]} == {"a.b.test", "b.b.test"}


async def test_idna_domain_queried_as_a_label() -> None:
    resolver = FakeResolver({"xn--hpital-ixa.test": ["10 mx.xn--hpital-ixa.test."]})
    routes = await resolve_route("hôpital.test", settings(), resolver=resolver)
    assert routes == [RelayRoute(host="mx.xn--hpital-ixa.test", port=25, source="mx")]


async def test_no_mx_is_implicit_mx() -> None:
    resolver = FakeResolver({"b.test": dns.resolver.NoAnswer()})
    routes = await resolve_route("b.test", settings(), resolver=resolver)
    assert routes == [RelayRoute(host="b.test", port=25, source="a")]


async def test_null_mx_is_permanent() -> None:
    resolver = FakeResolver({"b.test": ["0 ."]})
    with pytest.raises(RelayUnavailable) as err:
        await resolve_route("b.test", settings(), resolver=resolver)
    assert err.value.permanent
    assert "null MX" in err.value.reason
    assert str(err.value.reply).startswith("556 5.1.10 ")


async def test_nxdomain_is_permanent() -> None:
    with pytest.raises(RelayUnavailable) as err:
        await resolve_route("nowhere.test", settings(), resolver=FakeResolver({}))
    assert err.value.permanent
    assert "NXDOMAIN" in err.value.reason
    assert str(err.value.reply).startswith("550 5.1.2 ")


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (dns.resolver.LifetimeTimeout(timeout=1.0, errors=[]), "timeout"),
        (dns.exception.Timeout(), "timeout"),
        (dns.resolver.NoNameservers(), "SERVFAIL"),
    ],
)
async def test_timeouts_and_servfail_are_temporary(exc: Exception, words: str) -> None:
    with pytest.raises(RelayUnavailable) as err:
        await resolve_route("b.test", settings(), resolver=FakeResolver({"b.test": exc}))
    assert not err.value.permanent
    assert words in err.value.reason
    assert str(err.value.reply).startswith("451 4.4.3 ")
