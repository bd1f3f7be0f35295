"""Assembles the portal on the FastAPI application: its routers, in the order that lets the
catch-all 404 page come last, and the exception handlers that turn `PortalError`,
`SignInRequired` and the core's `Refusal` into replies (JSON under `/portal/api/`, a page
elsewhere)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import RedirectResponse, Response

from mss.refusals import Refusal
from mss.services import WebServices
from web import errors as web_errors
from web.errors import JsonBody, error
from web.portal import api, forms, pages, static
from web.portal.context import Portal
from web.portal.errors import SIGNED_OUT, PortalError, SignInRequired, from_refusal

SIGN_IN = "/portal/connexion"
HEADINGS = {403: "Demande refusée", 404: "Page introuvable", 429: "Trop de tentatives"}


def install(app: FastAPI, services: WebServices) -> None:
    portal = Portal(services)
    app.include_router(static.router())
    app.include_router(api.router(portal))
    app.include_router(forms.router(portal))
    app.include_router(pages.router(portal))
    app.include_router(pages.not_found_router())
    app.add_exception_handler(PortalError, portal_error)
    app.add_exception_handler(SignInRequired, sign_in_required)
    app.add_exception_handler(Refusal, refusal)


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/portal/api/")


def reply(request: Request, failure: PortalError) -> Response:
    """JSON `{"error"}` under the API (429 adds `retry_after`), a French page elsewhere."""
    headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else None
    if is_api(request):
        doc: dict[str, object] = {"error": failure.text}
        if failure.retry_after is not None:
            doc["retry_after"] = failure.retry_after
        return JsonBody(doc, status_code=failure.status, headers=headers)
    heading = HEADINGS.get(failure.status, "Erreur")
    response = pages.error_page(failure.status, heading, failure.text)
    if headers:
        response.headers.update(headers)
    return response


async def portal_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PortalError)
    return reply(request, exc)


async def sign_in_required(request: Request, exc: Exception) -> Response:
    if is_api(request):
        return error(401, SIGNED_OUT)
    return RedirectResponse(SIGN_IN, status_code=303)


async def refusal(request: Request, exc: Exception) -> Response:
    """The one mapping of the core's refusals to HTTP (web.portal.errors.STATUS)."""
    assert isinstance(exc, Refusal)
    if not request.url.path.startswith("/portal/"):
        return await web_errors.internal_error(request, exc)
    return reply(request, from_refusal(exc))
