"""The directory's HTTP faces: JSON (`/annuaire/...`) and FHIR R4 read-only (`/fhir/...`).

HTTP only: the core's `Directory` service decides what is published (never a red-listed
mailbox) and how a search runs; this module maps query parameters to it and its answers and
`DirectoryQueryError`s to responses. Parameters and responses are declared here so that the
framework generates `/openapi.json` from them.

Query values longer than `web.security.MAX_PARAM_LEN`, or more than `MAX_PARAMS` of them,
are refused (400) before any route runs.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query, Request, params
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response

from mss.services import (
    Directory,
    DirectoryQueryError,
    DirectorySearch,
    FhirResourceType,
    PublishedMailbox,
)
from web.errors import Error, FhirBody, JsonBody, OperationOutcome, error, outcome
from web.security import MAX_PARAM_LEN

#: FHIR resource ids (FHIR R4 datatypes.html#id): at most 64 characters.
MAX_ID_LEN = 64
DEFAULT_LIMIT = 50


#: A FHIR resource id in the path (FHIR R4 datatypes.html#id).
ResourceId = Annotated[str, Path(description="Resource id", max_length=MAX_ID_LEN)]


class SearchResults(BaseModel):
    count: int
    results: list[PublishedMailbox]


class NotFound(Error):
    address: str


class FhirResource(BaseModel):
    """A FHIR R4 resource (Practitioner, PractitionerRole, Organization, CapabilityStatement).
    Member names here and below are FHIR's own (camelCase)."""

    model_config = ConfigDict(extra="allow")
    resourceType: str
    id: str | None = None


class BundleLink(BaseModel):
    relation: str
    url: str


class BundleEntry(BaseModel):
    fullUrl: str
    resource: FhirResource
    search: dict[str, str]


class Bundle(BaseModel):
    """A FHIR R4 searchset Bundle."""

    resourceType: Literal["Bundle"] = "Bundle"
    type: Literal["searchset"] = "searchset"
    total: int
    link: list[BundleLink]
    entry: list[BundleEntry]


def _text(description: str) -> params.Query:
    """A text query parameter, documented with the listener's length cap."""
    declared: params.Query = Query(description=description, max_length=MAX_PARAM_LEN)
    return declared


# -- JSON -----------------------------------------------------------------------------------


def json_router(directory: Directory) -> APIRouter:
    router = APIRouter(prefix="/annuaire", tags=["directory"], default_response_class=JsonBody)

    @router.get(
        "/resolve",
        summary="The mailbox at an address",
        description="Case-insensitive; a red-listed mailbox is not found.",
        response_model=PublishedMailbox,
        responses={
            400: {"model": Error, "description": "No address"},
            404: {"model": NotFound, "description": "Unknown or not published"},
        },
    )
    async def resolve(
        address: Annotated[str, Query(description="MSSanté address", min_length=1, max_length=MAX_PARAM_LEN)],
    ) -> Response:
        found = await directory.resolve(address)
        if found is None:
            return error(404, "not found", address=address)
        return JsonBody(found.to_json())

    @router.get(
        "/search",
        summary="Search mailboxes",
        description="Every criterion given must match; at least one is required. Red-listed "
        "mailboxes are never listed.",
        response_model=SearchResults,
        responses={400: {"model": Error, "description": "No criterion, or a bad one"}},
    )
    async def search(
        name: Annotated[str | None, _text("Name prefix, accents and case ignored")] = None,
        profession: Annotated[str | None, _text("Profession code (`10`) or label")] = None,
        specialty: Annotated[str | None, _text("Savoir-faire code (`SM54`) or label")] = None,
        postcode: Annotated[str | None, _text("Postcode or its prefix (`75`)")] = None,
        department: Annotated[str | None, _text("Department code")] = None,
        type: Annotated[str | None, _text("Mailbox type: PER, ORG, APP or CAB")] = None,
        limit: Annotated[int | None, Query(description="Most results (at most 200)")] = None,
    ) -> Response:
        criteria = DirectorySearch(
            name=name, profession=profession, specialty=specialty, postcode=postcode, department=department, type=type
        )
        try:
            found = await directory.search(criteria, limit=DEFAULT_LIMIT if limit is None else limit)
        except DirectoryQueryError as exc:
            return error(400, str(exc))
        return JsonBody({"count": len(found), "results": [m.to_json() for m in found]})

    return router


# -- FHIR R4 --------------------------------------------------------------------------------

Handler = Callable[..., Coroutine[None, None, Response]]


def _common_search_parameters(
    identifier: Annotated[list[str] | None, _text("National id: `value` or `system|value`")] = None,
    mailbox_mss: Annotated[
        list[str] | None,
        Query(alias="mailbox-mss", description="MSSanté address, starts with", max_length=MAX_PARAM_LEN),
    ] = None,
    mailbox_mss_exact: Annotated[
        list[str] | None,
        Query(
            alias="mailbox-mss:exact", description="MSSanté address, whole (case-insensitive)", max_length=MAX_PARAM_LEN
        ),
    ] = None,
    mailbox_mss_contains: Annotated[
        list[str] | None,
        Query(alias="mailbox-mss:contains", description="MSSanté address, contains", max_length=MAX_PARAM_LEN),
    ] = None,
    count: Annotated[int | None, Query(alias="_count", description="Page size (at most 500)")] = None,
) -> None:
    """Declared for validation and the OpenAPI description; the search itself reads the whole
    query (modifiers the service refuses, such as `mailbox-mss:missing`, included)."""


def _name_parameters(
    name: Annotated[list[str] | None, _text("Name prefix, accents and case ignored")] = None,
) -> None:
    """Organization's and Practitioner's `name`."""


def _family_parameter(
    family: Annotated[list[str] | None, _text("Family name prefix")] = None,
) -> None:
    """Practitioner's `family`."""


def _practitioner_parameter(
    practitioner: Annotated[list[str] | None, _text("`Practitioner/<idnat>`")] = None,
) -> None:
    """PractitionerRole's `practitioner`."""


_SEARCH_PARAMETERS: dict[FhirResourceType, list[Callable[..., None]]] = {
    "Practitioner": [_common_search_parameters, _name_parameters, _family_parameter],
    "PractitionerRole": [_common_search_parameters, _practitioner_parameter],
    "Organization": [_common_search_parameters, _name_parameters],
}

_FHIR_ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": OperationOutcome, "description": "A search this server does not support"},
}


def fhir_router(directory: Directory, *, base_url: str = "") -> APIRouter:
    """`base_url` prefixes the Bundles' `fullUrl` and `self` links (relative when empty)."""
    base = f"{base_url}/fhir"
    router = APIRouter(prefix="/fhir", tags=["FHIR R4"], default_response_class=FhirBody)

    @router.get("/metadata", summary="FHIR CapabilityStatement", response_model=FhirResource)
    async def metadata() -> Response:
        return FhirBody(directory.fhir_capabilities(base))

    def searcher(resource: FhirResourceType) -> Handler:
        async def search(request: Request) -> Response:
            query = request.query_params.multi_items()
            params: dict[str, list[str]] = {}
            for k, v in query:
                params.setdefault(k, []).append(v)
            self_url = f"{base}/{resource}" + ("?" + urlencode(query) if query else "")
            try:
                bundle = await directory.fhir_search(resource, params, base=base, self_url=self_url)
            except DirectoryQueryError as exc:
                return outcome(400, "invalid", str(exc))
            return FhirBody(bundle)

        return search

    def reader(resource: FhirResourceType) -> Handler:
        async def read(id: ResourceId) -> Response:
            found = await directory.fhir_read(resource, id)
            if found is None:
                return outcome(404, "not-found", f"{resource}/{id} not found")
            return FhirBody(found)

        return read

    for resource, declared in _SEARCH_PARAMETERS.items():
        router.add_api_route(
            f"/{resource}",
            searcher(resource),
            methods=["GET"],
            summary=f"Search {resource}",
            description="FHIR R4 search (search-type); every parameter given must match.",
            operation_id=f"search_{resource}",
            response_model=Bundle,
            dependencies=[Depends(d) for d in declared],
            responses=_FHIR_ERRORS,
        )
        router.add_api_route(
            f"/{resource}/{{id}}",
            reader(resource),
            methods=["GET"],
            summary=f"Read {resource}",
            operation_id=f"read_{resource}",
            response_model=FhirResource,
            responses={
                400: {"model": OperationOutcome, "description": "An id longer than 64 characters"},
                404: {"model": OperationOutcome, "description": "No such resource"},
            },
        )
    return router
