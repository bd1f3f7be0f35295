"""The core as the front ends see it: small `typing.Protocol` interfaces, nothing else.

`smtp/`, `imap/` (and the web front end) are typed against these, never against `Core`, the
store or the database (DESIGN.md, "Core services"). Every object a front end obtains here is
already bound to an authenticated `Principal` and authorised for it: a `MailboxHandle` can
only be had for a mailbox the principal may use, and it only accepts folders it handed out.

Refusals come back as `mss.refusals.Refusal`; each front end maps the reason to its replies.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Literal, Protocol, TypeAlias

from mss.config import Settings
from mss.events import FolderWatch  # re-exported: what `MailboxHandle.watch` gives
from mss.principal import Principal
from mss.records import (
    FlagMode,
    FolderInfo,
    MailDsn,
    MessageMeta,
    OuterHeaders,
    Quota,
    RcptDsn,
    StoredRef,
    TraceInfo,
)
from mss.rights import Access

# -- who the client is --------------------------------------------------------------------


@dataclass(frozen=True)
class ClientConnection:
    """What a front end knows of a client when it asks the core who that client is."""

    protocol: Literal["smtp", "imap", "http"]
    #: `ip:port` or `[ip6]:port`, from `mss.peers.format_peer`.
    peer: str
    #: The TLS client certificate (leaf, DER), None when the client sent none.
    certificate: bytes | None


@dataclass(frozen=True)
class Challenge:
    """The server's next SASL challenge (raw bytes; the front end base64-encodes them:
    `334 <base64>` in SMTP, RFC 4954 4; `+ <base64>` in IMAP, RFC 9051 6.2.2)."""

    data: bytes = b""


@dataclass(frozen=True)
class Success:
    """The exchange authenticated `principal` (its `default_mailbox` is never None)."""

    principal: Principal


FailureKind = Literal["malformed", "cancelled", "refused", "unauthorized", "unavailable", "unsupported", "throttled"]


@dataclass(frozen=True)
class Failure:
    """The exchange failed; nothing was authenticated.

    `kind`: `malformed` (a protocol error, nothing was checked), `cancelled` (the client sent
    "*"), `refused` (credentials refused: counted), `unauthorized` (valid credentials, but not
    for the identity asked: counted), `unavailable` (our fault: try later), `unsupported`
    (unknown mechanism), `throttled` (too many failures from this address or for this
    mailbox, across connections: nothing was checked, try later; counted). `public` is safe
    for the wire. `close` says the connection must end now (too many refused attempts).
    """

    kind: FailureKind
    public: str
    close: bool = False


SaslStep = Challenge | Success | Failure


class SaslExchange(Protocol):
    """One AUTHENTICATE / AUTH exchange (RFC 4422 3), sans-IO: lines in, steps out.

    The front end calls `step` with the initial response (or None), then with each line the
    client sends after a `Challenge`, until it gets a `Success` or a `Failure`; it never calls
    `step` again after that. The outcome is already counted and logged by the core.
    """

    mechanism: str

    async def step(self, response: str | None) -> SaslStep:
        """Feed the client's next response line (base64, "=" for empty, "*" to cancel;
        None for "no initial response"); get the next challenge or the outcome."""
        ...


class Authentication(Protocol):
    """One connection's authentication: its exchanges, and failures counted across them.

    Every result is logged once, here in the core (peer, protocol, mechanism, identity,
    reason; never a password or a token): front ends do not log authentication results.
    """

    @property
    def mechanisms(self) -> tuple[str, ...]:
        """The SASL mechanisms offered on this connection, in the order to advertise them."""
        ...

    @property
    def failures(self) -> int:
        """Refused attempts so far on this connection (`Failure.close` once the limit is hit)."""
        ...

    def exchange(self, mechanism: str) -> SaslExchange:
        """A new exchange; an unknown mechanism's first step is a Failure("unsupported")."""
        ...

    async def password(self, username: str, password: str, *, mechanism: str = "LOGIN") -> Success | Failure:
        """A user name and app password outside SASL (IMAP LOGIN, RFC 9051 6.2.3)."""
        ...

    async def certificate(self) -> Success | Failure:
        """The principal of the connection's certificate alone (SMTP's implicit EXTERNAL).
        Not counted as an attempt: the client asked for nothing yet."""
        ...


class Credentials(Protocol):
    """Turns what a client proves into a `Principal` (certificate, app password, token)."""

    def authentication(self, client: ClientConnection) -> Authentication:
        """A new per-connection `Authentication` (after TLS: a new connection for the core)."""
        ...

    async def operator(self, client: ClientConnection) -> Success | Failure:
        """Another operator of the trust space on the `mta` listener: its SERV certificate,
        valid, not revoked, naming at least one whitelisted domain (`Principal.domains`)."""
        ...


# -- sending --------------------------------------------------------------------------------


class Recipient(Protocol):
    """A recipient the core accepted, resolved once at RCPT and carried to delivery."""

    @property
    def address(self) -> str: ...


@dataclass(frozen=True)
class DeliveryResult:
    """What a delivery stored: the local copies, and the ids of the relay queue entries
    written in the same transaction for other operators' recipients."""

    stored: tuple[StoredRef, ...]
    queued: tuple[int, ...] = ()
    #: Recipients accepted at RCPT whose mailbox had no room for the message at DATA: not
    #: delivered, their sender told by a failure DSN (RFC 3461; status 5.2.2).
    over_quota: tuple[str, ...] = ()


class SubmissionTransaction(Protocol):
    """One mail transaction for one principal (RFC 5321 3.3): sender, recipients, content."""

    def mail_from(self, address: str, dsn: MailDsn | None = None, size: int | None = None) -> None:
        """Raises Refusal when the principal may not send as `address` (`""`, the null
        reverse-path, only from another operator). `dsn`: RET and ENVID (RFC 3461 4.3, 4.4);
        `size`: the SIZE the client declared (RFC 1870), if any."""
        ...

    async def add_recipient(self, address: str, dsn: RcptDsn | None = None) -> Recipient:
        """Resolve and check one recipient; raises Refusal (`OVER_QUOTA` when its mailbox is
        full, or has no room for the declared SIZE). Carried to `deliver` with its NOTIFY
        and ORCPT (RFC 3461 4.1, 4.2)."""
        ...

    async def deliver(self, raw: bytes) -> DeliveryResult:
        """Parse once, check, encrypt for every recipient, store durably; returns only once
        the transaction holding the message is committed (the SMTP 250 waits for it). A
        local recipient whose mailbox has no room for the message is left out and its
        sender gets a failure DSN (`DeliveryResult.over_quota`); `OVER_QUOTA` when that
        leaves nobody to deliver to."""
        ...


class Submission(Protocol):
    """The one way mail enters: SMTP submission, and later the relay's inbound side and the
    patient portal's answers."""

    @property
    def max_message_size(self) -> int: ...

    @property
    def max_recipients(self) -> int: ...

    def begin(self, principal: Principal, *, trace: TraceInfo | None = None) -> SubmissionTransaction:
        """`trace`: the hop the message comes by, for its `Received:` field (RFC 5321 4.4)."""
        ...


# -- relaying to other operators (the outbound side of the trust space) ---------------------


@dataclass(frozen=True)
class RelayRoute:
    """Where a domain's mail goes: a static route (`[relay] routes`), an MX host, or the
    domain itself when it has no MX (RFC 5321 5.1, implicit MX)."""

    host: str
    port: int = 25
    source: Literal["static", "mx", "a"] = "static"


@dataclass(frozen=True)
class RelayRecipient:
    address: str
    dsn: RcptDsn | None = None


@dataclass(frozen=True)
class RelayReply:
    """One SMTP reply of the peer: code and text (the enhanced code first when it sent one)."""

    code: int
    text: str

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    @property
    def accepted(self) -> bool:
        return 200 <= self.code < 300

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@dataclass(frozen=True)
class SendResult:
    """One transaction with a peer: each recipient's outcome (its RCPT reply when refused
    there, else the reply to DATA), whether the peer offered DSN (RFC 3461 5.2: it then
    reports final delivery itself), and the host that answered."""

    replies: Mapping[str, RelayReply]
    peer_offers_dsn: bool
    remote_host: str


class RelayUnavailable(Exception):
    """The peer could not be reached or refused the whole session (connection, TLS, a 4xx
    or 5xx to EHLO or MAIL). `permanent`: retrying cannot help (5xx to MAIL, null MX)."""

    def __init__(self, reason: str, *, permanent: bool = False, reply: RelayReply | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.reply = reply


class RelayTransport(Protocol):
    """Sends one queued message to one route (implemented by `smtp.relay`)."""

    async def send(
        self,
        route: RelayRoute,
        *,
        mail_from: str,
        recipients: Sequence[RelayRecipient],
        content: bytes,
        dsn: MailDsn | None = None,
    ) -> SendResult:
        """Raises `RelayUnavailable` when no recipient could be tried on this route."""
        ...


# -- reading and filing ---------------------------------------------------------------------


@dataclass(frozen=True)
class FolderState:
    """What changes whenever a folder's messages change (RFC 7162 3.1): one cheap read tells
    a session whether it must reload."""

    uidnext: int
    highestmodseq: int
    #: The first UID no session has claimed as \\Recent (RFC 3501 2.3.2): nothing to claim
    #: when it is UIDNEXT.
    recent_uid: int = 1


#: One message to append: its bytes, its flags, its internal date (None: now).
AppendItem: TypeAlias = "tuple[bytes, Iterable[str], datetime | None]"
#: Most messages one `MailboxHandle.append_many` stores (IMAP MULTIAPPEND, RFC 3502).
MAX_APPEND_MESSAGES = 1000
#: How long (seconds) a handle trusts a member's RFC 4314 rights read from the directory
#: before reading them again (`mss.mailaccess`): the bound on how late a `mss mailbox revoke`
#: or `grant` reaches an open session. SELECT, EXAMINE, STATUS, APPEND and a COPY
#: destination always read them again.
RIGHTS_TTL = 5.0


class MailboxHandle(Protocol):
    """One mailbox (BAL) opened for one principal. Every method is already authorised; the
    folders it takes are the `FolderInfo` objects it handed out.

    Each method checks the principal's RFC 4314 rights (`rights`) as RFC 4314 4 asks (LIST
    "l"; SELECT, FETCH, SEARCH, STATUS "r"; STORE \\Seen "s", \\Deleted "t", other flags
    "w"; APPEND and COPY into "i"; EXPUNGE "e"; CREATE "k"; DELETE, RENAME "x"): a missing
    one is `Refusal(NOT_ALLOWED)`, whichever front end asks."""

    @property
    def address(self) -> str: ...

    @property
    def principal(self) -> Principal: ...

    @property
    def rights(self) -> str:
        """The principal's RFC 4314 rights letters on this mailbox (`mss.rights`): every
        right but "a" for an owner, the membership's for a member of a shared mailbox."""
        ...

    @property
    def shared(self) -> bool:
        """Whether the principal reads the mailbox as one of its members: \\Seen and
        subscriptions are then its own (RFC 4314 4), the other flags the mailbox's."""
        ...

    def allowed_flags(self, flags: Iterable[str]) -> frozenset[str]:
        """The flags among `flags` the principal's rights let it change (RFC 4314 4)."""
        ...

    async def copy_to(
        self, folder: FolderInfo, uids: Sequence[int], other: MailboxHandle, dest: FolderInfo, *, move: bool = False
    ) -> list[tuple[int, int]]:
        """COPY (or MOVE) into a folder of another mailbox the same principal opened: the
        stored ciphertext as it is (readable by whoever could read it before, E2E by
        design); "r" here (and "t", "e" to move), "i" there; the destination's quota."""
        ...

    async def folders(self) -> list[FolderInfo]: ...

    async def folder(self, name: str) -> FolderInfo | None:
        """The folder with its message and unseen counts, None if it does not exist."""
        ...

    async def create_folder(self, name: str, special_use: str | None = None) -> FolderInfo:
        """`special_use` (RFC 6154, e.g. "\\Drafts"): refused when another folder has it."""
        ...

    async def delete_folder(self, name: str) -> None: ...

    async def rename_folder(self, old: str, new: str) -> None:
        """RFC 9051 6.3.6: the folder and its inferiors, in one transaction."""
        ...

    async def subscribe(self, name: str, subscribed: bool) -> None: ...

    async def folder_state(self, folder: FolderInfo) -> FolderState | None: ...

    async def claim_recent(self, folder: FolderInfo) -> tuple[int, int]:
        """Take the folder's \\Recent messages for this session (RFC 3501 2.3.2): the UIDs
        recent to it, as [first, end); from then on no other session sees those as recent."""
        ...

    async def messages(self, folder: FolderInfo, known: FolderState | None = None) -> list[MessageMeta]:
        """The folder's messages in UID order; `known` is the state just read, if any (the
        core then skips its own read when its cached list is for that state)."""
        ...

    async def headers(self, folder: FolderInfo, uids: Sequence[int]) -> dict[int, OuterHeaders]: ...

    async def content(self, folder: FolderInfo, uids: Sequence[int]) -> dict[int, bytes]: ...

    async def structures(self, folder: FolderInfo, uids: Sequence[int]) -> dict[int, bytes]:
        """What the front end derived from these messages' clear structure and asked the
        core to keep (`keep_structures`); messages without are left out."""
        ...

    async def keep_structures(self, folder: FolderInfo, structures: dict[int, bytes]) -> None:
        """Keep derived structure (an index, opaque to the core), so it is derived once."""
        ...

    async def set_flags(
        self, folder: FolderInfo, uids: Sequence[int], flags: Iterable[str], mode: FlagMode
    ) -> list[MessageMeta]: ...

    async def set_flags_unchanged_since(
        self, folder: FolderInfo, uids: Sequence[int], flags: Iterable[str], mode: FlagMode, unchanged_since: int
    ) -> tuple[list[MessageMeta], list[int]]:
        """RFC 7162 3.1.3 conditional STORE: the messages changed (or already as asked),
        and the UIDs left alone because their MODSEQ is above `unchanged_since`."""
        ...

    async def expunge(self, folder: FolderInfo, uids: Sequence[int] | None = None) -> list[int]: ...

    async def vanished(self, folder: FolderInfo, since: int) -> list[int]:
        """UIDs expunged by a change whose MODSEQ is above `since` (RFC 7162 3.2.5.1)."""
        ...

    async def copy(self, folder: FolderInfo, uids: Sequence[int], dest: FolderInfo) -> list[tuple[int, int]]:
        """The copies count against the quota: `OVER_QUOTA`, nothing copied, when they do not fit."""
        ...

    async def move(self, folder: FolderInfo, uids: Sequence[int], dest: FolderInfo) -> list[tuple[int, int]]: ...

    async def append(
        self, folder: str, raw: bytes, flags: Iterable[str] = (), internaldate: datetime | None = None
    ) -> StoredRef:
        """Encrypt to the mailbox's keys, then store (RFC 9051 6.3.12); `OVER_QUOTA` when
        it does not fit the mailbox's quota."""
        ...

    async def quota(self) -> Quota:
        """The mailbox's usage and limits: its one quota root (IMAP QUOTA, RFC 9208). Only
        the operator changes the limits (`mss mailbox quota`)."""
        ...

    async def append_many(self, folder: str, messages: Sequence[AppendItem]) -> list[StoredRef]:
        """Several messages into one folder, all or none (RFC 3502 3, MULTIAPPEND): each is
        checked and encrypted first, then all are stored in one transaction, with
        consecutive UIDs in the order given. Any refusal (a missing folder, a message over
        the size limit or malformed, more than `MAX_APPEND_MESSAGES`) stores nothing."""
        ...

    def watch(self, folder: FolderInfo) -> AbstractContextManager[FolderWatch]: ...


class MailboxRights(Protocol):
    """RFC 4314 rights of principals on mailboxes (`mss.rights.DirectoryRights`)."""

    async def access(self, principal: Principal, mailbox: str) -> Access:
        """The principal's rights on `mailbox` and whose \\Seen it sees; no rights
        (`Access("")`) when it may not use the mailbox."""
        ...

    async def shared(self, principal: Principal) -> dict[str, Access]:
        """The shared (ORG) mailboxes a professional is a member of with "l", by address;
        none once narrowed by an authorization identity."""
        ...


class MailAccess(Protocol):
    def mailboxes(self, principal: Principal) -> list[str]: ...

    async def shared(self, principal: Principal) -> list[str]:
        """The shared mailboxes the principal lists in its shared namespace (IMAP
        NAMESPACE, RFC 2342): the ORG mailboxes it is a member of with "l"."""
        ...

    async def open(self, principal: Principal, mailbox: str | None = None) -> MailboxHandle:
        """The principal's mailbox (its default one when None); Refusal(NOT_ALLOWED) when the
        principal may not use it, whatever the front end asking."""
        ...


# -- the directory, as the public sees it ---------------------------------------------------

#: A JSON document as the core hands it out (FHIR resources, Bundles, OperationOutcomes).
JsonValue: TypeAlias = "str | int | float | bool | list[JsonValue] | dict[str, JsonValue] | None"
JsonObject: TypeAlias = "dict[str, JsonValue]"

MailboxType = Literal["PER", "ORG", "APP", "CAB"]
MAILBOX_TYPES: tuple[MailboxType, ...] = ("PER", "ORG", "APP", "CAB")
FhirResourceType = Literal["Practitioner", "PractitionerRole", "Organization"]
FHIR_RESOURCE_TYPES: tuple[FhirResourceType, ...] = ("Practitioner", "PractitionerRole", "Organization")


@dataclass(frozen=True)
class PublishedMailbox:
    """What a member of the public may see of a mailbox: never a red-listed one (the core
    leaves those out), never its members, certificates or red-list flag."""

    address: str
    type: str
    idnat: str = ""
    structure_id: str = ""
    display_name: str = ""
    civility: str = ""
    last_name: str = ""
    first_name: str = ""
    profession_code: str = ""
    profession_label: str = ""
    specialty_code: str = ""
    specialty_label: str = ""
    service: str = ""
    organisation: str = ""
    postcode: str = ""
    city: str = ""
    department: str = ""
    dematerialisation: bool = False

    def to_json(self) -> dict[str, str | bool]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class DirectorySearch:
    """Criteria of a directory search; every one given must match (None: not a criterion).

    `name`: accent- and case-insensitive prefix; `profession`, `specialty`: a code or the
    exact label; `postcode`: a prefix; `department`: a code; `type`: PER, ORG, APP or CAB.
    """

    name: str | None = None
    profession: str | None = None
    specialty: str | None = None
    postcode: str | None = None
    department: str | None = None
    type: str | None = None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


class DirectoryQueryError(ValueError):
    """A directory query refused as asked (no criterion, an unknown type or FHIR modifier);
    its message is safe to show the client (HTTP 400)."""


class Directory(Protocol):
    """The read-only directory of mailboxes (national and this operator's), as published:
    red-listed mailboxes are never returned, counted or matched, whatever the query."""

    async def resolve(self, address: str) -> PublishedMailbox | None:
        """The mailbox at `address` (case-insensitive); None when unknown or red-listed."""
        ...

    async def search(self, criteria: DirectorySearch, *, limit: int = 50) -> list[PublishedMailbox]:
        """Mailboxes matching every criterion, by name; `limit` is clamped to 1..200.
        Raises DirectoryQueryError with no criterion (the directory is never dumped) or an
        unknown type."""
        ...

    def fhir_capabilities(self, base: str) -> JsonObject:
        """The FHIR R4 CapabilityStatement of the read-only face served at `base`."""
        ...

    async def fhir_search(
        self, resource: FhirResourceType, params: Mapping[str, Sequence[str]], *, base: str, self_url: str
    ) -> JsonObject:
        """A FHIR searchset Bundle for `params` (the query's names, modifiers included, to their
        values); raises DirectoryQueryError for a search it does not support."""
        ...

    async def fhir_read(self, resource: FhirResourceType, rid: str) -> JsonObject | None:
        """The resource with id `rid`, None when there is none."""
        ...


# -- what each front end is given -----------------------------------------------------------


class SmtpServices(Protocol):
    """What the SMTP front end is given by `mss serve`."""

    @property
    def settings(self) -> Settings: ...

    @property
    def credentials(self) -> Credentials: ...

    @property
    def submission(self) -> Submission: ...

    def server_ssl_context(self) -> ssl.SSLContext: ...


class ImapServices(Protocol):
    """What the IMAP front end is given by `mss serve`."""

    @property
    def settings(self) -> Settings: ...

    @property
    def credentials(self) -> Credentials: ...

    @property
    def mail(self) -> MailAccess: ...

    def server_ssl_context(self) -> ssl.SSLContext: ...


class WebServices(Protocol):
    """What the web front end (`web.app.create_app`) is given by `mss serve`."""

    @property
    def settings(self) -> Settings: ...

    @property
    def directory(self) -> Directory: ...

    @property
    def portal(self) -> PatientPortal: ...

    async def metrics_exposition(self) -> bytes:
        """The node's Prometheus metrics in the text format (`GET /metrics`): with several
        worker processes, every worker's, whichever worker takes the scrape."""
        ...


# -- the patient portal ---------------------------------------------------------------------

#: A JSON object as the portal's API hands it to the browser (KDF parameters, key records).
KeyRecord: TypeAlias = "dict[str, str | int]"
ProfessionalKind = Literal["professionnel", "etablissement"]


@dataclass(frozen=True)
class PortalSession:
    """A server-side portal session. The cookie carries a random id; the core keeps only its
    hash. `pending_totp`: the password was right, the second factor is still to come (such a
    session reaches nothing but `PatientPortal.second_factor`)."""

    principal: Principal
    pending_totp: bool
    created_at: datetime
    expires_at: datetime
    #: Key of this session for CSRF tokens and the like (a hash of the id, never the id).
    handle: str
    #: The session key K_s: 32 random bytes made with the session and kept only in its row.
    #: The browser wraps the session's private key under it in IndexedDB
    #: (docs/patient-keys.md 4), so that copy is useless once the session is gone. Secret:
    #: handed only to the session's own browser, never logged.
    local_key: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class ConversationSummary:
    """One line of the inbox: only what the server knows (the subject is inside the mail)."""

    id: int
    professional: str
    professional_name: str
    professional_kind: ProfessionalKind
    last_at: datetime
    closed_at: datetime | None
    unread: bool
    #: The conversation's newest message (`ConversationItem.id`), whose subject the page shows.
    latest_message: int


@dataclass(frozen=True)
class InboxPage:
    conversations: list[ConversationSummary]
    page: int
    pages: int
    total: int
    unread: int


@dataclass(frozen=True)
class ConversationItem:
    id: int
    direction: Literal["in", "out"]
    at: datetime
    sender_name: str


@dataclass(frozen=True)
class ConversationView:
    summary: ConversationSummary
    items: list[ConversationItem]
    #: None when the patient may answer; else the sentence that says why not.
    answer_refused: str | None


@dataclass(frozen=True)
class ExportItem:
    message: int
    conversation: int
    direction: Literal["in", "out"]
    at: datetime


@dataclass(frozen=True)
class TotpSetup:
    secret: str  # base32, for manual entry
    uri: str  # otpauth:// (RFC 6238 key URI), for a QR code


@dataclass(frozen=True)
class JournalLine:
    at: datetime
    actor_kind: str  # patient, professional, operator, system
    actor: str
    action: str
    detail: str


@dataclass(frozen=True)
class PatientView:
    """The signed-in patient as the settings page shows them."""

    ins: str
    address: str
    name: str
    email: str
    notify: bool
    totp: bool
    blocked: tuple[str, ...]
    #: Professionals of the patient's conversations (address, name), for "block".
    professionals: tuple[tuple[str, str], ...]


class PatientPortal(Protocol):
    """Everything the portal does, authorised in the core (DESIGN.md "Patient space").

    Logins are an INS or a patient address. Auth keys are the 32 bytes the browser derives
    (`docs/patient-keys.md`); the server never sees a password. Every method taking a
    principal acts only on that patient's own space: another patient's conversation or
    message id is `Refusal(UNKNOWN_RECIPIENT)` ("not found"). Failures are `Refusal`s whose
    text is a French sentence fit for the patient.
    """

    # sign-in, activation, second factor
    async def login_params(self, login: str) -> KeyRecord:
        """KDF parameters of an active space's password record; a stable decoy otherwise."""
        ...

    async def activation_params(self, login: str) -> KeyRecord:
        """KDF parameters of a pending space's activation-code record; a decoy otherwise."""
        ...

    async def activation_record(self, login: str, activation_auth_key: bytes) -> KeyRecord: ...

    async def activate(
        self, login: str, activation_auth_key: bytes, new_auth_key: bytes, record: Mapping[str, object]
    ) -> None: ...

    async def authenticate(self, login: str, auth_key: bytes) -> Principal: ...

    async def totp_required(self, principal: Principal) -> bool: ...

    async def second_factor(self, principal: Principal, code: str) -> None:
        """A TOTP code (RFC 6238, one step either side, never twice) or an unused recovery
        code (then spent); Refusal(NOT_ALLOWED) otherwise."""
        ...

    async def key_record(self, principal: Principal) -> KeyRecord: ...

    async def certificate(self, login: str) -> bytes:
        """The DER certificate of the pending or active space of `login` (an INS or patient
        address), which the browser checks the unwrapped key against; Refusal otherwise.
        It names the patient: hand it out only after a proof (auth key, code) checked."""
        ...

    async def password_record(self, principal: Principal, old_auth_key: bytes) -> KeyRecord: ...

    async def change_password(
        self,
        principal: Principal,
        old_auth_key: bytes,
        new_auth_key: bytes,
        record: Mapping[str, object],
        *,
        current_session: str | None = None,
    ) -> None:
        """Re-wrapped key and new auth key; every session but `current_session` ends."""
        ...

    # throttling (per account, account and network, second factor, network; with back-off)
    async def throttle_attempt(self, keys: Sequence[str]) -> float:
        """Reserve one attempt under these keys before checking a secret: 0 when it may go
        on (it counts as a failure until `throttle_succeeded`), else the seconds to wait.
        Atomic, so parallel guesses cannot all pass before a failure is counted."""
        ...

    async def throttle_wait(self, keys: Sequence[str]) -> float:
        """Seconds before another attempt under these keys is allowed (0: now)."""
        ...

    async def throttle_failed(self, keys: Sequence[str]) -> None: ...

    async def throttle_succeeded(self, keys: Sequence[str], reset: Sequence[str] = ()) -> None:
        """The attempt reserved under `keys` succeeded: refund it; forget the `reset` keys."""
        ...

    # sessions
    async def open_session(
        self, principal: Principal, *, pending_totp: bool, client: str, user_agent: str
    ) -> tuple[str, PortalSession]:
        """A new session (its cookie id, and the session): at login, and again after TOTP."""
        ...

    async def session(self, session_id: str, *, touch: bool = True) -> PortalSession | None:
        """The live session for a cookie id, its idle expiry pushed back (not when `touch` is
        false: a status check is not activity); None when gone."""
        ...

    async def close_session(self, session_id: str) -> None: ...

    async def secret(self) -> bytes:
        """This deployment's key for CSRF tokens (shared by every node)."""
        ...

    # reading and answering
    async def inbox(self, principal: Principal, page: int) -> InboxPage: ...

    async def conversation(self, principal: Principal, conversation_id: int) -> ConversationView:
        """The conversation, its messages in order; its incoming messages become seen."""
        ...

    async def message(self, principal: Principal, message_id: int) -> bytes:
        """The stored (encrypted) message, journaled as read."""
        ...

    async def answer(self, principal: Principal, conversation_id: int, subject: str, text: str) -> None:
        """Write the answer as a message from the patient and deliver it through the core
        (encrypted to the professional; an encrypted copy in the patient's Sent)."""
        ...

    async def export(self, principal: Principal) -> list[ExportItem]: ...

    # settings
    async def me(self, principal: Principal) -> PatientView: ...

    async def set_notify(self, principal: Principal, on: bool) -> None: ...

    async def block(self, principal: Principal, professional: str) -> None: ...

    async def unblock(self, principal: Principal, professional: str) -> None: ...

    async def totp_begin(self, principal: Principal) -> TotpSetup: ...

    async def totp_confirm(self, principal: Principal, code: str) -> list[str]:
        """Turns TOTP on once a code of the new secret checks; returns recovery codes (once)."""
        ...

    async def totp_disable(self, principal: Principal, code: str) -> None: ...

    async def journal(self, principal: Principal) -> list[JournalLine]: ...

    async def note(self, principal: Principal, action: str, detail: str = "") -> None:
        """A line in the patient's journal for what the portal saw (login, CSV export…)."""
        ...

    async def close(self, principal: Principal) -> None:
        """Close the space (crypto-shred) and end all its sessions."""
        ...
