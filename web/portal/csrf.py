"""CSRF defences of the portal (PORTAL.md 5.5; OWASP CSRF Prevention).

Every state-changing request must (1) not come from another site, by `Sec-Fetch-Site` and
`Origin` when the browser sends them, and (2) carry a token: the hidden `csrf` field of a
form or the `X-CSRF-Token` header of a fetch.

- Signed in: HMAC-SHA256(secret, "session:" + session.handle). The handle is a hash of the
  session id, so the token is bound to the session and dies with it.
- Anonymous (prelogin, login, TOTP, activation): double submit. The page GET sets an
  HttpOnly `__Host-mss-csrf` cookie (random); the token is HMAC(secret, "anon:" + cookie). A
  cross-site page can neither read the cookie nor forge the HMAC.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from starlette.requests import Request

CSRF_COOKIE = "__Host-mss-csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"


def _mac(secret: bytes, text: str) -> str:
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()


def session_token(secret: bytes, handle: str) -> str:
    return _mac(secret, "session:" + handle)


def anonymous_token(secret: bytes, cookie: str) -> str:
    return _mac(secret, "anon:" + cookie)


def new_anonymous_cookie() -> str:
    return secrets.token_urlsafe(32)


def matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison; an absent or non-ASCII token never matches."""
    if not given or not given.isascii():
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def cross_site(request: Request) -> bool:
    """True when the browser says the request comes from elsewhere than this origin.

    `Origin: null` says nothing either way: under `Referrer-Policy: no-referrer` (which every
    portal page sends) browsers send it on their own same-origin form posts (Fetch
    "serializing a request origin"). `Sec-Fetch-Site` still tells, and the token is required
    whatever the headers say."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site != "same-origin":
        return True
    origin = request.headers.get("origin")
    return origin is not None and origin != "null" and origin != own_origin(request)
