"""`CorePortal`: the patient portal's core (`mss.services.PatientPortal`; docs/portal.md).

Everything the portal does is decided here, never in `web/`: who a login is, whether a
second factor is due, which conversation and message ids belong to the signed-in patient,
whether an answer is allowed. The rules themselves live in `mss.patients` (spaces, keys,
conversations, answers), `mss.portal_sessions`, `mss.throttle` and `mss.totp`; this facade
binds them to a principal and speaks French to the patient: every `Refusal` it raises has a
`public` sentence fit for the page.

Zero access (docs/patient-keys.md): the server hands out KDF parameters before login (a
stable decoy for a login without an active space, with the same database work either way),
the wrapped key only after the authentication key checked, and mail only as the stored
ciphertext. Answers are built here as plain RFC 5322 text and go through the one submission
path, which encrypts them to the professional and files the patient's encrypted Sent copy.

Decisions the web layer relies on:

* Inbox pages are numbered from 1; a page below 1 is page 1, a page past the end is the
  last page (an empty inbox has one empty page).
* `message()` does not journal: the inbox fetches each row's newest message to show its
  subject, and one line per fetch would drown the journal. Reading is journaled once per
  conversation view (`conversation_read`, detail: the professional's name). The web layer
  journals downloads and exports itself through `note()`.
* `open_session(pending_totp=False)` journals the login (`login`, detail: the client's
  address truncated to /24 or /48, and the user agent); the web layer must not note it again.
* A password change ends the patient's other sessions; `close()` ends them all.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import unicodedata
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from annuaire.search import Directory
from crypto import patient as patient_crypto
from crypto.dates import as_utc
from mss import totp
from mss.config import Settings
from mss.db.models import Conversation, ConversationMessage, PatientSpace, PortalSecret
from mss.delivery import Delivery
from mss.mailaccess import Handle, MailAccessService
from mss.patients import ConversationInfo, PatientSpaces
from mss.portal_sessions import PortalSessions, SessionState, truncated_client
from mss.principal import Principal
from mss.records import FolderInfo
from mss.refusals import Reason, Refusal
from mss.services import (
    ConversationItem,
    ConversationSummary,
    ConversationView,
    ExportItem,
    InboxPage,
    JournalLine,
    KeyRecord,
    PatientView,
    PortalSession,
    ProfessionalKind,
    TotpSetup,
)
from mss.throttle import Throttle, insert_for

log = logging.getLogger("mss.portal")

# -- what the patient reads (French) ---------------------------------------------------------

BAD_LOGIN = "Identifiant ou mot de passe incorrect."
BAD_ACTIVATION = "Identifiant ou code d'activation incorrect."
EXPIRED_ACTIVATION = "Ce code d'activation a expiré : demandez-en un nouveau à l'établissement qui a créé votre espace."
BAD_PASSWORD = "Le mot de passe actuel est incorrect."  # noqa: S105 - a sentence, not a password
BAD_RECORD = "La clé préparée par votre navigateur n'est pas valide : rechargez la page et réessayez."
WEAK_RECORD = "La clé préparée par votre navigateur est trop faiblement protégée : mettez votre navigateur à jour."
BAD_CODE = "Code de vérification incorrect."
TOTP_ALREADY_ON = "La vérification en deux étapes est déjà activée."
TOTP_OFF = "La vérification en deux étapes n'est pas activée."
TOTP_NOT_STARTED = "Commencez par activer la vérification en deux étapes."
NO_CONVERSATION = "Cette conversation n'existe pas."
NO_MESSAGE = "Ce message n'existe pas."
EMPTY_ANSWER = "Votre réponse est vide."
LONG_ANSWER = "Votre réponse dépasse {n} caractères : raccourcissez-la."
BLOCKED = "Vous avez bloqué ce professionnel : débloquez-le dans les paramètres pour lui répondre."
NOT_ACTIVE = "Votre espace ne permet pas d'envoyer de messages."
SEND_FAILED = "Votre réponse n'a pas pu être envoyée : réessayez plus tard."
BAD_PROFESSIONAL = "Cette adresse de professionnel n'est pas valide."
SPACE_CLOSED = "Votre espace est clos."
PATIENTS_ONLY = "Seul le patient peut faire cela."

#: The core's English sentences (CLI, logs) and what the patient reads instead.
_FRENCH = {
    "Invalid credentials": BAD_LOGIN,
    "Wrong activation code": BAD_ACTIVATION,
    "This space is already activated": BAD_ACTIVATION,
    "This activation code has expired": EXPIRED_ACTIVATION,
    "Invalid key record": BAD_RECORD,
    "Key record too weak": WEAK_RECORD,
    "Wrong password": BAD_PASSWORD,
    "You blocked this professional": BLOCKED,
    "This space does not send messages": NOT_ACTIVE,
    "No such conversation": NO_CONVERSATION,
    "Only the patient may do this": PATIENTS_ONLY,
}
_FALLBACK = {
    Reason.UNKNOWN_RECIPIENT: NO_CONVERSATION,
    Reason.MAILBOX_DISABLED: SPACE_CLOSED,
    Reason.NOT_ALLOWED: "Cette action n'est pas permise.",
    Reason.BAD_ADDRESS: BAD_PROFESSIONAL,
    Reason.MALFORMED_MESSAGE: BAD_RECORD,
    Reason.TEMPORARILY_UNAVAILABLE: SEND_FAILED,
    Reason.STORAGE_FULL: SEND_FAILED,
}

ORGANISATION_TYPES = frozenset({"ORG", "APP", "CAB"})
DEFAULT_SUBJECT = "Re: (sans objet)"
MAX_SUBJECT = 200
MAX_LOGIN = 320
MAX_REFERENCES = 10
_MAX_NOTE_ACTION = 32  # patient_journal.action
_MAX_NOTE_DETAIL = 1000
_PROFESSIONAL = re.compile(r"[^@\s<>\"(),;:\\\[\]]{1,64}@[a-z0-9](?:[a-z0-9.-]{0,253}[a-z0-9])?")
_CSRF_LABEL = b"mss portal csrf v1"
_DECOY_LABEL = b"mss portal decoy v1"
_SEEN = "\\Seen"
ACCOUNT_PREFIX = "account:"
#: Row ids are signed 64-bit on both databases; a larger number would overflow the driver.
_MAX_ROW_ID = 2**63 - 1


def _row_id(value: object) -> bool:
    """An id from a URL that can name a row (anything else is "not found", never a 500)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_ROW_ID


TOTP_PREFIX = "totp:"


def french(exc: Refusal, fallback: str | None = None, *, keep: bool = False) -> Refusal:
    """The same refusal with a sentence for the patient (the operator's log line kept).
    `keep`: a sentence the core already wrote in French (`answer_rules`' "<Nom> a mis fin à
    vos échanges.") passes as it is."""
    text = (
        _FRENCH.get(exc.public)
        or (exc.public if keep else None)
        or fallback
        or _FALLBACK.get(exc.reason)
        or "Cette demande a été refusée."
    )
    return Refusal(exc.reason, text, exc.log)


def clean_subject(subject: str) -> str:
    """A Subject a patient typed, made safe for a header: controls (CR and LF first), format
    and line/paragraph separators become spaces, runs of blanks collapse, at most 200
    characters; `Re: (sans objet)` when nothing is left."""
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in (subject or "")[:2000])
    text = " ".join(text.split())[:MAX_SUBJECT].strip()
    return text or DEFAULT_SUBJECT


def clean_text(text: str) -> str:
    """The answer's text with one kind of line end and no control character but the tab."""
    text = (text or "").replace("\r\n", "\n").replace("\r", "\n")
    return "".join(c for c in text if c in "\n\t" or unicodedata.category(c) != "Cc")


def build_answer(
    *,
    patient_name: str,
    patient_address: str,
    professional: str,
    professional_name: str,
    subject: str,
    text: str,
    in_reply_to: str | None,
    references: Sequence[str],
    domain: str,
    now: datetime | None = None,
) -> tuple[bytes, str]:
    """The patient's answer as RFC 5322 bytes (CRLF, text/plain; charset=utf-8) and its
    Message-ID. Header values are built by the stdlib `email` package, which encodes
    non-ASCII names (RFC 2047) and refuses line breaks in them."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = Address(display_name=_one_line(patient_name), addr_spec=patient_address)
    msg["To"] = Address(display_name=_one_line(professional_name), addr_spec=professional)
    msg["Subject"] = clean_subject(subject)
    msg["Date"] = format_datetime(now or datetime.now(UTC))
    msgid = f"<{uuid.uuid4()}@{domain}>"
    msg["Message-ID"] = msgid
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = " ".join(references)
    msg.set_content(text, charset="utf-8")
    return msg.as_bytes(policy=SMTP), msgid


def bounded_references(ids: Sequence[str]) -> list[str]:
    """RFC 5322 3.6.4 References, bounded: the first id and the newest ones (as MUAs trim
    long threads), none longer than a header line can carry."""
    usable = [i for i in dict.fromkeys(ids) if 3 <= len(i) <= 250]
    if len(usable) <= MAX_REFERENCES:
        return usable
    return [usable[0], *usable[-(MAX_REFERENCES - 1) :]]


def _one_line(name: str) -> str:
    """A display name as one line of text (the directory's names are not ours to trust)."""
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in (name or "")[:400])
    return " ".join(text.split())[:MAX_SUBJECT]


def _strip_controls(text: str, limit: int) -> str:
    return "".join(c if c.isprintable() else " " for c in (text or "")[:limit])


class CorePortal:
    """`mss.services.PatientPortal` over the patient spaces, the sessions, the throttle,
    the mail access and the submission path."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        patients: PatientSpaces,
        submission: Delivery,
        mail: MailAccessService,
    ) -> None:
        self.settings = settings
        self._db = sessions
        self._patients = patients
        self._submission = submission
        self._mail = mail
        self._throttle = Throttle(settings, sessions)
        self._sessions = PortalSessions(settings, sessions)
        self._master: bytes | None = None
        self._master_lock = asyncio.Lock()

    # -- secrets -----------------------------------------------------------------------------

    async def _master_key(self) -> bytes:
        """The deployment's 32 random bytes, created once by whichever node comes first (an
        insert that yields to a concurrent one), then cached."""
        if self._master is not None:
            return self._master
        async with self._master_lock:
            if self._master is None:
                async with self._db() as s:
                    row = await s.get(PortalSecret, "master")
                    value = row.value if row is not None else None
                if value is None:
                    async with self._db() as s, s.begin():
                        stmt = insert_for(s)(PortalSecret).values(name="master", value=secrets.token_bytes(32))
                        await s.execute(stmt.on_conflict_do_nothing(index_elements=[PortalSecret.name]))
                    async with self._db() as s:
                        row = await s.get(PortalSecret, "master")
                        assert row is not None
                        value = row.value
                self._master = bytes(value)
        return self._master

    async def secret(self) -> bytes:
        """The CSRF key: derived from the master secret (never the master itself, which also
        keys the decoy salts)."""
        return hmac.new(await self._master_key(), _CSRF_LABEL, hashlib.sha256).digest()

    async def _decoy_secret(self, state: str) -> bytes:
        """One decoy key per pre-login step: with a single one, an unknown login would get
        the same salt from both steps while a real space never does, which tells them apart."""
        return hmac.new(await self._master_key(), _DECOY_LABEL + b"\x00" + state.encode(), hashlib.sha256).digest()

    # -- sign-in and activation -------------------------------------------------------------

    def _ins_or_none(self, login: str) -> str | None:
        try:
            return self._patients.ins_of(login[:MAX_LOGIN])
        except Refusal:
            return None

    async def _params(self, login: str, state: str) -> KeyRecord:
        """Real KDF parameters of a space in `state`, else the decoy: one primary-key read
        and one HMAC in every case, so neither the answer nor its cost tells them apart."""
        login = login if isinstance(login, str) else ""
        ins = self._ins_or_none(login)
        # Any string at all (lone surrogates from JSON included) has a decoy.
        typed = login[:MAX_LOGIN].encode("utf-8", "replace").decode("utf-8")
        key = ins or unicodedata.normalize("NFC", typed).strip().lower()
        decoy = patient_crypto.decoy_kdf_params(
            await self._decoy_secret(state), key, self.settings.patients.kdf_iterations
        ).to_json()
        async with self._db() as s:
            row = await s.get(PatientSpace, ins or "")
            usable = row is not None and row.state == state and (state != "pending" or bool(row.activation_hash))
            stored = row.key_record if usable and row is not None else None
        if stored:
            try:
                return patient_crypto.KdfParams.from_json(stored).to_json()
            except patient_crypto.PatientCryptoError:
                log.error("unreadable key record for ins=%s", ins)
        return decoy

    async def login_params(self, login: str) -> KeyRecord:
        return await self._params(login, "active")

    async def activation_params(self, login: str) -> KeyRecord:
        return await self._params(login, "pending")

    async def activation_record(self, login: str, activation_auth_key: bytes) -> KeyRecord:
        """The record wrapped under the activation code, once its proof checks; no change."""
        try:
            return await self._patients.check_activation(login[:MAX_LOGIN], activation_auth_key)  # type: ignore[return-value]
        except Refusal as exc:
            raise french(exc, BAD_ACTIVATION) from None

    async def activate(
        self, login: str, activation_auth_key: bytes, new_auth_key: bytes, record: Mapping[str, object]
    ) -> None:
        # The uniform check first: `PatientSpaces.activate` tells "already active" apart.
        await self.activation_record(login, activation_auth_key)
        try:
            await self._patients.activate(login[:MAX_LOGIN], activation_auth_key, new_auth_key, dict(record))
        except Refusal as exc:
            raise french(exc, BAD_ACTIVATION) from None

    async def authenticate(self, login: str, auth_key: bytes) -> Principal:
        try:
            return await self._patients.authenticate(login[:MAX_LOGIN], auth_key)
        except Refusal as exc:
            # The success is audited when the session opens (`patient.login`); a refusal here.
            ins = self._ins_or_none(login[:MAX_LOGIN])
            self._patients.audit.submit(
                "portal.login",
                actor=f"portal:{ins or '?'}",
                subject=f"patient:{ins}" if ins else "",
                outcome="refused",
                reason=exc.log,
            )
            raise Refusal(Reason.NOT_ALLOWED, BAD_LOGIN, exc.log) from None

    def _own(self, principal: Principal) -> str:
        try:
            return self._patients._own(principal)
        except Refusal as exc:
            raise french(exc) from None

    async def key_record(self, principal: Principal) -> KeyRecord:
        try:
            return await self._patients.key_record(self._own(principal))  # type: ignore[return-value]
        except Refusal as exc:
            raise french(exc) from None

    async def certificate(self, login: str) -> bytes:
        ins = self._ins_or_none(login if isinstance(login, str) else "")
        async with self._db() as s:
            row = await s.get(PatientSpace, ins) if ins else None
        if row is None or row.state not in ("pending", "active") or not row.certificate:
            raise Refusal(Reason.UNKNOWN_RECIPIENT, SPACE_CLOSED, f"certificate: no live space for {ins}")
        return bytes(row.certificate)

    async def password_record(self, principal: Principal, old_auth_key: bytes) -> KeyRecord:
        try:
            return await self._patients.check_password(principal, old_auth_key)  # type: ignore[return-value]
        except Refusal as exc:
            raise french(exc, BAD_PASSWORD) from None

    async def change_password(
        self,
        principal: Principal,
        old_auth_key: bytes,
        new_auth_key: bytes,
        record: Mapping[str, object],
        *,
        current_session: str | None = None,
    ) -> None:
        """A patient who changes their password may suspect a stolen session: every other
        session of the space ends with the old password (OWASP Session Management)."""
        try:
            await self._patients.change_password(principal, old_auth_key, new_auth_key, dict(record))
        except Refusal as exc:
            raise french(exc) from None
        await self._sessions.end_all(principal.identifier, keep=current_session)

    # -- second factor (RFC 6238) ------------------------------------------------------------

    async def _space(self, ins: str) -> PatientSpace:
        async with self._db() as s:
            row = await s.get(PatientSpace, ins)
        if row is None or row.state != "active":
            raise Refusal(Reason.MAILBOX_DISABLED, SPACE_CLOSED, f"portal on {ins}: not active")
        return row

    async def totp_required(self, principal: Principal) -> bool:
        return (await self._space(self._own(principal))).totp_secret is not None

    async def second_factor(self, principal: Principal, code: str) -> None:
        ins = self._own(principal)
        row = await self._space(ins)
        if row.totp_secret is None:
            raise Refusal(Reason.NOT_ALLOWED, TOTP_OFF, f"second factor without totp ins={ins}")
        code = code if isinstance(code, str) else ""
        if totp.looks_like_totp(code):
            step = totp.verify(row.totp_secret, code, last_step=row.totp_last_step)
            if step is not None:
                async with self._db() as s, s.begin():
                    # Conditional: of two nodes checking the same code at once, one wins.
                    done = await s.execute(
                        update(PatientSpace)
                        .where(
                            PatientSpace.ins == ins,
                            PatientSpace.totp_secret == row.totp_secret,
                            (PatientSpace.totp_last_step.is_(None)) | (PatientSpace.totp_last_step < step),
                        )
                        .values(totp_last_step=step)
                    )
                if done.rowcount == 1:
                    return
            self._patients.audit.submit(
                "portal.second_factor", actor=f"portal:{ins}", subject=f"patient:{ins}", outcome="refused"
            )
            raise Refusal(Reason.NOT_ALLOWED, BAD_CODE, f"totp code refused ins={ins}")
        stored = row.totp_recovery or "[]"
        hashes = json.loads(stored)
        index = totp.match_recovery_code(hashes, code)
        if index is not None:
            remaining = hashes[:index] + hashes[index + 1 :]
            async with self._db() as s, s.begin():
                done = await s.execute(
                    update(PatientSpace)
                    .where(PatientSpace.ins == ins, PatientSpace.totp_recovery == stored)
                    .values(totp_recovery=json.dumps(remaining))
                )
                if done.rowcount == 1:
                    PatientSpaces._journal(
                        s, ins, "patient", "", "recovery_code_used", f"{len(remaining)} codes restants"
                    )
                    await self._patients._audit(s, "patient.recovery_code_used", ins, "patient")
                    return
        self._patients.audit.submit(
            "portal.second_factor", actor=f"portal:{ins}", subject=f"patient:{ins}", outcome="refused"
        )
        raise Refusal(Reason.NOT_ALLOWED, BAD_CODE, f"recovery code refused ins={ins}")

    async def totp_begin(self, principal: Principal) -> TotpSetup:
        ins = self._own(principal)
        row = await self._space(ins)
        if row.totp_secret is not None:
            raise Refusal(Reason.NOT_ALLOWED, TOTP_ALREADY_ON, f"totp already on ins={ins}")
        secret = totp.new_secret()
        async with self._db() as s, s.begin():
            await s.execute(update(PatientSpace).where(PatientSpace.ins == ins).values(totp_pending=secret))
        uri = totp.provisioning_uri(secret, account=row.address, issuer=f"MSS {self.settings.domain}")
        return TotpSetup(secret=secret, uri=uri)

    async def totp_confirm(self, principal: Principal, code: str) -> list[str]:
        ins = self._own(principal)
        row = await self._space(ins)
        if row.totp_secret is not None:
            raise Refusal(Reason.NOT_ALLOWED, TOTP_ALREADY_ON, f"totp already on ins={ins}")
        pending = row.totp_pending
        if pending is None:
            raise Refusal(Reason.NOT_ALLOWED, TOTP_NOT_STARTED, f"totp confirm without setup ins={ins}")
        step = totp.verify(pending, code if isinstance(code, str) else "", last_step=None)
        if step is None:
            raise Refusal(Reason.NOT_ALLOWED, BAD_CODE, f"totp setup code refused ins={ins}")
        codes = totp.new_recovery_codes()
        hashes = totp.hash_recovery_codes(codes)
        async with self._db() as s, s.begin():
            done = await s.execute(
                update(PatientSpace)
                .where(
                    PatientSpace.ins == ins, PatientSpace.totp_pending == pending, PatientSpace.totp_secret.is_(None)
                )
                .values(totp_secret=pending, totp_pending=None, totp_last_step=step, totp_recovery=json.dumps(hashes))
            )
            if done.rowcount != 1:
                raise Refusal(Reason.NOT_ALLOWED, TOTP_NOT_STARTED, f"totp setup raced ins={ins}")
            PatientSpaces._journal(s, ins, "patient", "", "totp_enabled")
        return codes

    async def totp_disable(self, principal: Principal, code: str) -> None:
        """Needs a current code or a recovery code: a session left open is not enough."""
        await self.second_factor(principal, code)
        ins = self._own(principal)
        async with self._db() as s, s.begin():
            await s.execute(
                update(PatientSpace)
                .where(PatientSpace.ins == ins)
                .values(totp_secret=None, totp_pending=None, totp_last_step=None, totp_recovery=None)
            )
            PatientSpaces._journal(s, ins, "patient", "", "totp_disabled")

    # -- throttling --------------------------------------------------------------------------

    def _canonical(self, keys: Sequence[str]) -> list[str]:
        """`account:<login>` keys name the space, whichever form the login was typed in (an
        INS or its address, any case): otherwise alternating the forms would double the
        attempts an account allows."""
        out = []
        for key in keys:
            for prefix in (ACCOUNT_PREFIX, TOTP_PREFIX):
                if key.startswith(prefix):
                    login, bar, network = key[len(prefix) :].partition("|")
                    ins = self._ins_or_none(login)
                    key = prefix + ins + bar + network if ins else key
                    break
            out.append(key)
        return out

    async def throttle_attempt(self, keys: Sequence[str]) -> float:
        return await self._throttle.attempt(self._canonical(keys))

    async def throttle_wait(self, keys: Sequence[str]) -> float:
        return await self._throttle.wait(self._canonical(keys))

    async def throttle_failed(self, keys: Sequence[str]) -> None:
        await self._throttle.failed(self._canonical(keys))

    async def throttle_succeeded(self, keys: Sequence[str], reset: Sequence[str] = ()) -> None:
        await self._throttle.succeeded(self._canonical(keys), self._canonical(reset))

    # -- sessions ----------------------------------------------------------------------------

    @staticmethod
    def _record(state: SessionState) -> PortalSession:
        return PortalSession(
            state.principal, state.pending_totp, state.created_at, state.expires_at, state.handle, state.local_key
        )

    async def open_session(
        self, principal: Principal, *, pending_totp: bool, client: str, user_agent: str
    ) -> tuple[str, PortalSession]:
        ins = self._own(principal)
        await self._space(ins)
        sid, state = await self._sessions.open(
            principal, pending_totp=pending_totp, client=client, user_agent=user_agent
        )
        if not pending_totp:
            where = ", ".join(p for p in (truncated_client(client), _strip_controls(user_agent, 200).strip()) if p)
            await self._patients.note(ins, "patient", "", "login", where)
        return sid, self._record(state)

    async def session(self, session_id: str, *, touch: bool = True) -> PortalSession | None:
        state = await self._sessions.get(session_id, touch=touch)
        return self._record(state) if state is not None else None

    async def close_session(self, session_id: str) -> None:
        await self._sessions.close(session_id)

    # -- reading -----------------------------------------------------------------------------

    async def _kinds(self, professionals: Iterable[str]) -> dict[str, ProfessionalKind]:
        """ "etablissement" for a structure's mailbox (ORG, APP, CAB in the directory), else
        "professionnel": one indexed look-up per professional of the page."""
        out: dict[str, ProfessionalKind] = {}
        async with self._db() as s:
            directory = Directory(s)
            for address in sorted(set(professionals)):
                entry = await directory.resolve(address)
                out[address] = (
                    "etablissement" if entry is not None and entry.type in ORGANISATION_TYPES else "professionnel"
                )
        return out

    async def _unseen(
        self, principal: Principal, refs: Iterable[tuple[int | None, int | None]]
    ) -> tuple[Handle, dict[int, FolderInfo], dict[int, set[int]]]:
        """The patient's mailbox, its folders by id, and, per folder, the uids among `refs`
        that lack \\Seen: read through the mail access, one flag query per folder involved
        (a patient's incoming mail is all in INBOX), never one per message."""
        handle = await self._mail.open(principal)
        folders = {f.id: f for f in await handle.folders()}
        wanted: dict[int, set[int]] = {}
        for folder_id, uid in refs:
            if folder_id is not None and uid is not None and folder_id in folders:
                wanted.setdefault(folder_id, set()).add(uid)
        unseen: dict[int, set[int]] = {}
        for folder_id, uids in wanted.items():
            metas = await handle.messages(folders[folder_id])
            unseen[folder_id] = {m.uid for m in metas if m.uid in uids and _SEEN not in m.flags}
        return handle, folders, unseen

    async def inbox(self, principal: Principal, page: int) -> InboxPage:
        ins = self._own(principal)
        size = self.settings.portal.inbox_page_size
        async with self._db() as s:
            convs = (
                (
                    await s.execute(
                        select(Conversation)
                        .where(Conversation.ins == ins)
                        .order_by(Conversation.last_at.desc(), Conversation.id.desc())
                    )
                )
                .scalars()
                .all()
            )
            rows = (
                await s.execute(
                    select(
                        ConversationMessage.id,
                        ConversationMessage.conversation_id,
                        ConversationMessage.direction,
                        ConversationMessage.folder_id,
                        ConversationMessage.uid,
                    )
                    .join(Conversation, Conversation.id == ConversationMessage.conversation_id)
                    .where(Conversation.ins == ins)
                )
            ).all()
        _, _, unseen = await self._unseen(principal, ((r.folder_id, r.uid) for r in rows if r.direction == "in"))
        latest: dict[int, int] = {}
        unread: set[int] = set()
        for r in rows:
            latest[r.conversation_id] = max(latest.get(r.conversation_id, 0), r.id)
            if r.direction == "in" and r.folder_id is not None and r.uid in unseen.get(r.folder_id, ()):
                unread.add(r.conversation_id)
        total = len(convs)
        pages = max(1, math.ceil(total / size))
        page = min(max(page if isinstance(page, int) else 1, 1), pages)
        shown = convs[(page - 1) * size : page * size]
        kinds = await self._kinds(c.professional for c in shown)
        return InboxPage(
            conversations=[
                ConversationSummary(
                    id=c.id,
                    professional=c.professional,
                    professional_name=c.professional_name or c.professional,
                    professional_kind=kinds[c.professional],
                    last_at=as_utc(c.last_at),
                    closed_at=as_utc(c.closed_at) if c.closed_at else None,
                    unread=c.id in unread,
                    latest_message=latest.get(c.id, 0),
                )
                for c in shown
            ],
            page=page,
            pages=pages,
            total=total,
            unread=len(unread),
        )

    async def _conversation(self, principal: Principal, conversation_id: int) -> ConversationInfo:
        if not _row_id(conversation_id):
            raise Refusal(Reason.UNKNOWN_RECIPIENT, NO_CONVERSATION, "conversation id not a row id")
        try:
            return await self._patients.conversation(principal, conversation_id)
        except Refusal as exc:
            raise french(exc, NO_CONVERSATION) from None

    async def _answer_refused(self, principal: Principal, conversation_id: int) -> str | None:
        try:
            await self._patients.answer_rules(principal, conversation_id)
        except Refusal as exc:
            return french(exc, keep=True).public
        return None

    async def conversation(self, principal: Principal, conversation_id: int) -> ConversationView:
        ins = self._own(principal)
        info = await self._conversation(principal, conversation_id)
        async with self._db() as s:
            rows = (
                (
                    await s.execute(
                        select(ConversationMessage)
                        .where(ConversationMessage.conversation_id == info.id)
                        .order_by(ConversationMessage.id)
                    )
                )
                .scalars()
                .all()
            )
        handle, folders, unseen = await self._unseen(
            principal, ((r.folder_id, r.uid) for r in rows if r.direction == "in")
        )
        for folder_id, uids in unseen.items():
            if uids:
                await handle.set_flags(folders[folder_id], sorted(uids), {_SEEN}, "add")
        name = info.professional_name or info.professional
        await self._patients.note(ins, "patient", "", "conversation_read", name)
        kinds = await self._kinds([info.professional])
        items = [
            ConversationItem(
                id=r.id,
                direction="in" if r.direction == "in" else "out",
                at=as_utc(r.at),
                sender_name=name if r.direction == "in" else principal.display_name,
            )
            for r in rows
        ]
        summary = ConversationSummary(
            id=info.id,
            professional=info.professional,
            professional_name=name,
            professional_kind=kinds[info.professional],
            last_at=info.last_at,
            closed_at=info.closed_at,
            unread=False,
            latest_message=rows[-1].id if rows else 0,
        )
        return ConversationView(summary, items, await self._answer_refused(principal, info.id))

    async def message(self, principal: Principal, message_id: int) -> bytes:
        """The stored ciphertext (outer headers + CMS) from the patient's own mailbox. Not
        journaled (see the module docstring): `conversation()` is."""
        ins = self._own(principal)
        if not _row_id(message_id):
            raise Refusal(Reason.UNKNOWN_RECIPIENT, NO_MESSAGE, "message id not a row id")
        async with self._db() as s:
            found = (
                await s.execute(
                    select(ConversationMessage.folder_id, ConversationMessage.uid)
                    .join(Conversation, Conversation.id == ConversationMessage.conversation_id)
                    .where(ConversationMessage.id == message_id, Conversation.ins == ins)
                )
            ).first()
        if found is None or found.folder_id is None or found.uid is None:
            raise Refusal(Reason.UNKNOWN_RECIPIENT, NO_MESSAGE, f"message {message_id} not of ins={ins}")
        handle = await self._mail.open(principal)
        folder = {f.id: f for f in await handle.folders()}.get(found.folder_id)
        content = await handle.content(folder, [found.uid]) if folder is not None else {}
        data = content.get(found.uid)
        if data is None:
            raise Refusal(Reason.UNKNOWN_RECIPIENT, NO_MESSAGE, f"message {message_id} no longer stored")
        return data

    # -- answering ---------------------------------------------------------------------------

    async def answer(self, principal: Principal, conversation_id: int, subject: str, text: str) -> None:
        ins = self._own(principal)
        await self._conversation(principal, conversation_id)
        try:
            conv = await self._patients.answer_rules(principal, conversation_id)
        except Refusal as exc:
            raise french(exc, keep=True) from None
        body = clean_text(text if isinstance(text, str) else "")
        limit = self.settings.portal.answer_max_chars
        if not body.strip():
            raise Refusal(Reason.MALFORMED_MESSAGE, EMPTY_ANSWER, f"empty answer ins={ins}")
        if len(body) > limit:
            raise Refusal(Reason.MALFORMED_MESSAGE, LONG_ANSWER.format(n=f"{limit:_}".replace("_", " ")))
        async with self._db() as s:
            thread = (
                await s.execute(
                    select(ConversationMessage.message_id, ConversationMessage.direction)
                    .where(ConversationMessage.conversation_id == conv.id)
                    .order_by(ConversationMessage.id)
                )
            ).all()
        incoming = [m for m, d in thread if d == "in" and m]
        address = principal.default_mailbox or self._patients.address_of(ins)
        try:
            raw, _ = build_answer(
                patient_name=principal.display_name if principal.display_name != ins else "",
                patient_address=address,
                professional=conv.professional,
                professional_name=conv.professional_name,
                subject=subject if isinstance(subject, str) else "",
                text=body,
                in_reply_to=incoming[-1] if incoming else None,
                references=bounded_references([m for m, _ in thread if m]),
                domain=self.settings.patient_domain,
            )
        except (ValueError, TypeError, IndexError) as exc:  # an address the email package refuses
            raise Refusal(Reason.CANNOT, SEND_FAILED, f"answer not buildable ins={ins}: {exc}") from None
        tx = self._submission.begin(principal, answering=conv)
        try:
            tx.mail_from(address)
            await tx.add_recipient(conv.professional)
            await tx.deliver(raw)
        except Refusal as exc:
            log.warning("patient answer refused ins=%s conversation=%s: %s", ins, conv.id, exc.log)
            raise Refusal(exc.reason, SEND_FAILED, exc.log) from None
        await self._patients.note(ins, "patient", "", "message_sent", conv.professional_name or conv.professional)

    async def export(self, principal: Principal) -> list[ExportItem]:
        ins = self._own(principal)
        async with self._db() as s:
            rows = (
                await s.execute(
                    select(
                        ConversationMessage.id,
                        ConversationMessage.conversation_id,
                        ConversationMessage.direction,
                        ConversationMessage.at,
                    )
                    .join(Conversation, Conversation.id == ConversationMessage.conversation_id)
                    .where(
                        Conversation.ins == ins,
                        ConversationMessage.folder_id.is_not(None),
                        ConversationMessage.uid.is_not(None),
                    )
                    .order_by(ConversationMessage.conversation_id, ConversationMessage.id)
                )
            ).all()
        return [ExportItem(r.id, r.conversation_id, "in" if r.direction == "in" else "out", as_utc(r.at)) for r in rows]

    # -- settings ----------------------------------------------------------------------------

    async def me(self, principal: Principal) -> PatientView:
        ins = self._own(principal)
        row = await self._space(ins)
        record = await self._patients.get(ins)
        assert record is not None
        async with self._db() as s:
            pros = (
                await s.execute(
                    select(Conversation.professional, Conversation.professional_name)
                    .where(Conversation.ins == ins)
                    .order_by(Conversation.last_at.desc())
                )
            ).all()
        professionals: dict[str, str] = {}
        for address, name in pros:
            professionals.setdefault(address, name or address)
        return PatientView(
            ins=record.ins,
            address=record.address,
            name=record.name or record.ins,
            email=record.email,
            notify=record.notify,
            totp=row.totp_secret is not None,
            blocked=record.blocked,
            professionals=tuple(professionals.items()),
        )

    async def set_notify(self, principal: Principal, on: bool) -> None:
        try:
            await self._patients.set_notify(self._own(principal), bool(on), by="patient")
        except Refusal as exc:
            raise french(exc) from None

    def _professional(self, professional: str) -> str:
        value = (professional if isinstance(professional, str) else "").strip().lower()
        if len(value) > 320 or not _PROFESSIONAL.fullmatch(value) or self._patients.is_patient_address(value):
            raise Refusal(Reason.BAD_ADDRESS, BAD_PROFESSIONAL, f"block: not a professional address {value[:80]!r}")
        return value

    async def block(self, principal: Principal, professional: str) -> None:
        try:
            await self._patients.block(self._own(principal), self._professional(professional), by="patient")
        except Refusal as exc:
            raise french(exc) from None

    async def unblock(self, principal: Principal, professional: str) -> None:
        try:
            await self._patients.unblock(self._own(principal), self._professional(professional), by="patient")
        except Refusal as exc:
            raise french(exc) from None

    async def journal(self, principal: Principal) -> list[JournalLine]:
        entries = await self._patients.journal(self._own(principal))
        return [JournalLine(e.at, e.actor_kind, e.actor, e.action, e.detail) for e in reversed(entries)]

    async def note(self, principal: Principal, action: str, detail: str = "") -> None:
        ins = self._own(principal)
        action = _strip_controls(action, _MAX_NOTE_ACTION).strip() or "note"
        await self._patients.note(ins, "patient", "", action, _strip_controls(detail, _MAX_NOTE_DETAIL))

    async def close(self, principal: Principal) -> None:
        ins = self._own(principal)
        try:
            await self._patients.close(ins, actor_kind="patient")
        except Refusal as exc:
            raise french(exc) from None
        ended = await self._sessions.end_all(ins)
        log.info("patient closed their space ins=%s sessions_ended=%d", ins, ended)
