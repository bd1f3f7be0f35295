"""Signing in, in a real browser (SQLite): two-step verification turned on in Paramètres
(the secret read on the page, the code computed with pyotp), the recovery codes (each works
once), and login throttling (repeated wrong passwords end in a 429 and an alert telling when
to retry; the right password is refused until the wait is over).

The module's server starts with small [portal] throttling settings (when this tree has
PortalSettings), so that the wait is seconds, not minutes. Throttling runs last: it throttles
this client's address too.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest
from playwright.sync_api import expect

from .conftest import Browsing, LivePortal

#: [portal] settings for this module's server (only the keys this tree knows are written).
PORTAL_SETTINGS = {"account_free_failures": 2, "max_backoff_s": 20}
BASE32_GROUPS = re.compile(r"\b((?:[A-Z2-7]{4}[ \u00a0-]?){4,}[A-Z2-7]*)\b")


def totp_secret(page: Any) -> str:
    """The TOTP secret the page shows: its `code.secret`, else from an otpauth:// key URI,
    else the base32 text (possibly in groups of four)."""
    shown = page.locator("main code.secret")
    if shown.count():
        return re.sub(r"[\s-]", "", shown.first.inner_text())
    html = page.content()
    uri = re.search(r"otpauth://[^\"'<>\s]+", html)
    if uri:
        secret = parse_qs(urlparse(uri.group(0).replace("&amp;", "&")).query).get("secret", [""])[0]
        if secret:
            return secret
    found = BASE32_GROUPS.search(page.locator("main").inner_text())
    assert found, "no TOTP secret shown on the page"
    return re.sub(r"[ \u00a0-]", "", found.group(1))


def recovery_codes(page: Any) -> list[str]:
    """The recovery codes the page shows once (a list of codes in the main region)."""
    items = page.locator(
        "main [data-codes-secours] li, main #codes-secours li, main .codes-secours li, main ul.codes li"
    )
    if items.count():
        codes = [t.strip() for t in items.all_inner_texts() if t.strip()]
    else:
        codes = re.findall(r"\b[A-Za-z0-9]{4,}(?:-[A-Za-z0-9]{4,})+\b", page.locator("main").inner_text())
    assert len(codes) >= 5, f"recovery codes not found: {codes}"
    return codes


def password_step(b: Browsing, login: str, password: str) -> None:
    b.goto("/portal/connexion")
    b.wait_page("connexion")
    b.page.get_by_label("Identifiant").fill(login)
    b.page.get_by_label("Mot de passe", exact=True).fill(password)
    b.page.get_by_role("button", name="Se connecter").click()


def code_step(b: Browsing, code: str) -> None:
    page = b.page
    expect(page.locator("#form-totp")).to_be_visible()
    page.get_by_label("Code de vérification").fill(code)
    page.get_by_role("button", name="Valider").click()


@pytest.mark.browser
def test_two_step_verification_with_totp_and_single_use_recovery_codes(portal: LivePortal, browse: Any) -> None:
    live = portal
    patient = live.active
    b: Browsing = browse(live)
    page = b.page
    b.login(patient["ins"], patient["password"])

    # Paramètres: turn it on, read the secret, confirm with a code: recovery codes, once.
    b.goto("/portal/parametres")
    b.wait_page("parametres")
    with page.expect_navigation():
        page.locator(
            "form[action='/portal/parametres/totp/activer'] [type='submit'], "
            "form[action='/portal/parametres/totp/activer'] button"
        ).first.click()
    b.wait_page("totp")
    secret = totp_secret(page)
    totp = pyotp.TOTP(secret)
    confirm = page.locator("form[action='/portal/parametres/totp/confirmer']")
    expect(confirm).to_be_visible()
    confirm.locator("input[name='code']").fill(totp.now())
    with page.expect_navigation():
        confirm.locator("[type='submit'], button").first.click()
    b.wait_page("totp")
    assert b.alert() == "", b.alert()
    codes = recovery_codes(page)
    b.shot("codes-de-secours")
    b.logout()

    # The password alone is not enough any more: the second step asks for the code.
    password_step(b, patient["ins"], patient["password"])
    expect(page.locator("#form-totp")).to_be_visible()
    b.shot("etape-code")
    assert "/portal/connexion" in page.url
    assert b.goto("/portal/messages").url.endswith("/portal/connexion"), "a pending session reaches nothing"
    password_step(b, patient["ins"], patient["password"])
    code_step(b, "000000" if totp.now() != "000000" else "111111")
    expect(page.locator("#alerte")).to_have_text(re.compile(r"\S"))
    assert "/portal/connexion" in page.url
    # The next step's code (the one used to confirm may not serve twice; one step is allowed).
    password_step(b, patient["ins"], patient["password"])
    code_step(b, totp.at(time.time() + 30))
    page.wait_for_url("**/portal/messages*")
    b.wait_page("messages")
    b.logout()

    # A recovery code works once.
    password_step(b, patient["ins"], patient["password"])
    code_step(b, codes[0])
    page.wait_for_url("**/portal/messages*")
    b.wait_page("messages")
    b.logout()
    password_step(b, patient["ins"], patient["password"])
    code_step(b, codes[0])
    expect(page.locator("#alerte")).to_have_text(re.compile(r"\S"))
    page.wait_for_timeout(500)
    assert "/portal/connexion" in page.url, "a spent recovery code opened a session"
    b.shot("code-de-secours-deja-utilise")


def attempt(b: Browsing, login: str, password: str) -> tuple[int, dict[str, Any], dict[str, str], str]:
    """One sign-in attempt through the page; the status, JSON, headers and URL of the answer
    that decided it (the login request, or an earlier refused API request)."""
    page = b.page

    def decisive(r: Any) -> bool:
        return "/portal/api/" in r.url and (r.url.endswith("/portal/api/login") or r.status >= 400)

    with page.expect_response(decisive) as info:
        password_step(b, login, password)
    r = info.value
    try:
        body = r.json()
    except Exception:  # noqa: BLE001 - a refusal without JSON is reported by the assertion
        body = {}
    return r.status, body, r.headers, r.url.rpartition("/portal/")[2]


@pytest.mark.browser
def test_repeated_wrong_passwords_are_throttled_with_a_retry_message(portal: LivePortal, browse: Any) -> None:
    live = portal
    patient = live.active
    b: Browsing = browse(live)
    page = b.page
    statuses: list[int] = []
    seen: list[tuple[str, int, object]] = []
    # Until refused with a wait long enough to outlast the next attempt (the page spends
    # about a second deriving the key): the back-off doubles with each counted failure.
    for _ in range(48):
        status, body, headers, where = attempt(b, patient["ins"], "pas le bon mot de passe")
        statuses.append(status)
        seen.append((where, status, body.get("retry_after")))
        expect(page.locator("#alerte")).to_have_text(re.compile(r"\S"))
        if status == 429 and body.get("retry_after", 0) >= 6:
            break
    assert 429 in statuses, f"never throttled: {seen}"
    assert statuses[-1] == 429, f"never throttled for long enough: {seen}"
    assert statuses[0] in (400, 401, 403), seen
    assert body.get("retry_after", 0) >= 6 and body.get("error"), body
    assert int(headers.get("retry-after", "0")) == body["retry_after"], (headers.get("retry-after"), body)
    alert = b.alert()
    assert re.search(r"(réessay|attend|patient)\D*\d+", alert, re.I), alert
    b.shot("trop-d-essais")

    # The right password now is refused as well, until the wait is over.
    status, body, _, _ = attempt(b, patient["ins"], patient["password"])
    page.wait_for_timeout(300)
    assert status == 429, (status, body)
    assert "/portal/connexion" in page.url
    wait = float(body.get("retry_after", 0))
    if not live.portal_configured or wait > 30:
        print(f"only the refusal is checked: the wait ({wait}s, [portal] set: {live.portal_configured}) is too long")
        return
    time.sleep(wait + 0.5)
    status, body, _, _ = attempt(b, patient["ins"], patient["password"])
    # Accepted: the inbox, or the second step when TOTP is on (the test above turned it on).
    assert status == 200, (status, body)
    page.wait_for_function(
        "() => location.pathname.startsWith('/portal/messages') || !document.querySelector('#form-totp').hidden"
    )
    b.shot("apres-l-attente")
