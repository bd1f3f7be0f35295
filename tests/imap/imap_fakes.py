"""Stand-ins for what needs the PKI (certificate checks, encryption), sample messages, and
a driver that speaks to a `Session` in bytes."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from annuaire.model import Base as DirectoryBase
from mss.auth import CoreCredentials
from mss.config import Settings
from mss.db.engine import create_engine, sessionmaker
from mss.db.models import Base
from mss.errors import AuthenticationFailed
from mss.events import Events
from mss.mailaccess import MailAccessService
from mss.message import outer_headers
from mss.principal import Principal
from mss.records import NewMessage, StoredRef
from mss.refusals import Reason, Refusal
from mss.store import Store

ALICE = "alice@test.mss"
BOB = "bob@test.mss"
ORG = "cabinet@test.mss"
NOKEY = "nokey@test.mss"

ALICE_CERT = b"cert-alice"
BOB_CERT = b"cert-bob"


class FakeAuth:
    """Stands for `mss.auth.Authenticator`, the credential checker (`mss.auth.CredentialChecker`)
    under the real core exchange: a "certificate" names its principal."""

    principals = {
        ALICE_CERT: Principal("PS", "810000000001", "Alice", frozenset({ALICE, ORG}), primary=ALICE),
        BOB_CERT: Principal("PS", "810000000002", "Bob", frozenset({BOB, NOKEY}), primary=BOB),
    }

    async def from_certificate(self, der, *, peer="?"):
        if not der:
            raise AuthenticationFailed("no_certificate", "a health-PKI client certificate is required")
        p = self.principals.get(der)
        if p is None:
            raise AuthenticationFailed("untrusted", "client certificate not accepted")
        return p

    #: mailbox -> its app password
    app_passwords = {ALICE: "alice-app-pass", ORG: "org-app-pass", BOB: "bob-app-pass"}
    #: token -> (the certificate it is bound to, the professional it names)
    tokens = {"tok-alice-on-bob-cert": (BOB_CERT, ALICE_CERT)}

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    async def from_app_password(self, username, password, cert_der, *, peer="?", mechanism="PLAIN"):
        self.calls.append(("app_password", username, mechanism))
        p = await self.from_certificate(cert_der, peer=peer)
        if not p.may_use(username):
            raise AuthenticationFailed("app_password:not_entitled", "invalid credentials")
        if self.app_passwords.get(username.lower()) != password:
            raise AuthenticationFailed("app_password:wrong", "invalid credentials")
        return replace(p.restricted_to(username), mechanism=mechanism)

    async def from_token(self, token, cert_der, authzid=None, *, peer="?", mechanism="OAUTHBEARER"):
        self.calls.append(("token", authzid, mechanism))
        await self.from_certificate(cert_der, peer=peer)
        bound, who = self.tokens.get(token, (None, None))
        if bound is None or bound != cert_der:
            raise AuthenticationFailed("token:cnf_mismatch", "invalid token")
        p = replace(self.principals[who], mechanism=mechanism)
        if authzid:
            try:
                return p.restricted_to(authzid)
            except PermissionError as exc:
                raise AuthenticationFailed("authzid_not_entitled", "not authorized for that mailbox") from exc
        return p


class FakeSealer:
    """Stands for `mss.sealing.Sealer.seal` (encryption needs the PKI): keeps the bytes
    as they are, records them, and refuses NOKEY as a mailbox without a certificate."""

    def __init__(self) -> None:
        self.appended: list[bytes] = []

    async def seal(self, mailbox, message, certs=None):
        raw = getattr(message, "raw", message)  # a ParsedMessage from APPEND, or bytes
        if mailbox == NOKEY:
            raise Refusal(Reason.NO_ENCRYPTION_KEY, f"Mailbox <{mailbox}> has no valid encryption certificate")
        self.appended.append(raw)
        return raw, outer_headers(raw)


@dataclass
class ImapTestCore:
    """The services the IMAP front end is given (`mss.services.ImapServices`), plus the
    store and the sealer for the tests to look behind them: the real `Store` (SQLite),
    `Events` and `MailAccess`, the real authentication exchange (`mss.auth.CoreCredentials`)
    over `FakeAuth`, and `FakeSealer` for encryption."""

    settings: Settings
    store: Store
    events: Events
    auth: FakeAuth
    credentials: CoreCredentials
    sealer: FakeSealer
    mail: MailAccessService
    engine: object = None

    def server_ssl_context(self):  # pragma: no cover - the sans-IO tests have no sockets
        raise NotImplementedError

    async def deliver(self, mailbox: str, raw: bytes, folder: str = "INBOX", flags=(), when=None) -> StoredRef:
        refs = await self.store.write(
            [
                NewMessage(
                    mailbox,
                    folder,
                    raw,
                    outer_headers(raw),
                    frozenset(flags),
                    when or datetime(2026, 11, 2, 9, 0, tzinfo=UTC),
                )
            ]
        )
        return refs[0]

    async def aclose(self) -> None:
        await self.store.close()
        await self.engine.dispose()


async def open_test_core(db: Path, url: str | None = None) -> ImapTestCore:
    """A fresh core over a new SQLite file `db` (or the empty database at `url`); `aclose` it
    when done."""
    engine = create_engine(url or f"sqlite+aiosqlite:///{db}")
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
        await conn.run_sync(DirectoryBase.metadata.create_all)  # rights read local_mailbox
    events = Events()
    store = Store(sessionmaker(engine), events)
    sealer = FakeSealer()
    auth = FakeAuth()
    settings = Settings(domain="test.mss")
    return ImapTestCore(
        settings,
        store,
        events,
        auth,
        CoreCredentials(auth),
        sealer,
        MailAccessService(store, sealer, max_message_size=settings.limits.max_message_size),
        engine,
    )


def sample(
    subject: str = "Hello",
    frm: str = "Bob <bob@test.mss>",
    to: str = ALICE,
    body: str = "Body text\r\n",
    date: str = "Mon, 02 Nov 2026 10:00:00 +0100",
    extra: str = "",
) -> bytes:
    return (
        f"From: {frm}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {date}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@test.mss>\r\n{extra}"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    ).encode()


class Driver:
    """Speaks to a `Session` in bytes, as a client would."""

    def __init__(self, session) -> None:
        self.session = session
        self.actions: list = []

    async def send(self, data: bytes | str) -> bytes:
        from imap.protocol.response import Response, settle

        if isinstance(data, str):
            data = data.encode()
        self.session.feed(data)
        out = await self.session.process()
        await settle(out)  # a FETCH of many messages comes as a `Stream`: read it to its end
        self.actions += [o for o in out if not isinstance(o, Response)]
        return b"".join(o.to_bytes() for o in out if isinstance(o, Response))

    async def line(self, text: str) -> str:
        return (await self.send(text + "\r\n")).decode("utf-8", "replace")
