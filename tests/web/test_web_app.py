"""The web front end's ASGI app in memory (httpx over ASGI): routes, error shapes, security
headers, limits, the generated OpenAPI document and JWKS. The directory here is a fake of
`mss.services.Directory`; the real one is driven in tests/annuaire/test_annuaire_http.py."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from mss import metrics
from mss.config import Settings
from mss.services import DirectoryQueryError, DirectorySearch, PublishedMailbox
from web.app import create_app
from web.security import DEFAULT_CSP, MAX_PARAM_LEN, MAX_PARAMS

ADDRESS = "eric.cote@chu-nantes.mssante.fr"
PUBLIC_JWK = {
    "kty": "EC",
    "crv": "P-256",
    "x": "MBrNB2Zz1kXsTqXP1s8pnTxX-pZ2tRLVsqhNL_vjVLs",
    "y": "j-tVipl8rx9ylTtinlg6cfC7Zn8owKBsHYV2KL1SiZU",
    "kid": "k1",
    "use": "sig",
    "alg": "ES256",
}


@dataclass
class FakeDirectory:
    """`mss.services.Directory` with one published mailbox; `fail` makes every call raise."""

    fail: bool = False
    searches: list[DirectorySearch] = field(default_factory=list)

    def _check(self) -> None:
        if self.fail:
            raise RuntimeError("database down\r\nforged log line")

    async def resolve(self, address: str) -> PublishedMailbox | None:
        self._check()
        return (
            PublishedMailbox(address=ADDRESS, type="PER", idnat="815240824001") if address.lower() == ADDRESS else None
        )

    async def search(self, criteria: DirectorySearch, *, limit: int = 50) -> list[PublishedMailbox]:
        self._check()
        self.searches.append(criteria)
        if not any(getattr(criteria, k) for k in DirectorySearch.names()):
            raise DirectoryQueryError("give at least one of: name, ...")
        return [PublishedMailbox(address=ADDRESS, type="PER")][:limit]

    def fhir_capabilities(self, base: str) -> dict:
        return {"resourceType": "CapabilityStatement", "implementation": {"url": base}}

    async def fhir_search(self, resource, params, *, base, self_url) -> dict:
        self._check()
        if any(k.startswith("mailbox-mss:") and k not in ("mailbox-mss:exact", "mailbox-mss:contains") for k in params):
            raise DirectoryQueryError("unsupported modifier")
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": 0,
            "link": [{"relation": "self", "url": self_url}],
            "entry": [],
            "params": {k: list(v) for k, v in params.items()},
        }

    async def fhir_read(self, resource, rid) -> dict | None:
        self._check()
        known = {"815240824001", "815240824001-0", "1206291486"}
        return {"resourceType": resource, "id": rid} if rid in known else None


@dataclass
class Services:
    settings: Settings
    directory: FakeDirectory

    async def metrics_exposition(self) -> bytes:
        return metrics.exposition()


@pytest.fixture
def jwks_file(tmp_path) -> Path:
    path = tmp_path / "jwks.json"
    # A private member in the file must never be served (the issuer's own file never has one).
    path.write_text(json.dumps({"keys": [{**PUBLIC_JWK, "d": "PRIVATE-SCALAR"}]}))
    return path


def settings_for(tmp_path, **over) -> Settings:
    doc = {
        "domain": "a.test",
        "base_dir": str(tmp_path),
        "tokens": {"jwks": "jwks.json", "issuer": "https://issuer.test", "serve_jwks": True},
    }
    for section, values in over.items():
        doc.setdefault(section, {}).update(values)
    return Settings.model_validate(doc)


def client(services: Services) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(services), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")


@pytest.fixture
def services(tmp_path, jwks_file) -> Services:
    return Services(settings_for(tmp_path), FakeDirectory())


ROUTES = [
    "/health",
    "/.well-known/jwks.json",
    "/openapi.json",
    f"/annuaire/resolve?address={ADDRESS}",
    "/annuaire/search?name=cote",
    "/fhir/metadata",
    "/fhir/Practitioner?name=cote",
    "/fhir/PractitionerRole?practitioner=Practitioner/815240824001",
    "/fhir/Organization?identifier=1206291486",
    "/fhir/Practitioner/815240824001",
    "/fhir/PractitionerRole/815240824001-0",
    "/fhir/Organization/1206291486",
]
ERRORS = [
    ("GET", "/nowhere", 404),
    ("GET", "/annuaire/resolve", 400),
    ("GET", "/annuaire/resolve?address=nobody@a.test", 404),
    ("GET", "/annuaire/search", 400),
    ("GET", "/fhir/Practitioner?mailbox-mss:missing=x", 400),
    ("GET", "/fhir/Practitioner/899999999999", 404),
    ("POST", "/annuaire/search", 405),
    ("GET", "/annuaire/search?name=" + "a" * (MAX_PARAM_LEN + 1), 400),
]


def assert_security_headers(r: httpx.Response) -> None:
    assert r.headers["X-Content-Type-Options"] == "nosniff", r.url
    assert r.headers["Referrer-Policy"] == "no-referrer", r.url
    assert r.headers["Content-Security-Policy"] == DEFAULT_CSP, r.url
    assert r.headers["X-Frame-Options"] == "DENY", r.url
    assert "server" not in r.headers


async def test_every_route_answers_with_the_security_headers(services):
    async with client(services) as c:
        for path in ROUTES:
            r = await c.get(path)
            assert r.status_code == 200, (path, r.text)
            assert_security_headers(r)
            expected = "max-age=300" if "jwks" in path else "no-store"
            assert r.headers["Cache-Control"] == expected, path
            ctype = r.headers["Content-Type"]
            if path.startswith("/fhir/"):
                assert ctype == "application/fhir+json", path
            elif "jwks" in path:
                assert ctype == "application/jwk-set+json"
            else:
                assert ctype == "application/json", path
            head = await c.head(path)
            assert head.status_code == 200 and head.content == b"", path
            assert head.headers["Content-Length"] == r.headers["Content-Length"], path
            assert_security_headers(head)
        for method, path, status in ERRORS:
            r = await c.request(method, path)
            assert r.status_code == status, (method, path, r.text)
            assert_security_headers(r)
            assert r.headers["Cache-Control"] == "no-store"
            doc = r.json()
            if path.startswith("/fhir/"):
                assert (
                    r.headers["Content-Type"] == "application/fhir+json" and doc["resourceType"] == "OperationOutcome"
                )
            else:
                assert r.headers["Content-Type"] == "application/json" and isinstance(doc["error"], str)


async def test_an_internal_error_is_a_json_500_that_says_nothing(tmp_path, jwks_file, caplog):
    async with client(Services(settings_for(tmp_path), FakeDirectory(fail=True))) as c:
        r = await c.get(f"/annuaire/resolve?address={ADDRESS}")
        assert (r.status_code, r.json()) == (500, {"error": "internal error"})
        assert_security_headers(r)
        assert "database down" not in r.text
        r = await c.get("/fhir/Practitioner/815240824001")
        assert r.status_code == 500 and r.json()["resourceType"] == "OperationOutcome"
        assert r.headers["Content-Type"] == "application/fhir+json"
    assert "request failed: GET /annuaire/resolve: RuntimeError" in caplog.text


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_other_methods_get_405_with_allow(services, method):
    async with client(services) as c:
        for path in ROUTES:
            r = await c.request(method, path)
            assert r.status_code == 405, (method, path)
            assert r.headers["Allow"] == "GET, HEAD", path
            assert_security_headers(r)


async def test_query_limits(services):
    async with client(services) as c:
        at_limit = "a" * MAX_PARAM_LEN
        assert (await c.get(f"/annuaire/search?name={at_limit}")).status_code == 200
        # Measured once percent-decoded: 320 "é" are 320 characters, 1,920 bytes on the wire.
        assert (await c.get("/annuaire/search", params={"name": "é" * MAX_PARAM_LEN})).status_code == 200
        r = await c.get(f"/annuaire/search?name={at_limit}a")
        assert (r.status_code, r.json()) == (400, {"error": "query too long"})
        r = await c.get("/annuaire/search?" + "&".join(f"name=a{i}" for i in range(MAX_PARAMS + 1)))
        assert r.status_code == 400
        assert (await c.get("/annuaire/search?" + "&".join(f"name=a{i}" for i in range(MAX_PARAMS)))).status_code == 200
        r = await c.get("/fhir/Organization?" + "x" * (MAX_PARAM_LEN + 1) + "=1")  # a long name counts too
        assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"
        r = await c.get("/health", headers={"X-Big": "a" * (17 * 1024)})
        assert (r.status_code, r.json()) == (431, {"error": "request header fields too large"})
        assert_security_headers(r)
        assert (await c.get("/health", headers={"X-Big": "a" * (15 * 1024)})).status_code == 200
        r = await c.get("/fhir/Organization/" + "1" * 65)
        assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"


async def test_bad_parameters_are_400_never_422(services):
    async with client(services) as c:
        r = await c.get("/annuaire/search?name=cote&limit=ten")
        assert (r.status_code, r.json()) == (400, {"error": "limit must be an integer"})
        r = await c.get("/annuaire/resolve?address=")
        assert r.status_code == 400 and "address" in r.json()["error"]
        r = await c.get("/fhir/Practitioner?name=cote&_count=<script>")
        assert r.status_code == 400 and r.json()["issue"][0]["diagnostics"] == "_count must be an integer"
        assert "<script>" not in r.text  # the value is never echoed


async def test_fhir_search_gets_the_whole_query_and_a_self_link(services):
    async with client(services) as c:
        r = await c.get("/fhir/Practitioner?identifier=1&identifier=2&mailbox-mss:exact=A@b.test")
        b = r.json()
        assert b["params"] == {"identifier": ["1", "2"], "mailbox-mss:exact": ["A@b.test"]}
        assert b["link"][0]["url"] == "/fhir/Practitioner?identifier=1&identifier=2&mailbox-mss%3Aexact=A%40b.test"


async def test_a_body_over_the_limit_gets_413(tmp_path, jwks_file):
    s = Services(settings_for(tmp_path, limits={"http_max_body": 1024}), FakeDirectory())
    async with client(s) as c:
        r = await c.post("/annuaire/search", content=b"x" * 2048)
        assert r.status_code == 413
        assert_security_headers(r)
        assert (await c.post("/annuaire/search", content=b"x" * 100)).status_code == 405


async def test_openapi_is_generated_from_the_routes(services):
    async with client(services) as c:
        doc = (await c.get("/openapi.json")).json()
        for ui in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            assert (await c.get(ui)).status_code == 404  # no pages that load scripts from a CDN
    assert doc["openapi"].startswith("3.1")
    paths = doc["paths"]
    assert set(paths) == {
        "/health",
        "/.well-known/jwks.json",
        "/annuaire/resolve",
        "/annuaire/search",
        "/fhir/metadata",
        *(f"/fhir/{t}" for t in ("Practitioner", "PractitionerRole", "Organization")),
        *(f"/fhir/{t}/{{id}}" for t in ("Practitioner", "PractitionerRole", "Organization")),
    }
    assert all(set(ops) == {"get"} for ops in paths.values())

    def params(path: str) -> dict[str, dict]:
        return {p["name"]: p for p in paths[path]["get"].get("parameters", [])}

    resolve = params("/annuaire/resolve")
    assert resolve["address"]["required"] is True and resolve["address"]["in"] == "query"
    assert resolve["address"]["schema"]["maxLength"] == MAX_PARAM_LEN
    assert set(params("/annuaire/search")) == {
        "name",
        "profession",
        "specialty",
        "postcode",
        "department",
        "type",
        "limit",
    }
    assert params("/annuaire/search")["limit"]["schema"]["anyOf"][0]["type"] == "integer"
    common = {"identifier", "mailbox-mss", "mailbox-mss:exact", "mailbox-mss:contains", "_count"}
    assert set(params("/fhir/Practitioner")) == common | {"name", "family"}
    assert set(params("/fhir/PractitionerRole")) == common | {"practitioner"}
    assert set(params("/fhir/Organization")) == common | {"name"}
    assert params("/fhir/Practitioner/{id}")["id"]["in"] == "path"
    for path, ops in paths.items():
        responses = ops["get"]["responses"]
        assert "422" not in responses, path  # bad parameters are answered with 400
        if ops["get"].get("parameters"):
            assert "400" in responses, path
    assert set(paths["/fhir/Practitioner"]["get"]["responses"]["200"]["content"]) == {"application/fhir+json"}
    assert set(paths["/annuaire/resolve"]["get"]["responses"]["404"]["content"]) == {"application/json"}
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    # The public face of a mailbox is generated from mss.services.PublishedMailbox: no red-list flag.
    assert "address" in schemas["PublishedMailbox"]["properties"]
    assert "red_list" not in schemas["PublishedMailbox"]["properties"]


async def test_jwks_is_served_without_private_members_and_reread_on_change(services, jwks_file):
    async with client(services) as c:
        r = await c.get("/.well-known/jwks.json")
        assert r.status_code == 200 and r.json() == {"keys": [PUBLIC_JWK]}
        assert "PRIVATE" not in r.text
        rolled = {**PUBLIC_JWK, "kid": "k2"}
        jwks_file.write_text(json.dumps({"keys": [rolled, {"kty": "oct", "k": "c2VjcmV0"}]}))
        st = jwks_file.stat()
        os.utime(jwks_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a later mtime, whatever the clock
        r = await c.get("/.well-known/jwks.json")
        assert r.json() == {"keys": [rolled, {"kty": "oct"}]}
        jwks_file.write_text("{ not json")
        st = jwks_file.stat()
        os.utime(jwks_file, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
        r = await c.get("/.well-known/jwks.json")
        assert (r.status_code, r.json()) == (500, {"error": "internal error"})


@pytest.mark.parametrize("tokens", [{"serve_jwks": False}, {"jwks": "https://issuer.test/jwks.json"}])
async def test_jwks_is_not_found_unless_served_from_a_local_file(tmp_path, jwks_file, tokens):
    async with client(Services(settings_for(tmp_path, tokens=tokens), FakeDirectory())) as c:
        r = await c.get("/.well-known/jwks.json")
        assert (r.status_code, r.json()) == (404, {"error": "not found"})
        assert_security_headers(r)
