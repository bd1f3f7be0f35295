"""The portal's pages (docs/portal.md 2.1): server-rendered, French, one base template.

Signed-in pages need a full session (`sessions.require`); without one they answer 303 to the
sign-in page (`errors.SignInRequired`). Ids of conversations are checked by the core: another
patient's is a 404 like an unknown one.
"""

from __future__ import annotations

import csv
import io

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from mss.services import JournalLine
from web.errors import error as error_json
from web.portal import views
from web.portal.context import Portal
from web.portal.errors import NOT_FOUND
from web.portal.sessions import require

KINDS = {"professionnel": "Professionnel", "etablissement": "Établissement"}
TABS = {"moi": "Mes actions", "professionnels": "Professionnels"}
ACTORS = {"patient": "Vous", "operator": "Opérateur", "system": "Système"}
#: French names of the journal's actions, by the codes the core writes (mss.patients,
#: mss.portal) and the portal's own notes; one not listed is shown as the core wrote it
#: (tests/web/test_portal_views.py checks that every code the core writes is here).
ACTIONS = {
    "created": "Création de l'espace",
    "activated": "Activation de l'espace",
    "login": "Connexion",
    "message_received": "Message reçu",
    "conversation_closed": "Fin des échanges",
    "conversation_read": "Lecture d'une conversation",
    "message_sent": "Réponse envoyée",
    "attachment_download": "Téléchargement d'une pièce jointe",
    "data_export": "Téléchargement de mes données",
    "journal_export": "Export du journal",
    "blocked": "Professionnel bloqué",
    "unblocked": "Professionnel débloqué",
    "notifications_on": "Notifications activées",
    "notifications_off": "Notifications désactivées",
    "password_changed": "Mot de passe changé",
    "totp_enabled": "Validation en deux étapes activée",
    "totp_disabled": "Validation en deux étapes désactivée",
    "recovery_code_used": "Code de secours utilisé",
}


def title_of(page: str) -> str:
    return f"{page} – Portail patient"


def inbox_title(unread: int) -> str:
    """RGAA 8.6: the title says what is new."""
    if unread == 0:
        return title_of("Messagerie")
    return title_of(f"Messagerie ({unread} non lu{'s' if unread > 1 else ''})")


def tab_of(line: JournalLine) -> str:
    """Operator and system lines go with the patient's own: they are about the space."""
    return "professionnels" if line.actor_kind == "professional" else "moi"


def actor_label(line: JournalLine) -> str:
    if line.actor_kind == "professional":
        return line.actor or "Professionnel"
    return ACTORS.get(line.actor_kind, line.actor_kind)


def csv_cell(text: str) -> str:
    """A cell a spreadsheet will not run as a formula (OWASP CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def router(portal: Portal) -> APIRouter:
    r = APIRouter(prefix="/portal", include_in_schema=False)

    @r.get("/")
    async def home(request: Request) -> Response:
        signed = await portal.session_or_none(request)
        target = "messages" if signed is not None and not signed.session.pending_totp else "connexion"
        return RedirectResponse(f"/portal/{target}", status_code=303)

    @r.get("/connexion")
    async def connexion(request: Request) -> Response:
        signed = await portal.session_or_none(request)
        if signed is not None and not signed.session.pending_totp:
            return RedirectResponse("/portal/messages", status_code=303)
        return await portal.anonymous_page(request, "connexion.html", page="connexion", title=title_of("Connexion"))

    @r.get("/activation")
    async def activation(request: Request) -> Response:
        return await portal.anonymous_page(
            request, "activation.html", page="activation", title=title_of("Activer mon espace")
        )

    @r.get("/messages")
    async def messages(request: Request, page: str = "1") -> Response:
        signed = await require(request, portal.core)
        number = int(page) if page.isascii() and page.isdigit() and 0 < len(page) < 7 else 1
        inbox = await portal.core.inbox(signed.session.principal, max(1, number))
        items = [
            {
                "c": c,
                "kind": KINDS.get(c.professional_kind, "Professionnel"),
                "when": views.human_date(c.last_at),
                "iso": views.iso(c.last_at),
            }
            for c in inbox.conversations
        ]
        return await portal.signed_page(
            request,
            signed,
            "messages.html",
            page="messages",
            title=inbox_title(inbox.unread),
            inbox=inbox,
            items=items,
            unread=inbox.unread,
            nav="messages",
        )

    @r.get("/conversations/{conversation_id:int}")
    async def conversation(request: Request, conversation_id: int) -> Response:
        signed = await require(request, portal.core)
        principal = signed.session.principal
        view = await portal.core.conversation(principal, conversation_id)
        me = await portal.core.me(principal)
        inbox = await portal.core.inbox(principal, 1)
        summary = view.summary
        items = [{"m": m, "when": views.full_date(m.at), "iso": views.iso(m.at)} for m in view.items]
        return await portal.signed_page(
            request,
            signed,
            "conversation.html",
            page="conversation",
            title=title_of(f"Conversation avec {summary.professional_name}"),
            view=view,
            summary=summary,
            kind=KINDS.get(summary.professional_kind, "Professionnel"),
            items=items,
            blocked=summary.professional.lower() in {b.lower() for b in me.blocked},
            unread=inbox.unread,
            nav="messages",
        )

    @r.get("/parametres")
    async def parametres(request: Request) -> Response:
        signed = await require(request, portal.core)
        me = await portal.core.me(signed.session.principal)
        blocked = {b.lower() for b in me.blocked}
        names = dict(me.professionals)
        return await portal.signed_page(
            request,
            signed,
            "parametres.html",
            page="parametres",
            title=title_of("Paramètres"),
            me=me,
            open_professionals=[(a, n) for a, n in me.professionals if a.lower() not in blocked],
            blocked=[(a, names.get(a, "")) for a in me.blocked],
            nav="parametres",
        )

    @r.get("/journal")
    async def journal(request: Request, onglet: str = "moi") -> Response:
        signed = await require(request, portal.core)
        tab = onglet if onglet in TABS else "moi"
        lines = [line for line in await portal.core.journal(signed.session.principal) if tab_of(line) == tab]
        rows = [
            {
                "iso": views.iso(line.at),
                "when": views.full_date(line.at),
                "actor": actor_label(line),
                "action": ACTIONS.get(line.action, line.action),
                "detail": line.detail,
            }
            for line in lines
        ]
        return await portal.signed_page(
            request,
            signed,
            "journal.html",
            page="journal",
            title=title_of(f"Journal des accès : {TABS[tab]}"),
            tab=tab,
            tabs=TABS,
            rows=rows,
            nav="parametres",
        )

    @r.get("/journal.csv")
    async def journal_csv(request: Request, onglet: str = "moi") -> Response:
        signed = await require(request, portal.core)
        principal = signed.session.principal
        tab = onglet if onglet in TABS else "moi"
        lines = [line for line in await portal.core.journal(principal) if tab_of(line) == tab]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(["date", "acteur", "action", "detail"])
        for line in lines:
            writer.writerow(
                [
                    views.iso(line.at),
                    csv_cell(actor_label(line)),
                    csv_cell(ACTIONS.get(line.action, line.action)),
                    csv_cell(line.detail),
                ]
            )
        await portal.core.note(principal, "journal_export", tab)
        return Response(
            out.getvalue().encode("utf-8"),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="journal-{tab}.csv"'},
        )

    @r.get("/donnees")
    async def donnees(request: Request) -> Response:
        signed = await require(request, portal.core)
        return await portal.signed_page(
            request,
            signed,
            "donnees.html",
            page="donnees",
            title=title_of("Télécharger mes données"),
            nav="parametres",
        )

    @r.get("/cloture")
    async def cloture(request: Request) -> Response:
        signed = await require(request, portal.core)
        return await portal.signed_page(
            request,
            signed,
            "cloture.html",
            page="cloture",
            title=title_of("Clôturer mon espace"),
            nav="parametres",
        )

    return r


def not_found_router() -> APIRouter:
    """Last: any other `/portal/…` page is a French 404 page (the API keeps JSON)."""
    r = APIRouter(include_in_schema=False)

    @r.get("/portal/{rest:path}")
    async def unknown(rest: str) -> Response:
        if rest.startswith("api/"):
            return error_json(404, NOT_FOUND)
        return error_page(404, "Page introuvable", NOT_FOUND)

    return r


def plain_context() -> dict[str, object]:
    """The base template's context on a page without a session or a form."""
    return {"page": "erreur", "signed_in": False, "csrf": "", "statut": "", "alerte": ""}


def error_page(status: int, heading: str, text: str) -> Response:
    """A plain French error page; the sentence is in `#alerte` (role="alert")."""
    context = {**plain_context(), "alerte": text}
    return views.render("erreur.html", status, title=title_of(heading), heading=heading, **context)
