"""The portal's HTTP hardening with the real core: headers per route type, cookie flags,
CSRF (token, Sec-Fetch-Site, Origin), signed-out redirects, and the static route."""

from __future__ import annotations

import pytest
from portal_helpers import API_CSP, PAGE_CSP, active_patient, api, client_for, csrf_of, signed_in


def assert_portal_headers(response, csp: str) -> None:
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["content-security-policy"] == csp


async def test_anonymous_pages_headers_and_csrf_cookie(core):
    async with client_for(core) as http:
        for path in ("/portal/connexion", "/portal/activation"):
            response = await http.get(path)
            assert response.status_code == 200 and response.headers["content-type"] == "text/html; charset=utf-8"
            assert_portal_headers(response, PAGE_CSP)
            assert "<script>" not in response.text and "style=" not in response.text
    async with client_for(core) as http:
        # Snapshot of the double-submit cookie's flags (set once, then kept).
        page = await http.get("/portal/connexion")
        cookie = page.headers["set-cookie"]
        name, _, flags = cookie.partition(";")
        assert name.startswith("__Host-mss-csrf=")
        assert sorted(f.strip() for f in flags.split(";")) == ["HttpOnly", "Path=/", "SameSite=strict", "Secure"]
        assert "set-cookie" not in (await http.get("/portal/activation")).headers


async def test_signed_out_pages_redirect_and_api_says_401(core):
    async with client_for(core) as http:
        home = await http.get("/portal/")
        assert home.status_code == 303 and home.headers["location"] == "/portal/connexion"
        for path in (
            "/portal/messages",
            "/portal/conversations/1",
            "/portal/parametres",
            "/portal/journal",
            "/portal/journal.csv",
            "/portal/donnees",
            "/portal/cloture",
        ):
            response = await http.get(path)
            assert (response.status_code, response.headers["location"]) == (303, "/portal/connexion"), path
        for path in (
            "/portal/api/session",
            "/portal/api/session/key",
            "/portal/api/password/params",
            "/portal/api/messages/1",
            "/portal/api/export",
        ):
            response = await http.get(path)
            assert response.status_code == 401 and "error" in response.json(), path
            assert_portal_headers(response, API_CSP)


async def test_session_cookie_flags_and_page_headers(core):
    patient = await active_patient(core)
    async with signed_in(core, patient) as (http, token):
        cookie = http.cookies.jar
        session = [c for c in cookie if c.name == "__Host-mss-session"]
        assert len(session) == 1
        c = session[0]
        assert c.secure and c.path == "/" and not c.domain_specified and c.has_nonstandard_attr("HttpOnly")
        assert c.get_nonstandard_attr("SameSite") == "strict"
        for path in ("/portal/messages", "/portal/parametres", "/portal/journal", "/portal/donnees", "/portal/cloture"):
            response = await http.get(path)
            assert response.status_code == 200, path
            assert_portal_headers(response, PAGE_CSP)
            assert "<script>" not in response.text and " style=" not in response.text
        response = await http.get("/portal/api/session")
        assert response.status_code == 200 and set(response.json()) == {"expires_in", "warn_before"}
        assert_portal_headers(response, API_CSP)


async def test_csrf_token_fetch_site_and_origin(core):
    patient = await active_patient(core)
    async with signed_in(core, patient) as (http, token):
        url = "/portal/parametres/notifications"
        # Plain forms: no token, a wrong one, another session's, cross-site, foreign origin.
        assert (await http.post(url, data={"notifications": "non"})).status_code == 403
        assert (await http.post(url, data={"csrf": "0" * 64, "notifications": "non"})).status_code == 403
        cross = await http.post(
            url, data={"csrf": token, "notifications": "non"}, headers={"sec-fetch-site": "cross-site"}
        )
        assert cross.status_code == 403 and "text/html" in cross.headers["content-type"]
        assert 'role="alert"' in cross.text
        same_site = await http.post(url, data={"csrf": token}, headers={"sec-fetch-site": "same-site"})
        assert same_site.status_code == 403
        foreign = await http.post(url, data={"csrf": token}, headers={"origin": "https://evil.example"})
        assert foreign.status_code == 403
        ok = await http.post(
            url,
            data={"csrf": token, "notifications": "non"},
            headers={"origin": "https://testserver", "sec-fetch-site": "same-origin"},
        )
        assert ok.status_code == 303 and ok.headers["location"] == "/portal/parametres?statut=notifications-off"
        # The JSON API: the header token.
        extend = "/portal/api/session/extend"
        assert (await http.post(extend, json={})).status_code == 403
        assert (await api(http, extend, {}, "nope")).status_code == 403
        assert (await api(http, extend, {}, token, **{"sec-fetch-site": "cross-site"})).status_code == 403
        # `Origin: null` (what a same-origin form post under no-referrer carries) says nothing:
        # Sec-Fetch-Site and the token decide.
        opaque_cross = await api(http, extend, {}, token, origin="null", **{"sec-fetch-site": "cross-site"})
        assert opaque_cross.status_code == 403
        opaque_same = await api(http, extend, {}, token, origin="null", **{"sec-fetch-site": "same-origin"})
        assert opaque_same.status_code == 200
        assert (await api(http, extend, {}, "nope", origin="null")).status_code == 403
        response = await api(http, extend, {}, token)
        assert response.status_code == 200 and response.json()["expires_in"] > 0

    # Anonymous steps: the double-submit cookie's token, never a made-up one.
    async with client_for(core) as anon:
        page = await anon.get("/portal/connexion")
        anon_token = csrf_of(page.text)
        assert (await api(anon, "/portal/api/prelogin", {"login": patient.ins}, "x" * 64)).status_code == 403
        assert (await anon.post("/portal/api/prelogin", json={"login": patient.ins})).status_code == 403
        bad_origin = await api(
            anon, "/portal/api/prelogin", {"login": patient.ins}, anon_token, origin="https://x.test"
        )
        assert bad_origin.status_code == 403 and bad_origin.json()["error"]
        anon.cookies.clear()  # a token without its cookie is worth nothing
        assert (await api(anon, "/portal/api/prelogin", {"login": patient.ins}, anon_token)).status_code == 403


async def test_bounded_bodies(core):
    async with client_for(core) as http:
        token = csrf_of((await http.get("/portal/connexion")).text)
        too_long = await api(http, "/portal/api/prelogin", {"login": "x" * 400}, token)
        assert too_long.status_code == 400 and too_long.json() == {"error": "Requête invalide."}
        extra = await api(http, "/portal/api/prelogin", {"login": "x", "more": 1}, token)
        assert extra.status_code == 400
        huge = await http.post(
            "/portal/api/prelogin",
            content=b'{"login":"' + b"x" * (core.settings.limits.http_max_body + 10) + b'"}',
            headers={"x-csrf-token": token, "content-type": "application/json"},
        )
        assert huge.status_code == 413
        bad_key = await api(http, "/portal/api/login", {"login": "x", "auth_key": "A" * 44}, token)
        assert bad_key.status_code == 400


@pytest.mark.parametrize(
    "path",
    [
        "/portal/static/../app.py",
        "/portal/static/%2e%2e/app.py",
        "/portal/static/..%2fapp.py",
        "/portal/static/build/../../app.py",
        "/portal/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/portal/static/",
        "/portal/static/build/",
        "/portal/static/.hidden.css",
        "/portal/static//etc/passwd",
        "/portal/static/portal.css%00.js",
        "/portal/static/nope.css",
    ],
)
async def test_static_route_refuses_traversal_and_listing(core, path):
    async with client_for(core) as http:
        response = await http.get(path)
        assert response.status_code == 404, (path, response.text[:200])
        assert "import" not in response.text and "[project]" not in response.text


async def test_static_css_is_served_with_its_type(core):
    async with client_for(core) as http:
        response = await http.get("/portal/static/portal.css")
        assert response.status_code == 200 and response.headers["content-type"] == "text/css; charset=utf-8"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "@font-face" not in response.text and "Marianne" not in response.text and ".sr-only" in response.text


async def test_existing_routes_still_work(core):
    async with client_for(core) as http:
        assert (await http.get("/health")).json() == {"status": "ok"}
        doc = (await http.get("/openapi.json")).json()
        assert not any(p.startswith("/portal") for p in doc["paths"])
        unknown = await http.get("/portal/nulle-part")
        assert unknown.status_code == 404 and 'lang="fr"' in unknown.text
        assert (await http.get("/portal/api/nulle-part")).json()["error"]
