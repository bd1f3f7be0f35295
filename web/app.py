"""The ASGI application of the `http` listener (DESIGN.md, "Web front end").

`create_app(services)` builds it from the core's `WebServices` only: health, JWKS, the
directory's JSON and FHIR faces, the patient portal (`/portal/`, web.portal), and the OpenAPI
description FastAPI generates from the machine-facing declarations (`/openapi.json`; the
portal is left out). No interactive docs pages: they load scripts from a CDN.

Layers, outermost first: `SecurityHeaders` (on every response, the framework's own 500
included), FastAPI's body limit, `RequestLimits`, `HeadAsGet`, then routing and error handlers.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.types import ASGIApp

from mss.services import WebServices
from web import autoconfig, directory, errors, jwks, metrics, portal
from web.errors import JsonBody
from web.security import HeadAsGet, RequestLimits, SecurityHeaders

TITLE = "MSS"
VERSION = "1"
DESCRIPTION = (
    "The http listener of an MSS node: health, the token issuer's JWKS, and the read-only "
    "directory of MSSanté mailboxes (JSON and FHIR R4). Red-listed mailboxes are never published."
)


class Health(BaseModel):
    status: str


def create_app(services: WebServices) -> ASGIApp:
    """The application, wrapped in the middleware every response goes through."""
    return SecurityHeaders(create_api(services))


def create_api(services: WebServices) -> FastAPI:
    """The FastAPI application alone (its routes, error handlers and OpenAPI document)."""
    settings = services.settings
    api = FastAPI(
        title=TITLE,
        version=VERSION,
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        default_response_class=JsonBody,
        generate_unique_id_function=_operation_id,
        # 413 past it (declared or streamed); a route that takes uploads may raise its own.
        max_body_size=settings.limits.http_max_body,
        # No spans or logs of requests: their URLs carry addresses and national ids.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    errors.install(api)

    @api.get("/health", summary="Liveness", response_model=Health, tags=["operations"])
    async def health() -> JsonBody:
        return JsonBody({"status": "ok"})

    api.include_router(jwks.router(settings))
    # Prometheus, for the operator's own network only (web.metrics, [metrics] allow).
    api.include_router(metrics.router(settings, lambda: services.metrics_exposition()))
    api.include_router(directory.json_router(services.directory))
    api.include_router(directory.fhir_router(services.directory))
    # Thunderbird autoconfig and Outlook autodiscover (XML for mail clients, out of the OpenAPI).
    api.include_router(autoconfig.router(settings))
    # The patient portal's pages, forms, JSON API and static files (docs/portal.md); out of
    # the OpenAPI document, which describes the machine-facing routes above.
    portal.install(api, services)
    api.openapi = lambda: _openapi(api)  # type: ignore[method-assign]

    api.add_middleware(HeadAsGet)
    api.add_middleware(RequestLimits, max_head=settings.limits.http_max_head)
    return api


def _operation_id(route: APIRoute) -> str:
    return route.name


def _openapi(api: FastAPI) -> dict[str, object]:
    """FastAPI's generated document, with its 422 replies taken out: this listener answers a
    bad parameter with 400 (declared on each route), as the directory always has."""
    if api.openapi_schema:
        return api.openapi_schema
    doc = get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
    schemas = doc.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    api.openapi_schema = doc
    return doc
