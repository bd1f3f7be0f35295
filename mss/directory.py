"""`mss.services.Directory` over the core's sessions: `annuaire.search` and `annuaire.fhir`.

The publication rules live here, once, for every face that shows the directory to the
public (JSON, FHIR, and later the portal's address book): red-listed mailboxes are left out,
and only `PublishedMailbox`'s fields ever leave.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import cast

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from annuaire import fhir
from annuaire.search import Directory as AnnuaireDirectory
from annuaire.search import DirectoryEntry
from mss.services import (
    FHIR_RESOURCE_TYPES,
    MAILBOX_TYPES,
    DirectoryQueryError,
    DirectorySearch,
    FhirResourceType,
    JsonObject,
    PublishedMailbox,
)

#: Most results one JSON search returns (the FHIR face has its own `_count` cap).
MAX_SEARCH_RESULTS = 200
_PUBLIC_FIELDS = tuple(f.name for f in fields(PublishedMailbox))


def published(entry: DirectoryEntry) -> PublishedMailbox:
    d = entry.to_dict()
    return PublishedMailbox(**{k: d[k] for k in _PUBLIC_FIELDS})


class CoreDirectory:
    """The directory service `mss serve` hands the web front end; read-only."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def resolve(self, address: str) -> PublishedMailbox | None:
        async with self._sessions() as session:
            entry = await AnnuaireDirectory(session).resolve(address)
        if entry is None or entry.red_list:
            return None
        return published(entry)

    async def search(self, criteria: DirectorySearch, *, limit: int = 50) -> list[PublishedMailbox]:
        given = {k: v for k in DirectorySearch.names() if (v := getattr(criteria, k))}
        if not given:
            raise DirectoryQueryError(f"give at least one of: {', '.join(DirectorySearch.names())}")
        if given.get("type", "").strip().upper() not in ("", *MAILBOX_TYPES):
            raise DirectoryQueryError(f"type must be {', '.join(MAILBOX_TYPES[:-1])} or {MAILBOX_TYPES[-1]}")
        async with self._sessions() as session:
            found = await AnnuaireDirectory(session).search(limit=max(1, min(limit, MAX_SEARCH_RESULTS)), **given)
        return [published(e) for e in found if not e.red_list]

    def fhir_capabilities(self, base: str) -> JsonObject:
        return cast(JsonObject, fhir.capability_statement(base))

    async def fhir_search(
        self, resource: FhirResourceType, params: Mapping[str, Sequence[str]], *, base: str, self_url: str
    ) -> JsonObject:
        _check_resource(resource)
        query = {k: list(vs) for k, vs in params.items()}
        async with self._sessions() as session:
            try:
                bundle = await fhir.search(session, resource, query, base, self_url)
            except fhir.FhirError as exc:
                raise DirectoryQueryError(str(exc)) from None
        return cast(JsonObject, bundle)

    async def fhir_read(self, resource: FhirResourceType, rid: str) -> JsonObject | None:
        _check_resource(resource)
        async with self._sessions() as session:
            return cast("JsonObject | None", await fhir.read(session, resource, rid))


def _check_resource(resource: str) -> None:
    if resource not in FHIR_RESOURCE_TYPES:
        raise DirectoryQueryError(f"unknown resource type {resource}")
