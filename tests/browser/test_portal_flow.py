"""The patient's whole journey in a real browser, on SQLite and PostgreSQL: a professional
writes to a pending patient over SMTP; the patient activates the space, reads the message
(decrypted by the page), answers; the professional reads the answer over IMAP and opens it
with `openssl cms`, then ends the exchange with [FIN]; the patient blocks the professional
(whose next message is refused at RCPT) and closes the space (mail is then refused).

All along, every response the browser received is kept, body included: none contains the
message's canary, while the page showed it (zero access, observed from the browser).
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pytest
from playwright.sync_api import expect

from .conftest import (
    NEW_PASSWORD,
    SESSION_KEY_JS,
    STORED_KEYS_JS,
    Browsing,
    LivePortal,
    ResponseRecorder,
    assert_stored_blob_only,
    live_portal,
    secret_forms,
)

CHANGED_PASSWORD = "agrafe pile correcte cheval 43"


@pytest.fixture(scope="module")
def flow_portal(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePortal]:
    """A live portal per backend (SQLite always, PostgreSQL with MSS_TEST_DATABASE_URL)."""
    with live_portal(tmp_path_factory.mktemp(f"flow-{backend}"), backend) as live:
        yield live


def shown_text(page: Any) -> str:
    """What the page shows: its own text and that of every frame (the message iframe)."""
    texts = [page.locator("body").inner_text()]
    for frame in page.frames[1:]:
        try:
            texts.append(frame.locator("body").inner_text(timeout=2000))
        except Exception as err:  # noqa: BLE001 - a frame without a body shows nothing
            texts.append(f"<{err.__class__.__name__}>")
    return "\n".join(texts)


def wait_shown(page: Any, needle: str, timeout: float = 30) -> str:
    """Wait until `needle` is displayed (in the page or one of its frames); the text."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = shown_text(page)
        if needle in text:
            return text
        page.wait_for_timeout(250)
    raise AssertionError(f"{needle!r} never shown; the page showed:\n{text[:3000]}")


def find_answer(live: LivePortal, entry: dict, needle: str, timeout: float = 30) -> tuple[bytes, bytes]:
    """The (served, decrypted) message of the professional's INBOX whose clear text has
    `needle`, read over IMAP and opened with `openssl cms -decrypt` and their own key."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for served in live.imap_messages(entry):
            assert needle.encode() not in served, "the answer is served in clear over IMAP"
            try:
                inner = live.decrypt(entry, served)
            except subprocess.CalledProcessError:
                continue
            if needle.encode() in inner:
                return served, inner
        time.sleep(0.5)
    raise AssertionError(f"no message with {needle!r} in {entry['address']}'s INBOX")


@pytest.mark.browser
def test_pending_patient_activates_reads_answers_blocks_and_closes_with_zero_access(
    flow_portal: LivePortal, browse: Any
) -> None:
    live = flow_portal
    claire, paul = live.professional(0), live.professional(1)
    patient = live.pending
    canary = f"CANARY-{uuid.uuid4().hex}"
    answer_canary = f"REPONSE-{uuid.uuid4().hex}"
    b: Browsing = browse(live)
    page = b.page
    received = ResponseRecorder(b.context, page)

    # 1. A professional writes first, to the space still pending (STARTTLS, client certificate).
    msgid = live.send(
        claire, [patient["address"]], f"Résultats {canary}", f"Bonjour,\nvoici votre compte rendu {canary}.\n"
    )

    # 2. Activation: the code unwraps the key in the page, the new password re-wraps it.
    b.goto("/portal/activation")
    b.wait_page("activation")
    page.get_by_label("Identifiant").fill(patient["address"])
    page.get_by_label("Code d'activation").fill(patient["activation_code"])
    page.get_by_label("Nouveau mot de passe", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("Confirmer le nouveau mot de passe").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Activer mon espace").click()
    page.wait_for_url("**/portal/messages*")
    b.wait_page("messages")

    # 3. The inbox: one conversation, unread (bold, "non lu" for screen readers, in the title).
    conversations = page.get_by_role("list", name="Conversations")
    expect(conversations).to_be_visible()
    rows = conversations.locator("li.conversation")
    expect(rows).to_have_count(1)
    row = rows.first
    expect(row).to_have_class(re.compile(r"\bnon-lu\b"))
    assert row.locator("strong").count() >= 1, "an unread conversation is shown in bold"
    expect(row.locator(".sr-only")).to_contain_text("non lu")
    assert "(1 non lu" in page.title(), page.title()
    expect(row.locator("[data-sujet]")).to_contain_text(canary)  # decrypted in the page
    b.shot("messagerie-dechiffree")

    # 4. The conversation shows the message, decrypted in the page.
    row.locator("a[href*='/portal/conversations/']").first.click()
    page.wait_for_url("**/portal/conversations/*")
    b.wait_page("conversation")
    conversation = urlparse(page.url).path
    expect(page.locator("h1[data-sujet]")).to_contain_text(canary)
    wait_shown(page, f"voici votre compte rendu {canary}")
    b.shot("conversation-dechiffree")

    # 5. The answer, confirmed in the role=status region.
    page.get_by_role("button", name="Répondre").click()
    page.get_by_label("Votre réponse").fill(f"Merci docteur, bien reçu. {answer_canary}")
    page.get_by_role("button", name="Envoyer").click()
    expect(page.locator("#statut[role='status']")).to_have_text(re.compile(r"\S"))
    assert b.alert() == "", b.alert()
    b.shot("reponse-envoyee")

    # 6. The professional reads it over IMAP; only their key opens it; it is in the thread.
    _served, inner = find_answer(live, claire, answer_canary)
    head = inner.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    assert patient["address"].encode() in head, head
    assert msgid.encode() in head, "the answer refers to the professional's message"

    # 7. [FIN] (the whole subject, in the thread) closes the exchange: banner, no answer.
    live.send(
        claire,
        [patient["address"]],
        "[FIN]",
        "Je mets fin à nos échanges.\n",
        extra=f"In-Reply-To: {msgid}\r\nReferences: {msgid}\r\n",
    )
    b.goto(conversation)
    b.wait_page("conversation")
    banner = page.locator("p.bandeau")
    expect(banner).to_contain_text("a mis fin à vos échanges.")
    expect(banner).to_contain_text(claire["name"].split()[0])
    expect(page.get_by_role("button", name="Répondre")).to_have_count(0)
    wait_shown(page, answer_canary)  # the patient's own Sent copy, decrypted in the page too
    b.goto("/portal/messages")
    b.wait_page("messages")
    expect(page.locator("li.conversation .clos")).to_have_text("Échange clos")
    b.goto(conversation)
    b.wait_page("conversation")

    # 8. Blocking: the professional's next message is refused at RCPT, neutrally (5.7.1).
    with page.expect_navigation():
        page.get_by_role("button", name="Bloquer ce professionnel").click()
    b.shot("bloque")
    expect(page.locator("#statut")).to_have_text(re.compile(r"\S"))
    code, text = live.rcpt(claire, patient["address"])
    assert code == 550 and text.startswith(b"5.7.1"), (code, text)
    assert live.rcpt(paul, patient["address"])[0] == 250, "only the blocked professional is refused"

    # 9. A password change on Paramètres: its own KDF parameters (no anonymous prelogin, so
    # no 403 and no console error), the key checked against the certificate, re-wrapped; the
    # session's copy is made again and still opens the mail.
    b.goto("/portal/parametres")
    b.wait_page("parametres")
    console_before, posts_before = len(b.console), len(b.posts)
    with page.expect_response(lambda r: r.url.endswith("/portal/api/password/params")) as params_answer:
        page.get_by_label("Mot de passe actuel").fill(NEW_PASSWORD)
        page.get_by_label("Nouveau mot de passe", exact=True).fill(CHANGED_PASSWORD)
        page.get_by_label("Confirmer le nouveau mot de passe").fill(CHANGED_PASSWORD)
        page.get_by_role("button", name="Changer le mot de passe").click()
    assert params_answer.value.status == 200
    expect(page.locator("#statut")).to_have_text("Votre mot de passe a été changé.", timeout=60_000)
    assert b.alert() == "", b.alert()
    b.shot("mot-de-passe-change")
    sent = [urlparse(url).path for _, url, _ in b.posts[posts_before:]]
    assert sent == ["/portal/api/password/record", "/portal/api/password"], sent
    errors = [c for c in b.console[console_before:] if c.startswith("error")]
    assert not errors, f"console errors during the password change: {errors}"
    assert_stored_blob_only(page.evaluate(STORED_KEYS_JS))
    b.goto(conversation)
    b.wait_page("conversation")
    wait_shown(page, f"voici votre compte rendu {canary}")
    # Signing out leaves nothing that opens; the new password signs in.
    b.logout()
    assert page.evaluate(STORED_KEYS_JS) == {}
    assert page.evaluate(SESSION_KEY_JS) == {"status": 401, "key": None}
    b.login(patient["address"], CHANGED_PASSWORD)
    assert_stored_blob_only(page.evaluate(STORED_KEYS_JS))

    # 10. Closing the space (Paramètres → clôture, confirmed): mail is refused (5.2.1).
    b.goto("/portal/parametres")
    b.wait_page("parametres")
    page.locator("a[href='/portal/cloture']").first.click()
    b.wait_page("cloture")
    confirm_closing(page)
    b.wait_page("cloturee")
    code, text = live.rcpt(paul, patient["address"])
    assert code == 550 and text.startswith(b"5.2.1"), (code, text)
    assert b.goto("/portal/messages").url.endswith("/portal/connexion"), "the session ended with the space"

    # 11. Zero access: the browser showed the canary, yet no response it received had it.
    # (The recorder saw the pages and the ciphertexts, bodies included: it could have seen it.)
    kinds = {r.resource_type for r in received.received}
    assert {"document", "script"} <= kinds and kinds & {"fetch", "xhr"}, kinds
    assert any(r.resource_type == "document" and b"data-page" in (r.body or b"") for r in received.received)
    ciphertexts = [r for r in received.received if "/portal/api/messages/" in r.url and r.status == 200]
    assert ciphertexts and all(len(r.body or b"") > 500 for r in ciphertexts), [(r.url, r.error) for r in ciphertexts]
    leaks = [
        (r.url, r.resource_type, form)
        for r in received.received
        if r.body
        for secret in (canary, answer_canary)
        for form in secret_forms(secret)
        if form in r.body
    ]
    assert not leaks, leaks
    unread = [(r.url, r.error) for r in received.received if r.body is None]
    assert not unread, f"bodies the test could not check: {unread}"
    assert not b.page_errors, b.page_errors


def confirm_closing(page: Any) -> None:
    """Confirm on the clôture page ("confirmation" = "oui": a checkbox or a radio button to
    choose, or a field to fill), then press its submit button."""
    form = page.locator("form[action='/portal/cloture']")
    expect(form).to_have_count(1)
    choice = form.locator(
        "input[name='confirmation'][type='checkbox'], input[name='confirmation'][type='radio'][value='oui']"
    )
    if choice.count():
        choice.first.check()
    else:
        typed = form.locator("input[name='confirmation']:not([type='hidden'])")
        if typed.count():
            typed.first.fill("oui")
    with page.expect_navigation():
        form.locator("button[type='submit'], button:not([type]), input[type='submit']").first.click()
