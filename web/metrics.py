"""`GET /metrics`: the node's Prometheus metrics (mss.metrics) in the text exposition format.

Not for the public internet (docs/operations.md, "Monitoring"): the metrics say how many
sessions are open and how many logins fail, which an attacker would like to watch. A scrape
is answered only when
- the TCP peer's address is in `[metrics] allow` (loopback by default). uvicorn is started
  without proxy headers (web.server), so a forwarded-for header cannot claim another address;
- and, when `[metrics] token_file` is set, the request carries `Authorization: Bearer <token>`
  with the file's content (compared in constant time);
- and the request carries no proxy header (`Forwarded`, RFC 7239; `X-Forwarded-For`,
  `X-Forwarded-Host`, `X-Real-IP`) unless a token is configured: a reverse proxy on the same
  host makes every internet client look like loopback, the default allowed source, so a
  forwarded request without a token is refused whatever the peer.
Otherwise: 403 (address not allowed, or proxied without a token) or 401 with
`WWW-Authenticate: Bearer` (token missing or wrong), and nothing of the metrics. With
`[metrics] enabled = false` there is no route.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request, Response

from mss.config import ConfigError, Settings

log = logging.getLogger("mss.web")

#: Text exposition format 0.0.4, what every Prometheus server scrapes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Headers a reverse proxy adds (RFC 7239 and the de-facto ones): their presence says the TCP
#: peer is a proxy speaking for someone else, so the peer address proves nothing.
PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip")


def _token(settings: Settings) -> str | None:
    path = settings.metrics.token_file
    if path is None:
        return None
    try:
        token = settings.path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"metrics.token_file: cannot read {settings.path(path)}: {exc}") from exc
    if len(token) < 16:
        raise ConfigError(f"metrics.token_file: {settings.path(path)} holds fewer than 16 characters")
    return token


def _address(host: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not host:
        return None
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped if mapped is not None else ip


def router(settings: Settings, exposition: Callable[[], Awaitable[bytes]]) -> APIRouter:
    """The `/metrics` route, or no route when `[metrics] enabled = false`. `exposition`: the
    node's metrics (`WebServices.metrics_exposition`: every worker's, with several)."""
    api = APIRouter()
    if not settings.metrics.enabled:
        return api
    networks = settings.metrics.networks()
    token = _token(settings)
    expected = f"Bearer {token}".encode() if token is not None else None

    @api.get("/metrics", include_in_schema=False)
    async def scrape(request: Request) -> Response:
        peer = request.client.host if request.client else None
        ip = _address(peer)
        if ip is None or not any(ip.version == net.version and ip in net for net in networks):
            log.warning("metrics scrape refused peer=%s reason=address_not_allowed", peer)
            return Response("metrics are not served to this address\n", 403, media_type="text/plain")
        proxied = [name for name in PROXY_HEADERS if name in request.headers]
        if proxied and expected is None:
            log.warning("metrics scrape refused peer=%s reason=proxied_without_token header=%s", peer, proxied[0])
            return Response(
                "metrics are not served through a proxy without [metrics] token_file\n", 403, media_type="text/plain"
            )
        if expected is not None:
            given = request.headers.get("authorization", "").encode("utf-8", "replace")
            if not hmac.compare_digest(given, expected):
                log.warning("metrics scrape refused peer=%s reason=bad_token", peer)
                return Response(
                    "a bearer token is required\n",
                    401,
                    media_type="text/plain",
                    headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
                )
        return Response(await exposition(), 200, media_type=CONTENT_TYPE)

    return api
