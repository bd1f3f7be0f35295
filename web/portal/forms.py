"""The portal's plain forms (docs/portal.md 2.2): each carries the hidden `csrf` field and
answers 303 to a page whose `#statut` (or `#alerte`) says what happened; the TOTP steps and
the closure answer with their own page, since what they show is shown once.

Bodies are url-encoded, a handful of short fields: the form parser is capped to that.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from mss.refusals import Reason, Refusal
from web.portal import views
from web.portal.context import Portal
from web.portal.csrf import CSRF_FIELD
from web.portal.errors import PortalError
from web.portal.pages import plain_context, title_of
from web.portal.qr import svg_data_url
from web.portal.sessions import SESSION_COOKIE, SignedIn, clear_cookie, lookup, require
from web.portal.throttling import attempt, second_factor_keys

MAX_FIELDS = 8
MAX_FIELD_LEN = 320


def see(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


async def read_form(request: Request) -> FormData:
    """The url-encoded fields; files and long values are refused."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise PortalError(400, "Formulaire invalide.")
    form = await request.form(max_files=0, max_fields=MAX_FIELDS)
    if any(not isinstance(v, str) or len(v) > MAX_FIELD_LEN for v in form.values()):
        raise PortalError(400, "Formulaire invalide.")
    return form


def field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def router(portal: Portal) -> APIRouter:
    r = APIRouter(prefix="/portal", include_in_schema=False)

    async def signed_form(request: Request) -> tuple[SignedIn, FormData]:
        signed = await require(request, portal.core)
        form = await read_form(request)
        await portal.check_signed(request, signed, field(form, CSRF_FIELD))
        return signed, form

    @r.post("/deconnexion")
    async def deconnexion(request: Request) -> Response:
        """Ends the server session (PORTAL.md 5.6), not only the cookie."""
        signed = await lookup(request, portal.core)
        response = see("/portal/connexion?statut=deconnecte")
        if signed is not None:
            form = await read_form(request)
            await portal.check_signed(request, signed, field(form, CSRF_FIELD))
            await portal.core.close_session(signed.id)
        clear_cookie(response, SESSION_COOKIE)
        return response

    @r.post("/parametres/notifications")
    async def notifications(request: Request) -> Response:
        signed, form = await signed_form(request)
        on = field(form, "notifications") == "oui"
        await portal.core.set_notify(signed.session.principal, on)
        return see(f"/portal/parametres?statut=notifications-{'on' if on else 'off'}")

    @r.post("/parametres/bloquer")
    async def bloquer(request: Request) -> Response:
        signed, form = await signed_form(request)
        await portal.core.block(signed.session.principal, professional_of(form))
        return see("/portal/parametres?statut=bloque")

    @r.post("/parametres/debloquer")
    async def debloquer(request: Request) -> Response:
        signed, form = await signed_form(request)
        await portal.core.unblock(signed.session.principal, professional_of(form))
        return see("/portal/parametres?statut=debloque")

    @r.post("/parametres/totp/activer")
    async def totp_activer(request: Request) -> Response:
        signed, _ = await signed_form(request)
        setup = await portal.core.totp_begin(signed.session.principal)
        return await portal.signed_page(
            request,
            signed,
            "totp_activer.html",
            page="totp",
            title=title_of("Activer la validation en deux étapes"),
            secret=setup.secret,
            qr=svg_data_url(setup.uri),
            nav="parametres",
        )

    @r.post("/parametres/totp/confirmer")
    async def totp_confirmer(request: Request) -> Response:
        signed, form = await signed_form(request)
        try:
            codes = await portal.core.totp_confirm(signed.session.principal, field(form, "code"))
        except Refusal as refusal:
            if refusal.reason is not Reason.NOT_ALLOWED:
                raise
            return see("/portal/parametres?alerte=totp-code")
        return await portal.signed_page(
            request,
            signed,
            "totp_codes.html",
            page="totp",
            title=title_of("Codes de secours"),
            codes=codes,
            nav="parametres",
        )

    @r.post("/parametres/totp/desactiver")
    async def totp_desactiver(request: Request) -> Response:
        signed, form = await signed_form(request)
        principal = signed.session.principal
        try:
            # Throttled like the sign-in's second factor: a stolen session must not be
            # able to guess its way to turning TOTP off.
            await attempt(
                portal.core,
                second_factor_keys(request, principal.identifier),
                lambda: portal.core.totp_disable(principal, field(form, "code")),
                "",
            )
        except PortalError as error:
            if error.status == 429:
                return see("/portal/parametres?alerte=trop-tot")
            if error.status != 401:
                raise
            return see("/portal/parametres?alerte=totp-code")
        return see("/portal/parametres?statut=totp-off")

    @r.post("/cloture")
    async def cloture(request: Request) -> Response:
        signed, form = await signed_form(request)
        if field(form, "confirmation") != "oui":
            return see("/portal/cloture?alerte=confirmation")
        await portal.core.close(signed.session.principal)
        response = views.render(
            "cloturee.html", title=title_of("Espace clôturé"), **{**plain_context(), "page": "cloturee"}
        )
        clear_cookie(response, SESSION_COOKIE)
        return response

    return r


def professional_of(form: FormData) -> str:
    address = field(form, "professional")
    if not address or "@" not in address:
        raise PortalError(400, "Formulaire invalide.")
    return address
