"""Sign-in, activation, second factor, sessions and throttling through the portal's JSON
API, with the real core and the reference client doing what the browser does: the server
receives derived keys only, and hands back records only the client can unwrap."""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from cryptography import x509
from portal_helpers import (
    Tree,
    active_patient,
    api,
    b64,
    client_for,
    csrf_of,
    pending_patient,
    reference_client,
    sign_in,
    signed_in,
)
from sqlalchemy import text

import mss.throttle
from crypto.patient import KdfParams, derive_keys, normalise_activation_code

SESSION = "__Host-mss-session"


def certificate_of(doc: dict) -> x509.Certificate:
    """The patient certificate an answer carries (base64 DER), which the browser checks the
    unwrapped key against."""
    return x509.load_der_x509_certificate(base64.b64decode(doc["certificate"], validate=True))


async def session_key_of(http) -> bytes:
    response = await http.get("/portal/api/session/key")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return base64.b64decode(response.json()["key"], validate=True)


async def test_login_with_the_reference_client_and_the_record_unwraps(core):
    patient = await active_patient(core)
    async with client_for(core) as http:
        page = await http.get("/portal/connexion")
        token = csrf_of(page.text)
        params = (await api(http, "/portal/api/prelogin", {"login": patient.address.upper()}, token)).json()
        assert {"v", "kdf", "iterations", "salt"} <= set(params)
        decoy = (await api(http, "/portal/api/prelogin", {"login": "inconnu@example.org"}, token)).json()
        assert set(decoy) == set(params)  # same shape: nothing says who exists

        client = reference_client(core)
        key = await asyncio.to_thread(client.login, patient.password, params)
        assert SESSION not in http.cookies
        response = await api(http, "/portal/api/login", {"login": patient.address.upper(), "auth_key": b64(key)}, token)
        assert response.status_code == 200, response.text
        doc = response.json()
        assert set(doc) == {"next", "record", "certificate", "session_key"}
        assert doc["next"] == "/portal/messages"
        # The record unwraps to the key of the certificate that comes with it.
        private = await asyncio.to_thread(
            client.unlock, patient.password, doc["record"], certificate=certificate_of(doc)
        )
        assert private.key_size >= 2048
        assert certificate_of(doc) == (await core.patients.own_target(patient.address)).certificate
        assert response.headers["cache-control"] == "no-store"
        assert SESSION in http.cookies
        # The session key K_s: 32 bytes of this session's row, handed again to its pages.
        local_key = base64.b64decode(doc["session_key"], validate=True)
        assert len(local_key) == 32
        assert (await core.portal.session(http.cookies[SESSION])).local_key == local_key
        assert await session_key_of(http) == local_key
        # Only for the portal's own scripts: another site's request is refused.
        for header in ({"sec-fetch-site": "cross-site"}, {"sec-fetch-site": "same-site"}, {"origin": "https://x.test"}):
            refused = await http.get("/portal/api/session/key", headers=header)
            assert refused.status_code == 403 and "key" not in refused.json(), header

        inbox = await http.get("/portal/messages")
        assert inbox.status_code == 200 and 'data-page="messages"' in inbox.text

        # A login line in the journal: truncated address, short user agent.
        journal = await core.portal.journal(await core.patients.authenticate(patient.ins, key))
        logins = [line for line in journal if line.action == "login"]
        assert len(logins) == 1 and re.fullmatch(r"10\.\d+\.\d+\.0/24, Firefox 128 \(Linux\)", logins[0].detail), logins


async def test_wrong_key_is_401_in_french_and_the_password_never_has_a_name(core):
    patient = await active_patient(core)
    async with client_for(core) as http:
        page = await http.get("/portal/connexion")
        assert re.search(r'<input id="mot-de-passe" type="password"[^>]*>', page.text)
        assert "name=" not in re.search(r'<input id="mot-de-passe"[^>]*>', page.text).group(0)
        token = csrf_of(page.text)
        response = await api(http, "/portal/api/login", {"login": patient.ins, "auth_key": b64(b"\0" * 32)}, token)
        assert response.status_code == 401 and response.json() == {"error": "Identifiant ou mot de passe incorrect."}
        assert SESSION not in http.cookies


async def test_session_id_is_renewed_at_login_and_logout_destroys_it(core):
    patient = await active_patient(core)
    client = reference_client(core)
    async with client_for(core) as http:
        token = csrf_of((await http.get("/portal/connexion")).text)
        params = (await api(http, "/portal/api/prelogin", {"login": patient.ins}, token)).json()
        body = {"login": patient.ins, "auth_key": b64(await asyncio.to_thread(client.login, patient.password, params))}
        first = await api(http, "/portal/api/login", body, token)
        assert first.status_code == 200
        old_id = http.cookies[SESSION]
        # Signing in again (another tab of the same browser) gives a new id, ends the old one,
        # and a new session key.
        again = await api(http, "/portal/api/login", body, token)
        assert again.status_code == 200
        new_id = http.cookies[SESSION]
        assert new_id != old_id and await core.portal.session(old_id) is None
        assert again.json()["session_key"] != first.json()["session_key"]
        assert await session_key_of(http) == base64.b64decode(again.json()["session_key"])
        assert (await http.get("/portal/connexion")).headers["location"] == "/portal/messages"

        page = await http.get("/portal/messages")
        token = csrf_of(page.text)
        logout = await http.post("/portal/deconnexion", data={"csrf": token})
        assert logout.status_code == 303 and logout.headers["location"] == "/portal/connexion?statut=deconnecte"
        assert SESSION not in http.cookies
        assert await core.portal.session(new_id) is None
        async with core.sessions() as s:
            left = text("SELECT count(*) FROM portal_session WHERE ins = :i")
            assert (await s.execute(left, {"i": patient.ins})).scalar_one() == 0  # nor K_s anywhere

    async with client_for(core) as replay:  # the old cookie, replayed, opens nothing
        replay.cookies.set(SESSION, new_id, domain="testserver")
        page = await replay.get("/portal/messages")
        assert page.status_code == 303 and page.headers["location"] == "/portal/connexion"
        assert (await replay.get("/portal/api/session")).status_code == 401
        gone = await replay.get("/portal/api/session/key")  # K_s went with the session
        assert gone.status_code == 401 and "key" not in gone.json()


async def test_activation_through_the_api_then_sign_in(core):
    patient = await pending_patient(core)
    password = "un mot de passe " + uuid.uuid4().hex[:10]
    client = reference_client(core)
    async with client_for(core) as http:
        page = await http.get("/portal/activation")
        assert 'data-page="activation"' in page.text
        token = csrf_of(page.text)
        params = (await api(http, "/portal/api/activation/prelogin", {"login": patient.ins}, token)).json()
        code_key, _ = derive_keys(normalise_activation_code(patient.activation_code), KdfParams.from_json(params))
        wrong = await api(http, "/portal/api/activation/key", {"login": patient.ins, "auth_key": b64(b"1" * 32)}, token)
        assert wrong.status_code == 401 and wrong.json()["error"]
        got = await api(http, "/portal/api/activation/key", {"login": patient.ins, "auth_key": b64(code_key)}, token)
        assert got.status_code == 200, got.text
        assert set(got.json()) == {"record", "certificate"} and "certificate" not in wrong.json()
        rewrap = await asyncio.to_thread(
            client.activate,
            patient.activation_code,
            password,
            got.json()["record"],
            certificate=certificate_of(got.json()),
        )
        done = await api(
            http,
            "/portal/api/activation",
            {
                "login": patient.ins,
                "activation_auth_key": b64(rewrap.old_auth_key),
                "auth_key": b64(rewrap.new_auth_key),
                "record": rewrap.wrapped.to_json(),
            },
            token,
        )
        assert done.status_code == 200 and done.json() == {"ok": True}
        login = await sign_in(http, core, patient.address, password)
        assert login.status_code == 200 and login.json()["next"] == "/portal/messages"
        assert certificate_of(login.json()) == certificate_of(got.json())


async def _enable_totp(http, token: str) -> tuple[str, list[str]]:
    page = await http.post("/portal/parametres/totp/activer", data={"csrf": token})
    assert page.status_code == 200
    assert re.search(r'<img class="qr" src="data:image/svg\+xml;base64,[A-Za-z0-9+/=]+"', page.text)
    secret = re.search(r'<code class="secret">([A-Z2-7]+)</code>', page.text).group(1)
    wrong = await http.post("/portal/parametres/totp/confirmer", data={"csrf": token, "code": "000000"})
    if wrong.status_code == 303:  # (000000 may, once in a million, be right)
        assert wrong.headers["location"] == "/portal/parametres?alerte=totp-code"
        page = await http.post("/portal/parametres/totp/activer", data={"csrf": token})
        secret = re.search(r'<code class="secret">([A-Z2-7]+)</code>', page.text).group(1)
    codes_page = await http.post(
        "/portal/parametres/totp/confirmer", data={"csrf": token, "code": pyotp.TOTP(secret).now()}
    )
    assert codes_page.status_code == 200, codes_page.text
    codes = re.findall(r"<li><code>([^<]+)</code></li>", codes_page.text)
    assert len(codes) == 10
    return secret, codes


async def test_totp_step_renews_the_session_and_pending_reaches_nothing_else(core):
    patient = await active_patient(core)
    async with signed_in(core, patient) as (http, token):
        secret, codes = await _enable_totp(http, token)
        settings = await http.get("/portal/parametres")
        assert "est <strong>activée</strong>" in settings.text
        await http.post("/portal/deconnexion", data={"csrf": token})

        login = await sign_in(http, core, patient.ins, patient.password)
        assert login.status_code == 200 and login.json() == {"next": "totp"}
        pending_id = http.cookies[SESSION]
        # A pending session is not signed in.
        assert (await http.get("/portal/messages")).status_code == 303
        assert (await http.get("/portal/api/session")).status_code == 401
        assert (await http.get("/portal/api/session/key")).status_code == 401  # no K_s before TOTP
        assert (await http.get("/portal/connexion")).status_code == 200
        token = csrf_of((await http.get("/portal/connexion")).text)

        bad = await api(http, "/portal/api/totp", {"code": "12345"}, token)
        assert bad.status_code == 401 and bad.json() == {"error": "Ce code n'est pas valide."}
        good = await api(http, "/portal/api/totp", {"code": codes[0]}, token)  # a recovery code
        assert good.status_code == 200, good.text
        assert set(good.json()) == {"next", "record", "certificate", "session_key"}
        assert good.json()["next"] == "/portal/messages"
        assert http.cookies[SESSION] != pending_id and await core.portal.session(pending_id) is None
        assert await session_key_of(http) == base64.b64decode(good.json()["session_key"])
        assert (await http.get("/portal/messages")).status_code == 200
        # A spent recovery code does not work twice; turning TOTP off needs a valid code.
        token = csrf_of((await http.get("/portal/parametres")).text)
        off = await http.post("/portal/parametres/totp/desactiver", data={"csrf": token, "code": "abc"})
        assert off.headers["location"] == "/portal/parametres?alerte=totp-code"
        page = await http.get(off.headers["location"])
        assert "Ce code n&#39;est pas valide" in page.text
        off = await http.post("/portal/parametres/totp/desactiver", data={"csrf": token, "code": codes[1]})
        assert off.headers["location"] == "/portal/parametres?statut=totp-off"


@pytest.fixture
def still_throttle_clock(monkeypatch):
    """The throttle's clock held still: its first back-off is 1 s, which a loaded machine can
    spend between two requests of a test, letting one more attempt through than it counts."""
    frozen = datetime.now(UTC)
    monkeypatch.setattr(mss.throttle, "utc_now", lambda: frozen)


async def test_login_is_throttled_with_retry_after(core, still_throttle_clock):
    login = f"inconnu-{uuid.uuid4().hex[:8]}@example.org"
    async with client_for(core) as http:
        token = csrf_of((await http.get("/portal/connexion")).text)
        statuses = []
        for _ in range(core.settings.portal.account_free_failures + 2):
            response = await api(http, "/portal/api/login", {"login": login, "auth_key": b64(b"\1" * 32)}, token)
            statuses.append(response.status_code)
            if response.status_code == 429:
                break
        assert statuses[0] == 401 and statuses[-1] == 429, statuses
        doc = response.json()
        assert int(response.headers["retry-after"]) == doc["retry_after"] >= 1
        assert "Réessayez" in doc["error"]
    # Another network is not held back by this one's failures (a guesser elsewhere must not
    # keep the patient out), until the account-wide allowance is spent: then it is too.
    core.settings.portal.account_wide_free_failures = statuses.count(401) + 1
    async with client_for(core) as other:
        token = csrf_of((await other.get("/portal/connexion")).text)
        elsewhere = []
        for _ in range(4):
            body = {"login": login.upper(), "auth_key": b64(b"\1" * 32)}
            elsewhere.append((await api(other, "/portal/api/login", body, token)).status_code)
        assert elsewhere[0] == 401 and elsewhere[-1] == 429, elsewhere


async def test_sign_in_and_activation_pages_follow_the_contract(core):
    async with client_for(core) as http:
        page = await http.get("/portal/connexion")
        tree = Tree(page.text)
        assert "<title>Connexion – Portail patient</title>" in page.text and 'data-page="connexion"' in page.text
        assert tree.by_id("form-connexion")[0] == "form"
        assert tree.label_for("identifiant") == "Identifiant" and tree.label_for("mot-de-passe") == "Mot de passe"
        assert "hidden" in tree.by_id("form-totp")[1] and tree.label_for("code-totp") == "Code de vérification"
        assert {"Se connecter", "Valider"} <= set(tree.buttons())
        assert "form-deconnexion" not in page.text and "<dialog" not in page.text
        assert [a.get("name") for t, a in tree.elements if t == "input"] == [None, None, None]

        page = await http.get("/portal/activation")
        tree = Tree(page.text)
        assert 'data-page="activation"' in page.text and tree.by_id("form-activation")[0] == "form"
        assert tree.label_for("identifiant") == "Identifiant"
        assert tree.label_for("code-activation") == "Code d'activation"
        assert tree.label_for("nouveau-mot-de-passe") == "Nouveau mot de passe"
        assert tree.label_for("confirmation-mot-de-passe") == "Confirmer le nouveau mot de passe"
        assert "Activer mon espace" in tree.buttons()
        assert re.findall(r"<h([1-6])", page.text)[0] == "1"


async def test_password_change_through_the_api(core):
    patient = await active_patient(core)
    client = reference_client(core)
    new_password = "nouveau mot de passe " + uuid.uuid4().hex[:8]
    async with client_for(core) as anonymous:
        assert (await anonymous.get("/portal/api/password/params")).status_code == 401
    async with signed_in(core, patient) as (http, token):
        # The signed-in page's own KDF parameters (no anonymous prelogin, no CSRF pair needed).
        answer = await http.get("/portal/api/password/params")
        assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
        params = answer.json()
        assert params == await core.portal.login_params(patient.ins)
        assert set(params) == {"v", "kdf", "iterations", "salt"}
        # The prelogin of the sign-in page is not for it (its token is the session's): 403.
        assert (await api(http, "/portal/api/prelogin", {"login": patient.ins}, token)).status_code == 403
        old_key = await asyncio.to_thread(client.login, patient.password, params)
        wrong = await api(http, "/portal/api/password/record", {"old_auth_key": b64(b"\2" * 32)}, token)
        assert wrong.status_code == 403 and wrong.json() == {"error": "Le mot de passe actuel est incorrect."}
        got = await api(http, "/portal/api/password/record", {"old_auth_key": b64(old_key)}, token)
        assert got.status_code == 200, got.text
        assert set(got.json()) == {"record", "certificate"}
        key = await asyncio.to_thread(
            client.unlock, patient.password, got.json()["record"], certificate=certificate_of(got.json())
        )
        assert key.key_size >= 2048
        rewrap = await asyncio.to_thread(client.change_password, patient.password, new_password, got.json()["record"])
        body = {
            "old_auth_key": b64(rewrap.old_auth_key),
            "auth_key": b64(rewrap.new_auth_key),
            "record": rewrap.wrapped.to_json(),
        }
        done = await api(http, "/portal/api/password", body, token)
        assert done.status_code == 200 and done.json() == {"ok": True}
        after = (await http.get("/portal/api/password/params")).json()
        assert after["salt"] == rewrap.wrapped.to_json()["salt"]  # the new record's
    async with client_for(core) as http:
        assert (await sign_in(http, core, patient.ins, patient.password)).status_code == 401
        assert (await sign_in(http, core, patient.ins, new_password)).status_code == 200


async def test_a_status_check_is_not_activity_but_extend_and_pages_are(core):
    """GET /portal/api/session reports the idle expiry without pushing it back (the page's
    check at expiry must not keep the session alive); extending, and any other request, do."""
    patient = await active_patient(core)
    idle = core.settings.portal.idle_timeout_s
    async with signed_in(core, patient) as (http, token):
        handle = (await core.portal.session(http.cookies[SESSION])).handle

        async def last_request_a_minute_ago() -> None:
            past = datetime.now(UTC) - timedelta(seconds=60)
            async with core.sessions() as s, s.begin():
                await s.execute(
                    text("UPDATE portal_session SET last_seen_at = :p, idle_expires_at = :e WHERE id_hash = :h"),
                    {"p": past, "e": past + timedelta(seconds=idle), "h": handle},
                )

        async def expires_in() -> int:
            response = await http.get("/portal/api/session")
            assert response.status_code == 200
            return response.json()["expires_in"]

        await last_request_a_minute_ago()
        seen = [await expires_in() for _ in range(3)]
        assert all(idle - 62 <= n <= idle - 59 for n in seen), (idle, seen)  # did not move
        extended = await api(http, "/portal/api/session/extend", {}, token)
        assert extended.status_code == 200 and extended.json()["expires_in"] >= idle - 1
        assert await expires_in() >= idle - 1

        await last_request_a_minute_ago()
        assert await expires_in() <= idle - 59
        assert (await http.get("/portal/messages")).status_code == 200  # a page is activity
        assert await expires_in() >= idle - 1
        await last_request_a_minute_ago()
        await session_key_of(http)  # so is a page fetching its key
        assert await expires_in() >= idle - 1


async def test_a_right_password_does_not_reset_the_second_factor_counter(core, still_throttle_clock):
    """Knowing the password is exactly when TOTP must hold: signing in again with it gives no
    fresh code guesses, and turning TOTP off from a (stolen) session is throttled the same way."""
    core.settings.portal.account_free_failures = 3
    core.settings.portal.max_backoff_s = 60
    patient = await active_patient(core)
    async with signed_in(core, patient) as (http, token):
        await _enable_totp(http, token)
        await http.post("/portal/deconnexion", data={"csrf": token})
        statuses = []
        for _ in range(3):  # sign in with the password, then guess codes, again and again
            assert (await sign_in(http, core, patient.ins, patient.password)).json() == {"next": "totp"}
            token = csrf_of((await http.get("/portal/connexion")).text)
            for _ in range(2):
                statuses.append((await api(http, "/portal/api/totp", {"code": "000000"}, token)).status_code)
        assert statuses[:4] == [401] * 4 and 429 in statuses, statuses

    other = await active_patient(core)
    async with signed_in(core, other) as (http, token):
        await _enable_totp(http, token)
        token = csrf_of((await http.get("/portal/parametres")).text)
        where = []
        for _ in range(6):
            off = await http.post("/portal/parametres/totp/desactiver", data={"csrf": token, "code": "000000"})
            where.append(off.headers["location"])
        assert where[0] == "/portal/parametres?alerte=totp-code"
        assert where[-1] == "/portal/parametres?alerte=trop-tot", where
        assert "Trop de codes essayés" in (await http.get(where[-1])).text


async def test_a_known_browser_is_not_locked_out_by_guessers_elsewhere(core):
    """OWASP's device cookies: once the account-wide allowance is spent by guessers on other
    networks, a new browser waits, but the one the patient already signed in with does not."""
    core.settings.portal.account_wide_free_failures = 2
    core.settings.portal.max_backoff_s = 60
    patient = await active_patient(core)
    async with client_for(core) as mine:
        assert (await sign_in(mine, core, patient.ins, patient.password)).status_code == 200
        device = mine.cookies["__Host-mss-device"]
        assert device.startswith(patient.ins + ".") and patient.password not in device
        await mine.post("/portal/deconnexion", data={"csrf": csrf_of((await mine.get("/portal/messages")).text)})
        for n in range(4):  # guessers, each on a network of its own
            async with client_for(core, address=f"198.51.{n}.7") as guesser:
                token = csrf_of((await guesser.get("/portal/connexion")).text)
                await api(guesser, "/portal/api/login", {"login": patient.ins, "auth_key": b64(b"\1" * 32)}, token)
        # The back-off starts at 1 s and the sign-ins below take about as long (the reference
        # client derives the key): hold the account-wide wait for a minute, as a guesser who
        # kept at it would, so the outcome does not depend on timing.
        async with core.sessions() as s, s.begin():
            held = await s.execute(
                text("UPDATE portal_throttle SET blocked_until = :until WHERE key = :key"),
                {"until": datetime.now(UTC) + timedelta(seconds=60), "key": f"account:{patient.ins}"},
            )
            assert held.rowcount == 1
        async with client_for(core) as stranger:
            assert (await sign_in(stranger, core, patient.ins, patient.password)).status_code == 429
        assert (await sign_in(mine, core, patient.ins, patient.password)).status_code == 200
        # A forged or foreign device cookie is worth nothing.
        async with client_for(core) as forger:
            forger.cookies.set("__Host-mss-device", device[:-1] + ("0" if device[-1] != "0" else "1"))
            assert (await sign_in(forger, core, patient.ins, patient.password)).status_code == 429
