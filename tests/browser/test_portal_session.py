"""The signed-in session in a real browser (SQLite), with a short idle timeout: the page
warns before the session ends and lets the patient extend it from the keyboard (RGAA 13.1);
once it ends, the page goes back to sign-in and the key leaves IndexedDB. While signed in,
IndexedDB holds no CryptoKey, only the key wrapped under the session key K_s that the server
keeps in the session's row (docs/portal.md 2.3); once the session has ended (expiry, logout)
the server no longer has K_s, so a blob left behind opens with nothing."""

from __future__ import annotations

import base64
import re
import time
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from .conftest import SESSION_KEY_JS, STORED_KEYS_JS, Browsing, LivePortal, assert_stored_blob_only

#: Sessions end after 16 s without a request; the page warns 8 s before.
PORTAL_SETTINGS = {"idle_timeout_s": 16, "warn_before_s": 8, "absolute_timeout_s": 120}


@pytest.mark.browser
def test_the_page_warns_before_the_session_ends_then_forgets_the_key(portal: LivePortal, browse: Any) -> None:
    live = portal
    if not live.portal_configured:
        pytest.fail(f"this tree's [portal] settings lack some of {sorted(PORTAL_SETTINGS)}")
    b: Browsing = browse(live)
    page = b.page
    b.login(live.active["ins"], live.active["password"])
    assert_stored_blob_only(page.evaluate(STORED_KEYS_JS))
    answer = page.evaluate(SESSION_KEY_JS)
    assert answer["status"] == 200, answer
    session_key = base64.b64decode(answer["key"])
    assert len(session_key) == 32 and session_key in live.session_keys()
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
    assert page.evaluate(STORED_KEYS_JS) == {}, "the wrapped key outlived the session"
    # Had anything been left in IndexedDB, nothing would open it: K_s is gone from the server.
    assert page.evaluate(SESSION_KEY_JS) == {"status": 401, "key": None}
    assert session_key not in live.session_keys()
    assert b.goto("/portal/messages").url.endswith("/portal/connexion"), "the server session is gone"


PUT_BLOB_JS = """(blob) => new Promise((resolve, reject) => {
  const req = indexedDB.open('mss-portal', 1);
  req.onupgradeneeded = () => req.result.createObjectStore('keys');
  req.onsuccess = () => {
    const db = req.result;
    const tx = db.transaction('keys', 'readwrite');
    tx.objectStore('keys').put({iv: new Uint8Array(blob.iv), wrapped: new Uint8Array(blob.wrapped)}, 'patient');
    tx.oncomplete = () => { db.close(); resolve(true); };
    tx.onerror = () => reject(tx.error);
  };
  req.onerror = () => reject(req.error);
})"""

GET_BLOB_JS = """() => new Promise((resolve, reject) => {
  const req = indexedDB.open('mss-portal', 1);
  req.onsuccess = () => {
    const db = req.result;
    const get = db.transaction('keys').objectStore('keys').get('patient');
    get.onsuccess = () => { db.close(); const v = get.result;
      resolve(v ? {iv: Array.from(v.iv), wrapped: Array.from(v.wrapped)} : null); };
    get.onerror = () => reject(get.error);
  };
  req.onerror = () => reject(req.error);
})"""

#: Try to open a blob as the pages do: K_s from the server, then unwrapKey; what happened.
OPEN_BLOB_JS = """async (blob) => {
  const r = await fetch('/portal/api/session/key', {credentials: 'same-origin', cache: 'no-store'});
  if (!r.ok) return {status: r.status, opened: false};
  const raw = Uint8Array.from(atob((await r.json()).key), (c) => c.charCodeAt(0));
  const k = await crypto.subtle.importKey('raw', raw, {name: 'AES-GCM'}, false, ['unwrapKey']);
  try {
    const key = await crypto.subtle.unwrapKey('pkcs8', new Uint8Array(blob.wrapped), k,
      {name: 'AES-GCM', iv: new Uint8Array(blob.iv), additionalData: new TextEncoder().encode('mss portal session key v1')},
      {name: 'RSA-OAEP', hash: 'SHA-256'}, false, ['decrypt']);
    return {status: r.status, opened: true, extractable: key.extractable, type: key.type};
  } catch (e) {
    return {status: r.status, opened: false};
  }
}"""


@pytest.mark.browser
def test_after_logout_a_blob_left_in_indexeddb_opens_with_nothing(portal: LivePortal, browse: Any) -> None:
    live = portal
    b: Browsing = browse(live)
    page = b.page
    b.login(live.active["ins"], live.active["password"])
    assert_stored_blob_only(page.evaluate(STORED_KEYS_JS))
    blob = page.evaluate(GET_BLOB_JS)
    # While signed in, the page opens it (non-extractable), as every page does.
    assert page.evaluate(OPEN_BLOB_JS, blob) == {"status": 200, "opened": True, "extractable": False, "type": "private"}
    session_key = base64.b64decode(page.evaluate(SESSION_KEY_JS)["key"])
    assert session_key in live.session_keys()

    b.logout()
    assert page.evaluate(STORED_KEYS_JS) == {}, "logout clears IndexedDB"
    # Suppose the blob had stayed (a crash before the clearing, a copy of the profile): no K_s.
    page.evaluate(PUT_BLOB_JS, blob)
    assert page.evaluate(OPEN_BLOB_JS, blob) == {"status": 401, "opened": False}
    assert session_key not in live.session_keys(), "K_s outlived the session on the server"
    # A new session has a new K_s, which does not open the old blob either.
    b.login(live.active["ins"], live.active["password"])
    assert page.evaluate(OPEN_BLOB_JS, blob) == {"status": 200, "opened": False}
    assert page.evaluate(GET_BLOB_JS) != blob
    b.logout()
