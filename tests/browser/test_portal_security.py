"""The portal's defences seen from a real browser (SQLite): hostile HTML mail is sanitised
and isolated (no script runs, no dialog opens, a remote origin receives no request at all),
attachments are listed as text and saved from blob: URLs under a harmless name (never served
in clear), state-changing requests without the CSRF token or from a foreign origin are
refused (403), and another patient's conversation or message is "not found" (404)."""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from .conftest import Browsing, LivePortal, RemoteOrigin, ResponseRecorder, secret_forms


def xss_corpus(origin: RemoteOrigin, marker: str) -> str:
    """An HTML body with one of each trick; every script would set `window.__xss` (and the
    parent's, and the title), every remote reference points at `origin`."""
    js = f"window.__xss='{marker}';try{{parent.__xss='{marker}'}}catch(e){{}};document.title='XSS'"
    return f"""<!DOCTYPE html>
<html><head>
<base href="{origin.url("/base/")}">
<meta http-equiv="refresh" content="0;url={origin.url("/refresh")}">
<link rel="stylesheet" href="{origin.url("/link.css")}">
<style>
@import url("{origin.url("/import.css")}");
body {{ background: url("{origin.url("/style-block.png")}"); }}
@im@import;port "{origin.url("/rebuilt-import.css")}";
@import "{origin.url("/import-string.css")}";
p {{ background: \\75 rl("{origin.url("/escaped-url.png")}"); }}
div {{ background-image: image-set("{origin.url("/image-set.png")}" 1x); }}
</style>
<script>{js};alert('script')</script>
</head><body>
<p id="bonjour">Bonjour {marker}, voici le message.</p>
<img src="x" onerror="{js};alert('onerror')">
<a id="lien-js" href="javascript:{js};alert('href')">un lien</a>
<a id="lien-https" href="https://lien.invalid/page">un lien web</a>
<a id="lien-js-blank" href="javascript:{js};alert('blank')" target="_blank">un lien vers un onglet</a>
<svg xmlns="http://www.w3.org/2000/svg" onload="{js};alert('svg')"><circle r="4"/></svg>
<form action="{origin.url("/form")}" method="post"><input name="q" value="1"><button id="envoyer-form">Valider</button></form>
<div style="background-image: url('{origin.url("/style-attr.png")}')">fond</div>
<img src="{origin.url("/pixel.png")}" alt="pixel">
<img src="//127.0.0.1:{origin.port}/protocol-relative.png" alt="">
<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" srcset="{origin.url("/srcset.png")} 2x" alt="">
<picture><source srcset="{origin.url("/picture.png")}"><img src="x" alt=""></picture>
<svg><image href="{origin.url("/svg-image.png")}"/><use xlink:href="{origin.url("/svg-use.svg#x")}"/></svg>
<table background="{origin.url("/table-background.png")}"><tr><td>t</td></tr></table>
<iframe src="{origin.url("/frame.html")}"></iframe>
<object data="{origin.url("/object")}"></object>
<video poster="{origin.url("/poster.png")}"></video>
<body onload="{js}">
</body></html>"""


@pytest.mark.browser
def test_hostile_html_mail_runs_nothing_and_fetches_nothing(
    portal: LivePortal, browse: Any, remote_origin: RemoteOrigin
) -> None:
    live = portal
    marker = f"XSS-{uuid.uuid4().hex[:12]}"
    patient = live.active
    live.send_html(
        live.professional(0),
        [patient["address"]],
        f"Courrier {marker}",
        f"Version texte {marker}\n",
        xss_corpus(remote_origin, marker),
    )
    # Controls: the remote origin answers what reaches it, the page's dialogs are caught.
    with urllib.request.urlopen(remote_origin.url("/controle"), timeout=5) as control:
        assert control.status == 200
    assert remote_origin.hits == ["GET /controle"]
    remote_origin.hits.clear()
    b: Browsing = browse(live)
    page = b.page
    page.evaluate("() => alert('controle')")
    assert b.dialogs == ["alert: controle"]
    b.dialogs.clear()
    b.login(patient["ins"], patient["password"])
    row = page.get_by_role("list", name="Conversations").locator("li.conversation").filter(has_text=marker)
    expect(row).to_have_count(1)
    row.locator("a[href*='/portal/conversations/']").first.click()
    b.wait_page("conversation")

    frame_el = page.locator("iframe[title='Contenu du message']")
    expect(frame_el).to_have_count(1)
    # The sandbox: exactly the two tokens that let links open in a new tab; never
    # allow-scripts, allow-same-origin, allow-forms, allow-top-navigation.
    tokens = (frame_el.get_attribute("sandbox") or "").split()
    assert sorted(tokens) == ["allow-popups", "allow-popups-to-escape-sandbox"], tokens
    assert frame_el.evaluate("f => [...f.sandbox].sort()") == ["allow-popups", "allow-popups-to-escape-sandbox"]
    assert frame_el.get_attribute("referrerpolicy") == "no-referrer"
    srcdoc = frame_el.get_attribute("srcdoc") or ""
    assert "default-src 'none'" in srcdoc and "Content-Security-Policy" in srcdoc, srcdoc[:400]
    # The benign text is rendered, the hostile parts are gone before rendering.
    expect(page.frame_locator("iframe[title='Contenu du message']").locator("body")).to_contain_text(
        f"Bonjour {marker}"
    )
    lowered = srcdoc.lower()
    for gone in ("<script", "onerror", "onload=", "javascript:", "refresh", f"127.0.0.1:{remote_origin.port}"):
        assert gone not in lowered, f"{gone!r} survived sanitising: {srcdoc[:2000]}"
    assert not re.search(r"<base[^>]*href", lowered), f"<base href> survived sanitising: {srcdoc[:2000]}"
    expect(page.locator("p.note-contenu")).to_have_text("Des contenus distants ont été bloqués.")
    b.shot("courrier-hostile")

    # An https link is kept, opens in a new tab, without opener or referrer.
    inner = page.frame_locator("iframe[title='Contenu du message']")
    link = inner.locator("#lien-https")
    expect(link).to_have_count(1)
    assert link.get_attribute("href") == "https://lien.invalid/page"
    assert link.get_attribute("target") == "_blank" and link.get_attribute("rel") == "noopener noreferrer"
    with b.context.expect_page(timeout=10_000) as opened:
        link.click()
    popup = opened.value
    assert popup.url.startswith("https://lien.invalid/") or popup.url in (
        "about:blank",
        "chrome-error://chromewebdata/",
    )
    popup.close()
    opened_pages: list[Any] = []
    b.context.on("page", lambda p: opened_pages.append(p))

    # Poke what is left: the javascript: links and the form inside the frame do nothing.
    for selector in ("#lien-js", "text=un lien", "#lien-js-blank", "#envoyer-form"):
        target = inner.locator(selector)
        if target.count():
            assert not (target.first.get_attribute("href") or "").lower().startswith("javascript"), selector
            target.first.click(timeout=3000, no_wait_after=True)
    page.wait_for_timeout(1500)  # any late fetch (refresh, lazy image) has had its chance
    assert opened_pages == [], [p.url for p in opened_pages]
    assert len(b.context.pages) == 1, [p.url for p in b.context.pages]

    assert page.evaluate("window.__xss") is None, "a script of the mail ran in the page"
    assert page.title() != "XSS"
    scripts = page.evaluate("Array.from(document.scripts, s => s.getAttribute('src') || s.textContent.slice(0, 80))")
    assert scripts == ["/portal/static/portal.js"], scripts
    assert b.dialogs == [], f"the mail opened dialogs: {b.dialogs}"
    assert remote_origin.hits == [], f"the remote origin was asked: {remote_origin.hits}"
    assert page.url.startswith(live.url("/portal/conversations/")), page.url  # no refresh, no form post
    expect(page.get_by_text(f"Courrier {marker}").first).to_be_visible()


def with_attachments(sender: str, to: str, subject: str, files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """A multipart/mixed message: a text part, then each (name, type, bytes) as a base64
    attachment; the message and its Message-ID."""
    from email.message import EmailMessage
    from email.utils import make_msgid

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Message-ID"] = msgid = make_msgid(domain=sender.rpartition("@")[2])
    msg.set_content("Veuillez trouver les documents ci-joints.\n")
    for name, ctype, data in files:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"), msgid


@pytest.mark.browser
def test_attachments_are_listed_as_text_and_saved_from_blob_urls(portal: LivePortal, browse: Any) -> None:
    live = portal
    patient = live.active
    marker = f"PJ-{uuid.uuid4().hex[:12]}"
    secret = f"PDFSECRET-{uuid.uuid4().hex}"
    pdf = f"%PDF-1.4\n% {secret}\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n".encode()
    hostile_name = "notes<b>gras</b>.html"
    hostile = f"<script>window.__xss='{marker}'</script>".encode()
    sender = live.professional(0)
    raw, _ = with_attachments(
        sender["address"],
        patient["address"],
        f"Documents {marker}",
        [("compte-rendu.pdf", "application/pdf", pdf), (hostile_name, "text/html", hostile)],
    )
    assert live.send_raw(sender, [patient["address"]], raw) == {}
    b: Browsing = browse(live, accept_downloads=True)
    page = b.page
    received = ResponseRecorder(b.context, page)
    b.login(patient["ins"], patient["password"])
    row = page.locator("li.conversation").filter(has_text=marker)
    expect(row).to_have_count(1)
    expect(row.locator("[data-pj]")).to_be_visible()  # unhidden by the page once decrypted
    row.locator("a[href*='/portal/conversations/']").first.click()
    b.wait_page("conversation")
    items = page.get_by_role("list", name="Pièces jointes").locator("li.piece-jointe")
    expect(items).to_have_count(2)
    b.shot("pieces-jointes")

    pdf_item = items.filter(has_text="compte-rendu.pdf")
    expect(pdf_item).to_contain_text("application/pdf")
    expect(pdf_item.get_by_role("button", name="Aperçu")).to_have_count(1)
    link = pdf_item.get_by_role("link", name="Télécharger")
    assert (link.get_attribute("href") or "").startswith("blob:"), link.get_attribute("href")
    with page.expect_download() as info:
        link.click()
    download = info.value
    assert download.suggested_filename == "compte-rendu.pdf"
    assert Path(download.path()).read_bytes() == pdf

    # The hostile name is text, not markup; it is saved under a name without < > or /; no preview.
    odd = items.filter(has_text="gras")
    expect(odd.locator(".nom-fichier")).to_have_text(hostile_name)
    assert odd.locator("b").count() == 0
    expect(odd.get_by_role("button", name="Aperçu")).to_have_count(0)
    with page.expect_download() as info:
        odd.get_by_role("link", name="Télécharger").click()
    saved = info.value.suggested_filename
    assert not set(saved) & set("<>/\\"), saved
    assert page.evaluate("window.__xss") is None

    # The server handed out ciphertext only: the PDF's secret is in no response.
    leaks = [r.url for r in received.received if r.body and any(f in r.body for f in secret_forms(secret))]
    assert not leaks, leaks
    assert base64.b64encode(pdf) not in b"".join(r.body or b"" for r in received.received)


def _fetch(page: Any, path: str, *, headers: dict[str, str] | None = None, body: str = "{}") -> dict[str, Any]:
    """A POST with fetch() from the page itself (same origin, its cookies)."""
    return page.evaluate(
        """async ([path, headers, body]) => {
            const r = await fetch(path, {method: 'POST', headers, body, credentials: 'same-origin'});
            return {status: r.status, text: await r.text()};
        }""",
        [path, headers or {"Content-Type": "application/json"}, body],
    )


@pytest.mark.browser
def test_state_changing_requests_need_the_token_and_this_origin(portal: LivePortal, browse: Any) -> None:
    live = portal
    patient = live.active
    marker = f"CSRF-{uuid.uuid4().hex[:12]}"
    live.send(live.professional(1), [patient["address"]], f"Question {marker}", "Pouvez-vous répondre ?\n")
    b: Browsing = browse(live)
    page = b.page
    b.login(patient["ins"], patient["password"])
    token = b.csrf()
    assert len(token) >= 16, token
    row = page.locator("li.conversation").filter(has_text=marker)
    expect(row).to_have_count(1)
    href = row.locator("a[href*='/portal/conversations/']").first.get_attribute("href") or ""
    conv = int(re.search(r"/portal/conversations/(\d+)", href).group(1))
    answer = f"/portal/api/conversations/{conv}/answer"
    payload = json.dumps({"subject": "Re: Question", "text": f"forgé {marker}"})
    json_headers = {"Content-Type": "application/json"}

    # From the page, without the token: 403, for the JSON API and for a plain form.
    no_token = _fetch(page, answer, headers=json_headers, body=payload)
    assert no_token["status"] == 403, no_token
    assert "error" in json.loads(no_token["text"]), no_token
    wrong_token = _fetch(page, answer, headers={**json_headers, "X-CSRF-Token": "0" * len(token)}, body=payload)
    assert wrong_token["status"] == 403, wrong_token
    form = _fetch(
        page,
        "/portal/parametres/notifications",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body="notify=0",
    )
    assert form["status"] == 403, form

    # With the token but a foreign Origin, or a cross-site Sec-Fetch-Site: 403 as well
    # (page.request carries the context's cookies).
    for bad in ({"Origin": "http://attaquant.example"}, {"Sec-Fetch-Site": "cross-site"}):
        r = page.request.post(
            live.url("/portal/api/session/extend"),
            headers={**json_headers, "X-CSRF-Token": token, **bad},
            data="{}",
        )
        assert r.status == 403, (bad, r.status, r.text())
        r = page.request.post(live.url(answer), headers={**json_headers, "X-CSRF-Token": token, **bad}, data=payload)
        assert r.status == 403, (bad, r.status, r.text())
    # The same request with the token from this origin passes: the refusals were the CSRF rules.
    ok = page.request.post(
        live.url("/portal/api/session/extend"),
        headers={**json_headers, "X-CSRF-Token": token, "Origin": live.base},
        data="{}",
    )
    assert ok.status == 200, (ok.status, ok.text())
    assert "expires_in" in ok.json()
    same_page = _fetch(page, "/portal/api/session/extend", headers={**json_headers, "X-CSRF-Token": token})
    assert same_page["status"] == 200, same_page

    # No forged answer reached the professional.
    time.sleep(1)
    served = live.imap_messages(live.professional(1))
    assert not [m for m in served if marker.encode() in live.decrypt(live.professional(1), m)]


@pytest.mark.browser
def test_another_patients_conversation_and_message_are_not_found(portal: LivePortal, browse: Any) -> None:
    live = portal
    mine, other = live.active, live.pending
    marker = f"IDOR-{uuid.uuid4().hex[:12]}"
    live.send(live.professional(0), [other["address"]], f"Pour l'autre {marker}", "Confidentiel.\n")
    live.send(live.professional(0), [mine["address"]], f"Pour moi {marker}", "Le vôtre.\n")
    others, own = live.conversations_of(other["ins"]), live.conversations_of(mine["ins"])
    assert others and own, (others, own)
    other_conv, other_messages = others[-1]
    own_conv, own_messages = own[-1]
    assert other_messages and own_messages

    b: Browsing = browse(live)
    page = b.page
    b.login(mine["ins"], mine["password"])
    token = b.csrf()
    # My own conversation and message: found (so a 404 below is not a broken route).
    assert b.goto(f"/portal/conversations/{own_conv}").status == 200
    b.wait_page("conversation")
    assert page.request.get(live.url(f"/portal/api/messages/{own_messages[-1]}")).status == 200

    # The other patient's: 404, exactly like an id that does not exist.
    response = b.goto(f"/portal/conversations/{other_conv}")
    assert response.status == 404, response.status
    b.shot("conversation-d-un-autre")
    assert marker not in page.locator("body").inner_text()
    assert b.goto("/portal/conversations/987654321").status == 404
    for mid in other_messages:
        r = page.request.get(live.url(f"/portal/api/messages/{mid}"))
        assert r.status == 404, (mid, r.status)
    fetched = page.evaluate(
        "async (u) => (await fetch(u, {credentials: 'same-origin'})).status",
        f"/portal/api/messages/{other_messages[0]}",
    )
    assert fetched == 404
    forged = _fetch(
        page,
        f"/portal/api/conversations/{other_conv}/answer",
        headers={"Content-Type": "application/json", "X-CSRF-Token": token},
        body=json.dumps({"subject": "Re:", "text": "intrus"}),
    )
    assert forged["status"] == 404, forged
