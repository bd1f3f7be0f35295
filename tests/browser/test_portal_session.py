"""The signed-in session in a real browser (SQLite), with a short idle timeout: the page
warns before the session ends and lets the patient extend it from the keyboard (RGAA 13.1);
once it ends, the page goes back to sign-in and the private key leaves IndexedDB; while
signed in, that key is a non-extractable CryptoKey (docs/portal.md 2.3)."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from .conftest import Browsing, LivePortal

#: Sessions end after 16 s without a request; the page warns 8 s before.
PORTAL_SETTINGS = {"idle_timeout_s": 16, "warn_before_s": 8, "absolute_timeout_s": 120}

STORED_KEY_JS = """() => new Promise((resolve) => {
  const req = indexedDB.open('mss-portal', 1);
  req.onupgradeneeded = () => req.result.createObjectStore('keys');
  req.onerror = () => resolve({error: String(req.error)});
  req.onsuccess = () => {
    const db = req.result;
    const get = db.transaction('keys').objectStore('keys').get('patient');
    get.onerror = () => { db.close(); resolve({error: String(get.error)}); };
    get.onsuccess = () => {
      const k = get.result;
      db.close();
      resolve(k ? {type: Object.prototype.toString.call(k), extractable: k.extractable,
                   keyType: k.type, algorithm: k.algorithm && k.algorithm.name} : null);
    };
  };
})"""


@pytest.mark.browser
def test_the_page_warns_before_the_session_ends_then_forgets_the_key(portal: LivePortal, browse: Any) -> None:
    live = portal
    if not live.portal_configured:
        pytest.fail(f"this tree's [portal] settings lack some of {sorted(PORTAL_SETTINGS)}")
    b: Browsing = browse(live)
    page = b.page
    b.login(live.active["ins"], live.active["password"])
    stored = page.evaluate(STORED_KEY_JS)
    assert stored and stored["type"] == "[object CryptoKey]", stored
    assert stored["extractable"] is False and stored["keyType"] == "private", stored
    expires_in = int(page.get_attribute("body", "data-session-expires-in") or 0)
    warn = int(page.get_attribute("body", "data-session-warn") or 0)
    assert 0 < warn < expires_in <= 16, (warn, expires_in)

    # The warning opens before the end, with the focus on "Rester connecté".
    dialog = page.locator("dialog#expiration")
    expect(dialog).to_be_hidden()
    expect(dialog).to_be_visible(timeout=(expires_in - warn + 5) * 1000)
    expect(dialog).to_contain_text("Votre session va expirer")
    b.shot("avertissement-expiration")
    assert page.evaluate("document.activeElement && document.activeElement.id") == "expiration-prolonger"
    with page.expect_response(lambda r: r.url.endswith("/portal/api/session/extend")) as extended:
        page.keyboard.press("Enter")
    assert extended.value.status == 200, extended.value.status
    expect(dialog).to_be_hidden()
    expect(page.locator("#statut")).to_have_text(re.compile(r"prolong", re.I))
    extended_at = time.monotonic()

    # Left alone, the session ends: back to sign-in, and the key is gone from IndexedDB.
    checks: list[tuple[float, int, str]] = []
    page.on(
        "response",
        lambda r: (
            checks.append((round(time.monotonic() - extended_at, 1), r.status, r.text()))
            if r.url.endswith("/portal/api/session")
            else None
        ),
    )
    try:
        page.wait_for_url("**/portal/connexion*", timeout=(expires_in + 15) * 1000)
    except PlaywrightError as err:
        b.shot("toujours-connecte")
        raise AssertionError(
            f"still signed in {expires_in + 15} s after the extension, idle; the page's checks of "
            f"GET /portal/api/session (s after the extension, status, body): {checks}"
        ) from err
    assert time.monotonic() - extended_at >= expires_in - 1, "the page left before the session's end"
    b.wait_page("connexion")
    assert page.evaluate(STORED_KEY_JS) is None, "the private key outlived the session"
    assert b.goto("/portal/messages").url.endswith("/portal/connexion"), "the server session is gone"
