"""The settings side of the portal, with the real core: the settings page's contract,
notifications, blocking, the access journal (tabs, CSV), "download my data" and closing the
space."""

from __future__ import annotations

import csv
import io

from portal_helpers import Tree, active_patient, api, conversation_ids, send_to, signed_in


async def test_settings_page_contract_and_notifications_toggle(core):
    patient = await active_patient(core)
    async with signed_in(core, patient) as (http, token):
        page = await http.get("/portal/parametres")
        tree = Tree(page.text)
        assert "<title>Paramètres – Portail patient</title>" in page.text
        form = tree.by_id("form-mot-de-passe")[1]
        assert form["data-login"] == patient.ins
        assert tree.label_for("mot-de-passe-actuel") == "Mot de passe actuel"
        assert tree.label_for("nouveau-mot-de-passe") == "Nouveau mot de passe"
        assert tree.label_for("confirmation-mot-de-passe") == "Confirmer le nouveau mot de passe"
        assert "Changer le mot de passe" in tree.buttons()
        assert not [a for t, a in tree.elements if t == "input" and a.get("type") == "password" and "name" in a]

        assert (await core.portal.me(await principal_of(core, patient))).notify is True
        off = await http.post("/portal/parametres/notifications", data={"csrf": token, "notifications": "non"})
        assert off.status_code == 303
        page = await http.get(off.headers["location"])
        assert 'role="status" aria-live="polite"><p>Les notifications par e-mail sont désactivées.</p>' in page.text
        assert (await core.portal.me(await principal_of(core, patient))).notify is False
        on = await http.post("/portal/parametres/notifications", data={"csrf": token, "notifications": "oui"})
        assert on.headers["location"] == "/portal/parametres?statut=notifications-on"
        assert (await core.portal.me(await principal_of(core, patient))).notify is True


async def principal_of(core, patient):
    from portal_helpers import reference_client

    params = await core.portal.login_params(patient.ins)
    return await core.portal.authenticate(patient.ins, reference_client(core).login(patient.password, params))


async def test_block_and_unblock_a_professional(core, deployment):
    patient = await active_patient(core)
    await send_to(core, deployment, patient, "Bonjour")
    pro = deployment.mailbox("PER", 0)["address"].lower()
    async with signed_in(core, patient) as (http, token):
        page = await http.get("/portal/parametres")
        assert f'name="professional" value="{pro}"' in page.text and "Aucun professionnel bloqué." in page.text
        blocked = await http.post("/portal/parametres/bloquer", data={"csrf": token, "professional": pro})
        assert blocked.status_code == 303 and blocked.headers["location"] == "/portal/parametres?statut=bloque"
        page = await http.get(blocked.headers["location"])
        tree = Tree(page.text)
        assert tree.by_id("bloques")[0] == "ul" and "Débloquer" in " ".join(tree.buttons())
        assert pro in [a.lower() for a in (await core.portal.me(await principal_of(core, patient))).blocked]
        (cid,) = conversation_ids((await http.get("/portal/messages")).text)
        conv = await http.get(f"/portal/conversations/{cid}")
        assert 'action="/portal/parametres/debloquer"' in conv.text
        unblocked = await http.post("/portal/parametres/debloquer", data={"csrf": token, "professional": pro})
        assert unblocked.headers["location"] == "/portal/parametres?statut=debloque"
        assert not (await core.portal.me(await principal_of(core, patient))).blocked
        bad = await http.post("/portal/parametres/bloquer", data={"csrf": token, "professional": "pas une adresse"})
        assert bad.status_code == 400


async def test_journal_tabs_and_csv_export(core, deployment):
    patient = await active_patient(core)
    await send_to(core, deployment, patient, "Compte rendu")
    async with signed_in(core, patient) as (http, _):
        mine = await http.get("/portal/journal")
        tree = Tree(mine.text)
        tabs = tree.all("a", **{"aria-current": "page"})
        assert [t["href"] for t in tabs if "journal" in t["href"]] == ["/portal/journal?onglet=moi"]
        assert "Connexion" in mine.text and "Opérateur" in mine.text  # the space's creation
        pros = await http.get("/portal/journal?onglet=professionnels")
        assert 'href="/portal/journal?onglet=professionnels" aria-current="page"' in pros.text

        export = await http.get("/portal/journal.csv?onglet=moi")
        assert export.status_code == 200 and export.headers["content-type"] == "text/csv; charset=utf-8"
        assert export.headers["content-disposition"].startswith("attachment;")
        rows = list(csv.reader(io.StringIO(export.text)))
        assert rows[0] == ["date", "acteur", "action", "detail"] and len(rows) > 2
        assert any(r[2] == "Connexion" for r in rows[1:])
        again = await http.get("/portal/journal?onglet=moi")
        assert "Export du journal" in again.text and "journal_export" not in again.text
        assert "Activation de l&#39;espace" in again.text or "Activation de l'espace" in again.text
        assert not any(code in again.text for code in ("activated", "created", "conversation_read"))


async def test_download_page_and_export_api(core, deployment):
    patient = await active_patient(core)
    await send_to(core, deployment, patient, "Ordonnance")
    async with signed_in(core, patient) as (http, token):
        page = await http.get("/portal/donnees")
        tree = Tree(page.text)
        assert tree.text("telecharger-donnees") == "Télécharger mes données"
        assert tree.by_id("telecharger-donnees")[1]["type"] == "button"
        doc = (await http.get("/portal/api/export")).json()
        (item,) = doc["messages"]
        assert item["direction"] == "in" and item["url"].startswith("/portal/api/messages/")
        assert (await http.get(item["url"])).status_code == 200
        # The journal shows the export, and the downloads the page reports (those happen on
        # decrypted bytes the server never sees); nothing else can be written there.
        note = "/portal/api/journal"
        assert (await api(http, note, {"action": "attachment_download"}, token)).status_code == 200
        assert (await api(http, note, {"action": "login"}, token)).status_code == 400
        assert (await api(http, note, {"action": "attachment_download"}, "nope")).status_code == 403
        journal = (await http.get("/portal/journal?onglet=moi")).text
        assert "Téléchargement de mes données" in journal
        assert (
            journal.count("Téléchargement d&#39;une pièce jointe") + journal.count("Téléchargement d'une pièce jointe")
            == 1
        )


async def test_close_my_space(core):
    patient = await active_patient(core)
    async with signed_in(core, patient) as (http, token):
        page = await http.get("/portal/cloture")
        tree = Tree(page.text)
        assert tree.label_for("confirmation") == "Je comprends que mes messages seront définitivement effacés"
        assert "Clôturer mon espace" in tree.buttons()
        unchecked = await http.post("/portal/cloture", data={"csrf": token})
        assert unchecked.status_code == 303 and unchecked.headers["location"] == "/portal/cloture?alerte=confirmation"
        done = await http.post("/portal/cloture", data={"csrf": token, "confirmation": "oui"})
        assert done.status_code == 200 and "Votre espace a été clôturé." in done.text
        assert "__Host-mss-session" not in http.cookies
    # Whatever cookie was kept, nothing opens any more.
    record = await core.patients.get(patient.ins)
    assert record.state == "closed"
