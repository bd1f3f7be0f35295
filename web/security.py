"""ASGI middleware every response of the http listener goes through (PORTAL.md, section 5).

Plain ASGI, not Starlette's `BaseHTTPMiddleware`: they only look at `http.response.start`
and the request's scope, so bodies stream through untouched.

- `SecurityHeaders`: `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`, a
  strict default Content-Security-Policy (a portal page sets `PAGE_CSP` itself), and
  `Cache-Control: no-store` unless the route chose otherwise: what this listener serves is
  health data or about health professionals. HSTS on HTTPS.
- `RequestLimits`: at most `MAX_PARAMS` query parameters of `MAX_PARAM_LEN` characters, and
  a header block of at most `[limits] http_max_head` (uvicorn's h11 limit only covers one
  still arriving). The body is capped by FastAPI's `max_body_size` (413, `http_max_body`).
- `HeadAsGet`: HEAD is GET without the body (RFC 9110 9.3.2); FastAPI routes only GET.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The longest query parameter value accepted (an address is at most 254, RFC 5321 4.5.3.1).
MAX_PARAM_LEN = 320
#: The most query parameters one request may carry.
MAX_PARAMS = 32

#: Nothing may load, frame or be framed: right for JSON; pages set their own policy.
DEFAULT_CSP = "default-src 'none'; frame-ancestors 'none'"
#: The portal's HTML pages: their own script and style only (never inline), `data:`/`blob:`
#: images and frames for decrypted mail (PORTAL.md 5.2), no plugin, no `<base>`, forms only
#: to this origin, never framed.
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; frame-src 'self' blob:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HSTS = "max-age=31536000"


def _default_headers(https: bool) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"content-security-policy", DEFAULT_CSP.encode()),
        (b"x-frame-options", b"DENY"),
        (b"cache-control", b"no-store"),
    ]
    if https:
        headers.append((b"strict-transport-security", HSTS.encode()))
    return headers


class SecurityHeaders:
    """Adds the default security headers to every HTTP response that does not set its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        defaults = _default_headers(scope.get("scheme") == "https")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in defaults if n not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _send_error(send: Send, status: int, error: str, *, fhir: bool = False) -> None:
    if fhir:
        doc: dict[str, object] = {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "invalid", "diagnostics": error}],
        }
        ctype = b"application/fhir+json"
    else:
        doc = {"error": error}
        ctype = b"application/json"
    body = json.dumps(doc, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def query_problem(query_string: bytes) -> str | None:
    """Why a query string is refused, or None. Values are measured once percent-decoded."""
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    if len(pairs) > MAX_PARAMS or any(len(v) > MAX_PARAM_LEN or len(k) > MAX_PARAM_LEN for k, v in pairs):
        return "query too long"
    return None


def head_size(scope: Scope) -> int:
    """About what the request line and header block took on the wire."""
    size = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b"")) + 16
    return size + sum(len(name) + len(value) + 4 for name, value in scope.get("headers", []))


class RequestLimits:
    """Before any route runs: 431 for a header block over `max_head`, 400 for an over-long
    query (an OperationOutcome under /fhir/).

    uvicorn's `h11_max_incomplete_event_size` only caps a header block still arriving: one
    that comes whole in a single read is parsed whatever its size, so it is measured here.
    """

    def __init__(self, app: ASGIApp, *, max_head: int) -> None:
        self.app = app
        self.max_head = max_head

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            fhir = str(scope.get("path", "")).startswith("/fhir/")
            if head_size(scope) > self.max_head:
                await _send_error(send, 431, "request header fields too large", fhir=fhir)
                return
            problem = query_problem(scope.get("query_string", b""))
            if problem is not None:
                await _send_error(send, 400, problem, fhir=fhir)
                return
        await self.app(scope, receive, send)


class HeadAsGet:
    """Serves HEAD as GET and drops the body; Content-Length stays that of the GET."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_headers_only)
