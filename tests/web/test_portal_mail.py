"""Reading and answering through the portal, with the real core: the inbox and the
conversation pages (the contract's ids and labels), ciphertext by the API, the answer
reaching the professional, the rules of a closed conversation, and another patient's ids
answering 404 (IDOR)."""

from __future__ import annotations

import asyncio
import re

from portal_helpers import (
    Tree,
    active_patient,
    api,
    conversation_ids,
    message_urls,
    reference_client,
    send_to,
    signed_in,
)
from support import stored_messages


async def test_empty_inbox_and_the_base_template(core):
    patient = await active_patient(core)
    async with signed_in(core, patient) as (http, _):
        page = await http.get("/portal/messages")
        tree = Tree(page.text)
        assert '<html lang="fr">' in page.text
        assert re.search(r"<title>Messagerie – Portail patient</title>", page.text)
        assert "Je n'ai aucun message à consulter" in page.text
        body = tree.all("body")[0]
        assert body["data-page"] == "messages"
        assert int(body["data-session-expires-in"]) > int(body["data-session-warn"]) > 0
        assert tree.all("a", href="#contenu") and tree.by_id("contenu")[0] == "main"
        assert tree.by_id("statut")[1]["role"] == "status" and tree.by_id("alerte")[1]["role"] == "alert"
        assert tree.by_id("expiration")[0] == "dialog"
        assert tree.text("expiration-prolonger") == "Rester connecté"
        logout = tree.by_id("form-deconnexion")[1]
        assert (logout["method"], logout["action"]) == ("post", "/portal/deconnexion")
        assert "Se déconnecter" in tree.buttons()
        assert [a["src"] for a in tree.all("script")] == ["/portal/static/portal.js"]
        assert tree.all("script")[0]["type"] == "module"
        headings = re.findall(r"<h([1-6])", page.text)
        assert headings[0] == "1"


async def test_inbox_conversation_read_and_answer(core, deployment):
    patient = await active_patient(core)
    await send_to(core, deployment, patient, "Resultats d'analyse")
    await send_to(core, deployment, patient, "Rendez-vous", index=1)
    async with signed_in(core, patient) as (http, token):
        page = await http.get("/portal/messages")
        assert "<title>Messagerie (2 non lus) – Portail patient</title>" in page.text
        tree = Tree(page.text)
        assert tree.by_id("conversations")[1]["aria-label"] == "Conversations"
        items = tree.all("li")
        rows = [a for a in items if a.get("class", "").startswith("conversation")]
        assert len(rows) == 2 and all(r["class"] == "conversation non-lu" for r in rows)
        assert page.text.count('<span class="sr-only">non lu</span>') == 2
        assert page.text.count('<span class="genre">Professionnel</span>') == 2
        assert page.text.count("data-sujet") == 2 and page.text.count("data-pj hidden") == 2
        assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0[12]:00">\d\d:\d\d</time>', page.text)
        ids = conversation_ids(page.text)
        assert len(ids) == 2

        # The newest first: the second professional wrote last.
        pro1 = deployment.mailbox("PER", 1)
        first = await http.get(f"/portal/conversations/{ids[0]}")
        assert first.status_code == 200 and 'data-page="conversation"' in first.text
        assert pro1["address"].lower() in first.text.lower()

        conv = await http.get(f"/portal/conversations/{ids[1]}")
        tree = Tree(conv.text)
        assert tree.by_id("messages")[0] == "ol"
        assert tree.all("h1")[0].get("data-sujet") == ""
        urls = message_urls(conv.text)
        assert len(urls) == 1 and 'data-direction="in"' in conv.text
        assert tree.text("repondre") == "Répondre"
        form = tree.by_id("form-reponse")[1]
        assert "hidden" in form and form["data-action"] == f"/portal/api/conversations/{ids[1]}/answer"
        assert tree.label_for("reponse") == "Votre réponse" and "Envoyer" in tree.buttons()
        assert "Bloquer ce professionnel" in tree.buttons()
        assert "bandeau" not in conv.text

        # Ciphertext only, and the patient's key opens it.
        stored = await http.get(urls[0])
        assert stored.status_code == 200 and stored.headers["content-type"] == "application/octet-stream"
        assert stored.headers["cache-control"] == "no-store"
        assert b"Bonjour." not in stored.content
        record = await core.patients.key_record(patient.ins)
        private = await asyncio.to_thread(reference_client(core).unlock, patient.password, record)
        clear = reference_client(core).open(stored.content, private)
        assert b"Bonjour." in clear

        # Seen once opened: nothing unread any more.
        page = await http.get("/portal/messages")
        assert "<title>Messagerie – Portail patient</title>" in page.text

        pro0 = deployment.mailbox("PER", 0)
        before = len(await stored_messages(deployment, pro0["address"]))
        answer = await api(
            http, f"/portal/api/conversations/{ids[1]}/answer", {"subject": "Re: Résultats", "text": "Merci !"}, token
        )
        assert answer.status_code == 200 and answer.json() == {"ok": True}
        assert len(await stored_messages(deployment, pro0["address"])) == before + 1
        conv = await http.get(f"/portal/conversations/{ids[1]}")
        assert 'data-direction="out"' in conv.text

        empty = await api(http, f"/portal/api/conversations/{ids[1]}/answer", {"subject": "x", "text": " "}, token)
        assert empty.status_code == 400 and empty.json()["error"]
        limit = core.settings.portal.answer_max_chars
        long = await api(
            http, f"/portal/api/conversations/{ids[1]}/answer", {"subject": "x", "text": "a" * (limit + 1)}, token
        )
        assert long.status_code in (400, 413)


async def test_closed_conversation_has_a_banner_and_refuses_answers(core, deployment):
    patient = await active_patient(core)
    first = await send_to(core, deployment, patient, "Suivi")
    await send_to(core, deployment, patient, "[FIN]", reply_to=first)
    async with signed_in(core, patient) as (http, token):
        page = await http.get("/portal/messages")
        assert '<span class="clos">Échange clos</span>' in page.text
        (cid,) = conversation_ids(page.text)
        conv = await http.get(f"/portal/conversations/{cid}")
        assert re.search(r'<p class="bandeau">[^<]+ a mis fin à vos échanges\.</p>', conv.text)
        assert 'id="repondre"' not in conv.text and 'id="form-reponse"' not in conv.text
        refused = await api(http, f"/portal/api/conversations/{cid}/answer", {"subject": "Re", "text": "Et ?"}, token)
        assert refused.status_code == 403
        assert set(refused.json()) == {"error"} and refused.json()["error"]


async def test_another_patients_conversation_and_message_are_404(core, deployment):
    owner = await active_patient(core)
    other = await active_patient(core)
    await send_to(core, deployment, owner, "Confidentiel")
    async with signed_in(core, owner) as (http, _):
        page = await http.get("/portal/messages")
        (cid,) = conversation_ids(page.text)
        (url,) = message_urls(page.text)
        assert (await http.get(f"/portal/conversations/{cid}")).status_code == 200
    async with signed_in(core, other) as (intruder, token):
        conv = await intruder.get(f"/portal/conversations/{cid}")
        assert conv.status_code == 404 and 'role="alert"' in conv.text and "Confidentiel" not in conv.text
        message = await intruder.get(url)
        assert message.status_code == 404 and message.json() == {
            "error": "Cette page n'existe pas ou ne vous est pas accessible."
        }
        unknown = await intruder.get("/portal/api/messages/999999999")
        assert unknown.status_code == 404 and unknown.json() == message.json()
        answer = await api(intruder, f"/portal/api/conversations/{cid}/answer", {"subject": "x", "text": "y"}, token)
        assert answer.status_code == 404
        assert (await intruder.get("/portal/conversations/abc")).status_code == 404
