"""The portal's JSON API (docs/portal.md 2.2), for the browser's key logic.

What crosses it: authentication keys (32 bytes the browser derives; never the password or
the activation code), wrapped-key records, and stored ciphertext. Every POST is CSRF-checked
before its body is read; bodies are small pydantic models (the app caps their size).

Sign-in steps are throttled per account and per client address (PORTAL.md 5.7): a wrong key
counts as a failure, a right one clears the count; while the core says wait, 429.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Literal, TypeVar

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from mss.services import KeyRecord, Principal
from web.errors import JsonBody
from web.portal import csrf, views
from web.portal.context import Portal, client_address, user_agent
from web.portal.csrf import CSRF_HEADER
from web.portal.errors import FORBIDDEN, PortalError, SignInRequired
from web.portal.sessions import SESSION_COOKIE, SignedIn, lookup, require, set_cookie
from web.portal.throttling import (
    DEVICE_COOKIE,
    DEVICE_MAX_AGE_S,
    attempt,
    device_of,
    new_device_cookie,
    second_factor_keys,
    secret_keys,
)

T = TypeVar("T", bound=BaseModel)

BAD_REQUEST = "Requête invalide."
WRONG_LOGIN = "Identifiant ou mot de passe incorrect."
WRONG_CODE = "Ce code n'est pas valide."
WRONG_ACTIVATION = "Identifiant ou code d'activation incorrect."
WRONG_PASSWORD = "Le mot de passe actuel est incorrect."  # noqa: S105 - a message, not a secret
AFTER_LOGIN = "/portal/messages"
#: Longest subject of an answer (RFC 5322 2.1.1 keeps lines under 998 characters).
MAX_SUBJECT = 250
#: Longest answer text the model parses; `[portal] answer_max_chars` is the real bound.
MAX_ANSWER = 1_000_000


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class LoginOnly(_Body):
    login: str = Field(min_length=1, max_length=320)


class LoginKey(LoginOnly):
    auth_key: str = Field(max_length=64)


class Code(_Body):
    code: str = Field(min_length=1, max_length=32)


class Activation(LoginOnly):
    activation_auth_key: str = Field(max_length=64)
    auth_key: str = Field(max_length=64)
    record: dict[str, str | int]


class OldKey(_Body):
    old_auth_key: str = Field(max_length=64)


class NewPassword(OldKey):
    auth_key: str = Field(max_length=64)
    record: dict[str, str | int]


class Answer(_Body):
    subject: str = Field(max_length=MAX_SUBJECT)
    text: str = Field(min_length=1, max_length=MAX_ANSWER)


class Nothing(_Body):
    pass


class JournalNote(_Body):
    """What the page itself saw and the journal must show: only downloads of decrypted
    attachments happen where the server cannot see them (the bytes are already in the page)."""

    action: Literal["attachment_download"]


def key_bytes(text: str) -> bytes:
    """An auth key: 32 bytes as unpadded base64url (43 characters, docs/patient-keys.md)."""
    if len(text) != 43:
        raise PortalError(400, BAD_REQUEST)
    try:
        raw = base64.urlsafe_b64decode(text + "=")
    except (binascii.Error, ValueError):
        raise PortalError(400, BAD_REQUEST) from None
    if len(raw) != 32:
        raise PortalError(400, BAD_REQUEST)
    return raw


async def parse(request: Request, model: type[T]) -> T:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise PortalError(400, BAD_REQUEST)
    try:
        return model.model_validate_json(await request.body())
    except ValidationError:
        raise PortalError(400, BAD_REQUEST) from None


def b64(raw: bytes) -> str:
    """Binary fields of the API: RFC 4648 section 4 base64 with padding (what `atob` reads)."""
    return base64.b64encode(raw).decode("ascii")


def session_doc(portal: Portal, signed: SignedIn) -> JsonBody:
    expires_in = max(0, int((signed.session.expires_at - datetime.now(UTC)).total_seconds()))
    return JsonBody({"expires_in": expires_in, "warn_before": portal.warn_before(expires_in)})


def router(portal: Portal) -> APIRouter:
    r = APIRouter(prefix="/portal/api", include_in_schema=False)

    async def signed_in(request: Request, principal: Principal, previous: SignedIn | None) -> JsonBody:
        """The full session: a new id (never the pending one, PORTAL.md 5.6). The core
        journals the login as it opens it (address truncated to /24 or /48, the user agent
        as `short_agent` made it)."""
        sid, session = await portal.core.open_session(
            principal, pending_totp=False, client=client_address(request), user_agent=user_agent(request)
        )
        if previous is not None:
            await portal.core.close_session(previous.id)
        record: KeyRecord = await portal.core.key_record(principal)
        certificate = await portal.core.certificate(principal.identifier)
        response = JsonBody(
            {
                "next": AFTER_LOGIN,
                "record": record,
                "certificate": b64(certificate),
                "session_key": b64(session.local_key),
            }
        )
        set_cookie(response, SESSION_COOKIE, sid)
        # This browser is now known for this account (web/portal/throttling.py).
        device = new_device_cookie(await portal.core.secret(), principal.identifier)
        response.set_cookie(
            DEVICE_COOKIE, device, max_age=DEVICE_MAX_AGE_S, path="/", secure=True, httponly=True, samesite="strict"
        )
        return response

    @r.post("/prelogin")
    async def prelogin(request: Request) -> Response:
        await portal.check_anonymous(request, request.headers.get(CSRF_HEADER))
        body = await parse(request, LoginOnly)
        return JsonBody(await portal.core.login_params(body.login.strip()))

    @r.post("/login")
    async def login(request: Request) -> Response:
        await portal.check_anonymous(request, request.headers.get(CSRF_HEADER))
        body = await parse(request, LoginKey)
        name, key = body.login.strip(), key_bytes(body.auth_key)
        device = device_of(request, await portal.core.secret(), name)
        principal = await attempt(
            portal.core,
            secret_keys(request, name, device=device),
            lambda: portal.core.authenticate(name, key),
            WRONG_LOGIN,
        )
        previous = await lookup(request, portal.core)
        if await portal.core.totp_required(principal):
            sid, _ = await portal.core.open_session(
                principal, pending_totp=True, client=client_address(request), user_agent=user_agent(request)
            )
            if previous is not None:
                await portal.core.close_session(previous.id)
            response = JsonBody({"next": "totp"})
            set_cookie(response, SESSION_COOKIE, sid)
            return response
        return await signed_in(request, principal, previous)

    @r.post("/totp")
    async def totp(request: Request) -> Response:
        await portal.check_anonymous(request, request.headers.get(CSRF_HEADER))
        pending = await require(request, portal.core, pending=True)
        body = await parse(request, Code)
        principal = pending.session.principal
        await attempt(
            portal.core,
            second_factor_keys(request, principal.identifier),
            lambda: portal.core.second_factor(principal, body.code.strip()),
            WRONG_CODE,
        )
        return await signed_in(request, principal, pending)

    @r.post("/activation/prelogin")
    async def activation_prelogin(request: Request) -> Response:
        await portal.check_anonymous(request, request.headers.get(CSRF_HEADER))
        body = await parse(request, LoginOnly)
        return JsonBody(await portal.core.activation_params(body.login.strip()))

    @r.post("/activation/key")
    async def activation_key(request: Request) -> Response:
        await portal.check_anonymous(request, request.headers.get(CSRF_HEADER))
        body = await parse(request, LoginKey)
        name, key = body.login.strip(), key_bytes(body.auth_key)
        record = await attempt(
            portal.core,
            secret_keys(request, name),
            lambda: portal.core.activation_record(name, key),
            WRONG_ACTIVATION,
        )
        return JsonBody({"record": record, "certificate": b64(await portal.core.certificate(name))})

    @r.post("/activation")
    async def activation(request: Request) -> Response:
        await portal.check_anonymous(request, request.headers.get(CSRF_HEADER))
        body = await parse(request, Activation)
        name = body.login.strip()
        old, new = key_bytes(body.activation_auth_key), key_bytes(body.auth_key)
        await attempt(
            portal.core,
            secret_keys(request, name),
            lambda: portal.core.activate(name, old, new, body.record),
            WRONG_ACTIVATION,
        )
        return JsonBody({"ok": True})

    @r.get("/session")
    async def session(request: Request) -> Response:
        # A status check, not activity: the idle expiry stays where it is.
        return session_doc(portal, await require(request, portal.core, touch=False))

    @r.get("/session/key")
    async def session_key(request: Request) -> Response:
        """K_s, for a page to open the private key its sign-in left wrapped in IndexedDB. Only
        for the portal's own scripts: a request that says it comes from elsewhere is refused."""
        if csrf.cross_site(request):
            raise PortalError(403, FORBIDDEN)
        signed = await require(request, portal.core)
        if not signed.session.local_key:
            raise SignInRequired
        return JsonBody({"key": b64(signed.session.local_key)})

    @r.post("/session/extend")
    async def extend(request: Request) -> Response:
        signed = await require(request, portal.core)
        await portal.check_signed(request, signed, request.headers.get(CSRF_HEADER))
        await parse(request, Nothing)
        return session_doc(portal, signed)

    @r.get("/messages/{message_id:int}")
    async def message(request: Request, message_id: int) -> Response:
        signed = await require(request, portal.core)
        data = await portal.core.message(signed.session.principal, message_id)
        return Response(
            data,
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="message-{message_id}.eml.p7m"'},
        )

    @r.post("/conversations/{conversation_id:int}/answer")
    async def answer(request: Request, conversation_id: int) -> Response:
        signed = await require(request, portal.core)
        await portal.check_signed(request, signed, request.headers.get(CSRF_HEADER))
        body = await parse(request, Answer)
        if not body.text.strip():
            raise PortalError(400, "Votre réponse est vide.")
        if len(body.text) > portal.settings.portal.answer_max_chars:
            limit = portal.settings.portal.answer_max_chars
            raise PortalError(400, f"Votre réponse est trop longue (au plus {limit} caractères).")
        if any(c in body.subject for c in "\r\n\0"):
            raise PortalError(400, BAD_REQUEST)
        await portal.core.answer(signed.session.principal, conversation_id, body.subject, body.text)
        return JsonBody({"ok": True})

    @r.post("/password/record")
    async def password_record(request: Request) -> Response:
        signed = await require(request, portal.core)
        await portal.check_signed(request, signed, request.headers.get(CSRF_HEADER))
        body = await parse(request, OldKey)
        principal, old = signed.session.principal, key_bytes(body.old_auth_key)
        record = await attempt(
            portal.core,
            secret_keys(request, principal.identifier),
            lambda: portal.core.password_record(principal, old),
            WRONG_PASSWORD,
            403,
        )
        return JsonBody({"record": record, "certificate": b64(await portal.core.certificate(principal.identifier))})

    @r.get("/password/params")
    async def password_params(request: Request) -> Response:
        """The KDF parameters of the signed-in patient's record, for the password change (the
        anonymous prelogin is for the sign-in page, with its anonymous CSRF token)."""
        signed = await require(request, portal.core)
        return JsonBody(await portal.core.login_params(signed.session.principal.identifier))

    @r.post("/password")
    async def password(request: Request) -> Response:
        signed = await require(request, portal.core)
        await portal.check_signed(request, signed, request.headers.get(CSRF_HEADER))
        body = await parse(request, NewPassword)
        principal = signed.session.principal
        old, new = key_bytes(body.old_auth_key), key_bytes(body.auth_key)
        await attempt(
            portal.core,
            secret_keys(request, principal.identifier),
            lambda: portal.core.change_password(principal, old, new, body.record, current_session=signed.id),
            WRONG_PASSWORD,
            403,
        )
        return JsonBody({"ok": True})

    @r.post("/journal")
    async def journal(request: Request) -> Response:
        signed = await require(request, portal.core)
        await portal.check_signed(request, signed, request.headers.get(CSRF_HEADER))
        body = await parse(request, JournalNote)
        await portal.core.note(signed.session.principal, body.action)
        return JsonBody({"ok": True})

    @r.get("/export")
    async def export(request: Request) -> Response:
        """The list the page downloads and decrypts into "mes-donnees.zip" (journaled here)."""
        signed = await require(request, portal.core)
        items = await portal.core.export(signed.session.principal)
        await portal.core.note(signed.session.principal, "data_export", f"{len(items)} messages")
        return JsonBody(
            {
                "messages": [
                    {
                        "url": f"/portal/api/messages/{i.message}",
                        "conversation": i.conversation,
                        "direction": i.direction,
                        "at": views.iso(i.at),
                    }
                    for i in items
                ]
            }
        )

    return r
