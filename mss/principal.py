"""Who is authenticated on a connection, and what it may act for."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

PrincipalKind = Literal["PS", "ORG", "SERV"]


@dataclass(frozen=True)
class Principal:
    """An authenticated party.

    `identifier` is the professional's national id (idNat_PS, e.g. ``810001045367``) for a
    ``PS`` principal, or the structure id (idNat_Struct) for ``ORG``/``SERV``. `mailboxes`
    are the addresses (lower-case) it may send as and read: the directory decides them once,
    at authentication, so every later check is a set lookup.
    """

    kind: PrincipalKind
    identifier: str
    display_name: str
    mailboxes: frozenset[str]
    primary: str | None = None
    cert_sha256: str | None = None
    mechanism: str = "EXTERNAL"
    acting_as: str | None = field(default=None)
    #: SERV only: the mail domains of the trust-space whitelist this operator's certificate
    #: names (its DNS names), i.e. the domains it may send from on the `mta` listener.
    domains: frozenset[str] = frozenset()
    #: PS only, once narrowed to its own PER mailbox (an app password of it, or that
    #: address as authorization identity): the mailboxes it had besides, which it may still
    #: read as a member in the shared namespace (IMAP `Partagés/`, `mss.rights`), never
    #: send as nor open as its session's mailbox.
    shared: frozenset[str] = frozenset()
    #: Which of `mailboxes` keep a copy of what they send in their Sent folder, read with
    #: them at authentication, so that a submission needs no directory look-up for it.
    #: None: not known (a principal built without its directory rows), look it up.
    sent_copy: frozenset[str] | None = None

    @property
    def default_mailbox(self) -> str | None:
        """The mailbox a session opens when no authorization identity was given."""
        return self.acting_as or self.primary or (min(self.mailboxes) if self.mailboxes else None)

    def may_use(self, address: str) -> bool:
        return address.lower() in self.mailboxes

    @property
    def shared_candidates(self) -> frozenset[str]:
        """The mailboxes it may read as a member of in the shared namespace, if the
        directory says it is one (`mss.rights.DirectoryRights.shared`): all of its own when
        not narrowed; once narrowed, only what it kept as `shared`."""
        return self.mailboxes if self.acting_as is None else self.shared

    def may_open(self, address: str) -> bool:
        """`may_use`, or one of its shared candidates (`MailAccess.open` of a shared mailbox)."""
        return self.may_use(address) or address.lower() in self.shared

    def restricted_to(self, authzid: str) -> Principal:
        """The same principal narrowed to one mailbox (SASL authorization identity)."""
        address = authzid.lower()
        if address not in self.mailboxes:
            raise PermissionError(f"{self.identifier} may not act as {authzid}")
        return Principal(
            kind=self.kind,
            identifier=self.identifier,
            display_name=self.display_name,
            mailboxes=frozenset({address}),
            primary=address,
            cert_sha256=self.cert_sha256,
            mechanism=self.mechanism,
            acting_as=address,
            # Narrowed to its own PER mailbox, a professional still sees the shared ones.
            shared=self.mailboxes - {address} if self.kind == "PS" and address == self.primary else frozenset(),
            sent_copy=None if self.sent_copy is None else self.sent_copy & {address},
        )

    def keeps_sent_copy(self, address: str) -> bool | None:
        """Whether `address` keeps a Sent copy, None when this principal does not know."""
        return None if self.sent_copy is None else address.lower() in self.sent_copy
