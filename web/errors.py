"""Error replies of the http listener: JSON `{"error": ...}`, FHIR OperationOutcome under
`/fhir/`, and never a stack trace or an echo of what the client sent beyond its own value.

FastAPI's defaults are replaced: a bad parameter is a 400 (the directory's contract, not
422), 404 and 405 keep the same JSON shapes, and 405 lists HEAD with GET in `Allow`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.responses import Response

from mss.refusals import storage_unavailable

log = logging.getLogger("mss.web")


class JsonBody(JSONResponse):
    media_type = "application/json"


class FhirBody(JSONResponse):
    """FHIR R4's JSON format (FHIR R4, http.html#mime-type)."""

    media_type = "application/fhir+json"


class Error(BaseModel):
    """What every non-FHIR error carries."""

    error: str


class OutcomeIssue(BaseModel):
    severity: str
    code: str
    diagnostics: str


class OperationOutcome(BaseModel):
    """FHIR R4 OperationOutcome: what every FHIR error carries."""

    resourceType: str = "OperationOutcome"
    issue: list[OutcomeIssue]


def error(status: int, text: str, headers: dict[str, str] | None = None, **extra: str) -> JsonBody:
    return JsonBody({"error": text, **extra}, status_code=status, headers=headers)


def outcome(status: int, code: str, text: str, headers: dict[str, str] | None = None) -> FhirBody:
    doc = OperationOutcome(issue=[OutcomeIssue(severity="error", code=code, diagnostics=text)])
    return FhirBody(doc.model_dump(), status_code=status, headers=headers)


def _is_fhir(request: Request) -> bool:
    return request.url.path.startswith("/fhir/") or request.url.path == "/fhir"


def _allow(headers: Mapping[str, str] | None) -> dict[str, str] | None:
    """Starlette's `Allow` for a GET route says "GET": HEAD is served too (`HeadAsGet`)."""
    if not headers or "Allow" not in headers:
        return dict(headers) if headers else None
    methods = [m.strip() for m in headers["Allow"].split(",") if m.strip()]
    if "GET" in methods and "HEAD" not in methods:
        methods.insert(methods.index("GET") + 1, "HEAD")
    order = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    methods.sort(key=lambda m: order.index(m) if m in order else len(order))
    return {**headers, "Allow": ", ".join(methods)}


_PHRASES = {404: "not found", 405: "method not allowed"}
_FHIR_CODES = {404: "not-found", 405: "not-supported"}


async def http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = _allow(exc.headers)
    text = _PHRASES.get(exc.status_code) or str(exc.detail)
    if _is_fhir(request):
        return outcome(exc.status_code, _FHIR_CODES.get(exc.status_code, "processing"), text, headers)
    return error(exc.status_code, text, headers)


def _describe(problem: dict[str, object]) -> str:
    """`name: message` of one validation error, without the value the client sent."""
    loc = problem.get("loc")
    name = str(loc[-1]) if isinstance(loc, (list, tuple)) and loc else "request"
    if problem.get("type") == "missing":
        return f"missing parameter: {name}"
    if problem.get("type") in ("int_parsing", "int_type"):
        return f"{name} must be an integer"
    return f"{name}: {problem.get('msg', 'invalid')}"


async def validation_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    text = "; ".join(_describe(p) for p in exc.errors()) or "bad request"
    if _is_fhir(request):
        return outcome(400, "invalid", text)
    return error(400, text)


async def internal_error(request: Request, exc: Exception) -> Response:
    # Starlette re-raises after this reply, and uvicorn logs the traceback through the root
    # handlers (escaped); the client never sees it.
    if storage_unavailable(exc):
        # The database is away (docs/scale.md): temporary, the client retries (RFC 9110 15.6.4).
        log.error("request failed: %s %s: storage unavailable", request.method, request.url.path)
        if _is_fhir(request):
            return outcome(503, "transient", "temporarily unavailable", {"Retry-After": "5"})
        return error(503, "temporarily unavailable, try again later", {"Retry-After": "5"})
    log.error("request failed: %s %s: %s", request.method, request.url.path, type(exc).__name__)
    if _is_fhir(request):
        return outcome(500, "exception", "internal error")
    return error(500, "internal error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, http_exception)
    app.add_exception_handler(RequestValidationError, validation_exception)
    app.add_exception_handler(Exception, internal_error)
