"""HTTP face of the directory, free of any web framework.

The process's single HTTP listener calls `handle(method, path, query, session_factory)` for
every request; it returns `(status, headers, body)` for the paths it owns and None for the
others. `query` is what `urllib.parse.parse_qs(..., keep_blank_values=True)` returns.
Everything here is read-only and never shows a red-listed mailbox.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Callable
from urllib.parse import unquote, urlencode

from annuaire import fhir
from annuaire.search import Directory, DirectoryEntry

log = logging.getLogger("annuaire.http")

Response = tuple[int, dict[str, str], bytes]

JSON = "application/json; charset=utf-8"
FHIR_JSON = "application/fhir+json; charset=utf-8"
FHIR_RESOURCES = ("Practitioner", "PractitionerRole", "Organization")
MAX_PARAM_LEN = 320
SEARCH_KEYS = ("name", "profession", "specialty", "postcode", "department", "type")

# What a member of the public may see of a mailbox.
_PUBLIC_FIELDS = ("address", "type", "idnat", "structure_id", "display_name", "civility", "last_name",
                  "first_name", "profession_code", "profession_label", "specialty_code", "specialty_label",
                  "service", "organisation", "postcode", "city", "department", "dematerialisation")


def _json(status: int, doc: Any, ctype: str = JSON) -> Response:
    body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return status, {"Content-Type": ctype, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}, body


def _public(e: DirectoryEntry) -> dict[str, Any]:
    d = e.to_dict()
    return {k: d[k] for k in _PUBLIC_FIELDS}


def _one(query: dict[str, list[str]], name: str) -> str | None:
    vs = query.get(name)
    return vs[0] if vs else None


def owns(path: str) -> bool:
    return (path in ("/openapi.json", "/annuaire/resolve", "/annuaire/search", "/fhir/metadata")
            or any(path == f"/fhir/{r}" or path.startswith(f"/fhir/{r}/") for r in FHIR_RESOURCES))


async def handle(
    method: str,
    path: str,
    query: dict[str, list[str]],
    session_factory: Callable[[], Any],
    *,
    base_url: str = "",
) -> Response | None:
    """Answer one request, or None when `path` is not the directory's."""
    path = path.split("?", 1)[0]
    if not owns(path):
        return None
    if method not in ("GET", "HEAD"):
        r = _json(405, {"error": "method not allowed"})
        r[1]["Allow"] = "GET, HEAD"
        return r
    if any(len(v) > MAX_PARAM_LEN for vs in query.values() for v in vs) or sum(len(vs) for vs in query.values()) > 32:
        return _json(400, {"error": "query too long"})
    try:
        if path == "/openapi.json":
            return _json(200, openapi(base_url))
        if path == "/annuaire/resolve":
            return await _resolve(query, session_factory)
        if path == "/annuaire/search":
            return await _search(query, session_factory)
        return await _fhir(path, query, session_factory, base_url)
    except Exception:  # noqa: BLE001 - a request never takes the listener down
        log.exception("directory request failed: %s %s", method, path)
        return _json(500, {"error": "internal error"})


async def _resolve(query: dict[str, list[str]], sf: Callable[[], Any]) -> Response:
    address = _one(query, "address")
    if not address:
        return _json(400, {"error": "missing parameter: address"})
    async with sf() as session:
        e = await Directory(session).resolve(address)
    if e is None or e.red_list:
        return _json(404, {"error": "not found", "address": address})
    return _json(200, _public(e))


async def _search(query: dict[str, list[str]], sf: Callable[[], Any]) -> Response:
    crit = {k: _one(query, k) for k in SEARCH_KEYS}
    crit = {k: v for k, v in crit.items() if v}
    if not crit:
        return _json(400, {"error": f"give at least one of: {', '.join(SEARCH_KEYS)}"})
    try:
        limit = int(_one(query, "limit") or 50)
    except ValueError:
        return _json(400, {"error": "limit must be an integer"})
    if crit.get("type", "").upper() not in ("", "PER", "ORG", "APP", "CAB"):
        return _json(400, {"error": "type must be PER, ORG, APP or CAB"})
    async with sf() as session:
        found = await Directory(session).search(limit=max(1, min(limit, 200)), **crit)
    results = [_public(e) for e in found if not e.red_list]
    return _json(200, {"count": len(results), "results": results})


async def _fhir(path: str, query: dict[str, list[str]], sf: Callable[[], Any], base_url: str) -> Response:
    base = f"{base_url}/fhir"
    if path == "/fhir/metadata":
        return _json(200, fhir.capability_statement(base), FHIR_JSON)
    parts = path.split("/")  # ['', 'fhir', Type, (id)]
    rtype = parts[2]
    async with sf() as session:
        if len(parts) == 4 and parts[3]:
            res = await fhir.read(session, rtype, unquote(parts[3]))
            if res is None:
                return _json(404, fhir.outcome("error", "not-found", f"{rtype}/{parts[3]} not found"), FHIR_JSON)
            return _json(200, res, FHIR_JSON)
        if len(parts) != 3:
            return _json(404, fhir.outcome("error", "not-found", path), FHIR_JSON)
        self_url = f"{base}/{rtype}" + ("?" + urlencode(query, doseq=True) if query else "")
        try:
            bundle = await fhir.search(session, rtype, query, base, self_url)
        except fhir.FhirError as exc:
            return _json(400, fhir.outcome("error", "invalid", str(exc)), FHIR_JSON)
    return _json(200, bundle, FHIR_JSON)


def openapi(base_url: str = "") -> dict:
    """OpenAPI 3.1 description of the directory's HTTP face."""

    def q(name: str, desc: str, required: bool = False, schema: dict | None = None) -> dict:
        return {"name": name, "in": "query", "required": required, "description": desc,
                "schema": schema or {"type": "string"}}

    fhir_params = [
        q("identifier", "National id, `value` or `system|value`."),
        q("mailbox-mss", "MSSanté address, starts-with; `mailbox-mss:exact` and `mailbox-mss:contains` too."),
        q("_count", "Page size (max 500).", schema={"type": "integer"}),
    ]
    bundle = {"description": "FHIR R4 searchset Bundle", "content": {"application/fhir+json": {"schema": {"type": "object"}}}}

    def fhir_paths(t: str, extra: list[dict]) -> dict:
        return {
            f"/fhir/{t}": {"get": {"summary": f"Search {t}", "parameters": fhir_params + extra,
                                    "responses": {"200": bundle, "400": {"description": "OperationOutcome"}}}},
            f"/fhir/{t}/{{id}}": {"get": {"summary": f"Read {t}",
                                          "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
                                          "responses": {"200": {"description": t}, "404": {"description": "OperationOutcome"}}}},
        }

    entry = {"type": "object", "properties": {k: {"type": "boolean" if k == "dematerialisation" else "string"} for k in _PUBLIC_FIELDS}}
    paths: dict[str, Any] = {
        "/annuaire/resolve": {"get": {
            "summary": "The mailbox at an address (case-insensitive); red-listed ones are not found.",
            "parameters": [q("address", "MSSanté address", True)],
            "responses": {"200": {"description": "Mailbox", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Mailbox"}}}},
                          "404": {"description": "Unknown or not published"}}}},
        "/annuaire/search": {"get": {
            "summary": "Search mailboxes; every given criterion must match.",
            "parameters": [q("name", "Name prefix, accents and case ignored"), q("profession", "Code (10) or label"),
                           q("specialty", "Savoir-faire code (SM54) or label"), q("postcode", "Postcode or prefix"),
                           q("department", "Department code"), q("type", "PER, ORG, APP or CAB"),
                           q("limit", "Max results (200)", schema={"type": "integer"})],
            "responses": {"200": {"description": "Results", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"count": {"type": "integer"},
                                                 "results": {"type": "array", "items": {"$ref": "#/components/schemas/Mailbox"}}}}}}},
                          "400": {"description": "No criterion"}}}},
        "/fhir/metadata": {"get": {"summary": "FHIR CapabilityStatement", "responses": {"200": {"description": "CapabilityStatement"}}}},
    }
    paths.update(fhir_paths("Practitioner", [q("name", "Name prefix")]))
    paths.update(fhir_paths("PractitionerRole", [q("practitioner", "Practitioner/<idnat>")]))
    paths.update(fhir_paths("Organization", [q("name", "Name prefix")]))
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "MSS directory", "version": "1", "description": "Read-only directory of MSSanté mailboxes."},
        "paths": paths,
        "components": {"schemas": {"Mailbox": entry}},
    }
    if base_url:
        doc["servers"] = [{"url": base_url}]
    return doc
