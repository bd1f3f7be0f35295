"""What every portal handler needs: the core's `PatientPortal`, the settings, the CSRF
checks, throttling, and the common parts of a page (token, session timing, flash).

`services.portal` is read per request, not at start: an app built for the directory alone
(tests, tools) has no portal and never touches it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import HTMLResponse

from mss.config import Settings
from mss.services import PatientPortal, WebServices
from web.portal import csrf, views
from web.portal.errors import FORBIDDEN, PortalError
from web.portal.flash import message_for
from web.portal.sessions import SignedIn, lookup, set_cookie

THROTTLED = "Trop de tentatives. Réessayez dans {n} secondes."


@dataclass(frozen=True)
class Portal:
    services: WebServices

    @property
    def core(self) -> PatientPortal:
        return self.services.portal

    @property
    def settings(self) -> Settings:
        return self.services.settings

    def warn_before(self, expires_in: int) -> int:
        """How long before the idle expiry the page warns (RGAA 13.1: `[portal] warn_before_s`)."""
        return min(self.settings.portal.warn_before_s, expires_in)

    # -- CSRF ------------------------------------------------------------------------------

    async def check_signed(self, request: Request, signed: SignedIn, token: str | None) -> None:
        """A state change from a signed-in page: same site, and the session's token."""
        if csrf.cross_site(request):
            raise PortalError(403, FORBIDDEN)
        expected = csrf.session_token(await self.core.secret(), signed.session.handle)
        if not csrf.matches(token, expected):
            raise PortalError(403, FORBIDDEN)

    async def check_anonymous(self, request: Request, token: str | None) -> None:
        """A state change before sign-in: same site, and the double-submit token."""
        if csrf.cross_site(request):
            raise PortalError(403, FORBIDDEN)
        cookie = request.cookies.get(csrf.CSRF_COOKIE)
        if not cookie or len(cookie) > 128:
            raise PortalError(403, FORBIDDEN)
        if not csrf.matches(token, csrf.anonymous_token(await self.core.secret(), cookie)):
            raise PortalError(403, FORBIDDEN)

    # -- pages -----------------------------------------------------------------------------

    async def signed_page(
        self,
        request: Request,
        signed: SignedIn,
        template: str,
        *,
        page: str,
        title: str,
        status: int = 200,
        **context: object,
    ) -> HTMLResponse:
        """A page of the signed-in patient: header with the navigation, the logout form, the
        expiry dialog and its timing on `<body>`."""
        expires_in = max(0, int((signed.session.expires_at - datetime.now(UTC)).total_seconds()))
        context.setdefault("unread", 0)
        return views.render(
            template,
            status,
            page=page,
            title=title,
            signed_in=True,
            csrf=csrf.session_token(await self.core.secret(), signed.session.handle),
            expires_in=expires_in,
            warn=self.warn_before(expires_in),
            statut=message_for(request.query_params.get("statut")),
            alerte=message_for(request.query_params.get("alerte")),
            **context,
        )

    async def anonymous_page(
        self, request: Request, template: str, *, page: str, title: str, status: int = 200, **context: object
    ) -> HTMLResponse:
        """A page before sign-in; sets the double-submit cookie its token is bound to."""
        cookie = request.cookies.get(csrf.CSRF_COOKIE)
        fresh = not cookie or len(cookie) > 128
        if fresh:
            cookie = csrf.new_anonymous_cookie()
        assert cookie is not None
        response = views.render(
            template,
            status,
            page=page,
            title=title,
            signed_in=False,
            csrf=csrf.anonymous_token(await self.core.secret(), cookie),
            statut=message_for(request.query_params.get("statut")),
            alerte=message_for(request.query_params.get("alerte")),
            **context,
        )
        if fresh:
            set_cookie(response, csrf.CSRF_COOKIE, cookie)
        return response

    async def session_or_none(self, request: Request) -> SignedIn | None:
        return await lookup(request, self.core)


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


def user_agent(request: Request) -> str:
    """What the session and the journal keep of the browser: `Firefox 128 (Linux)`."""
    return views.short_agent(request.headers.get("user-agent", "")[:512])
