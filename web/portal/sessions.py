"""The portal's cookies and the session a request carries.

Both cookies are `__Host-` prefixed: `Secure; HttpOnly; SameSite=Strict; Path=/`, no
`Domain` (PORTAL.md 5.4). The session cookie holds the random id the core hands out at
`open_session`; the core keeps only its hash, and `PortalSession.handle` derives from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from mss.services import PatientPortal, PortalSession
from web.portal.errors import SignInRequired

SESSION_COOKIE = "__Host-mss-session"


@dataclass(frozen=True)
class SignedIn:
    """A live session and the cookie id it came from (needed to close it)."""

    id: str
    session: PortalSession


def set_cookie(response: Response, name: str, value: str) -> None:
    """A session cookie (no Max-Age: the server decides when it ends)."""
    response.set_cookie(name, value, path="/", secure=True, httponly=True, samesite="strict")


def clear_cookie(response: Response, name: str) -> None:
    response.delete_cookie(name, path="/", secure=True, httponly=True, samesite="strict")


def cookie_id(request: Request) -> str | None:
    value = request.cookies.get(SESSION_COOKIE)
    # Ids are url-safe tokens; anything else is not worth a database round trip.
    if not value or len(value) > 128 or not value.isascii():
        return None
    return value


async def lookup(request: Request, portal: PatientPortal, *, touch: bool = True) -> SignedIn | None:
    """The request's session, pending or not; None without a live one. `touch`: the request
    counts as activity (every one does but the status check)."""
    sid = cookie_id(request)
    if sid is None:
        return None
    session = await portal.session(sid, touch=touch)
    return SignedIn(sid, session) if session is not None else None


async def require(request: Request, portal: PatientPortal, *, pending: bool = False, touch: bool = True) -> SignedIn:
    """The signed-in session (`pending`: the one waiting for its second factor instead).

    A session waiting for TOTP reaches nothing but the TOTP step; a full one never the
    TOTP step."""
    signed = await lookup(request, portal, touch=touch)
    if signed is None or signed.session.pending_totp != pending:
        raise SignInRequired
    return signed
