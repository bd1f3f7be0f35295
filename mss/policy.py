"""Pure rules over a principal, an envelope and a resolved recipient. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from annuaire.ids import idna_domain
from annuaire.local import DeliveryTarget
from mss.principal import Principal
from mss.records import RcptDsn
from mss.refusals import Reason, Refusal

if TYPE_CHECKING:
    from mss.patients import PatientTarget

#: "remote": another operator's whitelisted domain, relayed (queued); "trust_space": the
#: same, when relaying is off here (`[relay] enabled = false`).
RecipientKind = Literal["local", "unknown_local", "trust_space", "remote", "outside", "patient"]


@dataclass(frozen=True)
class Recipient:
    """A recipient as RCPT resolved it, carried to delivery (`mss.services.Recipient`).

    `target` is what delivery needs of a local mailbox (its type and the certificates a
    message for it is encrypted to), looked up once at RCPT."""

    address: str
    kind: RecipientKind
    target: DeliveryTarget | PatientTarget | None = None
    #: NOTIFY and ORCPT of its RCPT (RFC 3461 4.1, 4.2), carried to the queue and the DSNs.
    dsn: RcptDsn | None = None


def domain_of(address: str) -> str:
    """The domain of an address, lower-case, in its ASCII form (IDNA A-labels), as the
    whitelist and `Principal.domains` hold it."""
    domain = address.rpartition("@")[2].strip().lower().rstrip(".")
    if domain.isascii():
        return domain
    try:
        return idna_domain(domain)
    except Exception:  # noqa: BLE001 - a name IDNA refuses matches no domain
        return domain


def check_sender(principal: Principal, mail_from: str) -> None:
    """MAIL FROM must be one of the principal's mailboxes (no null sender from clients).

    Another operator (a SERV principal, the `mta` listener) speaks for domains, not
    mailboxes: its reverse-path is in one of the domains its certificate names
    (`Principal.domains`), or the null reverse-path of a DSN (RFC 5321 4.5.5, RFC 3461 6.2)."""
    if principal.kind == "SERV":
        if mail_from and domain_of(mail_from) not in principal.domains:
            raise Refusal(
                Reason.NOT_ALLOWED,
                f"Sender <{mail_from}> is not in a domain your certificate speaks for",
                f"operator {principal.identifier} ({', '.join(sorted(principal.domains))}) sent as {mail_from}",
            )
        return
    if not mail_from:
        raise Refusal(Reason.NOT_ALLOWED, "A null sender is not accepted on submission")
    if not principal.may_use(mail_from):
        raise Refusal(Reason.NOT_ALLOWED, f"Sender <{mail_from}> is not a mailbox of the authenticated user")


def check_recipient(recipient: Recipient) -> None:
    """RFC 5321 4.2.2 / RFC 3463 codes for each way a recipient can be refused."""
    if recipient.kind in ("local", "patient", "remote"):  # a patient's rules: mss.patients.PatientSpaces.target
        return
    if recipient.kind == "unknown_local":
        raise Refusal(Reason.UNKNOWN_RECIPIENT, f"Mailbox <{recipient.address}> does not exist")
    if recipient.kind == "trust_space":
        # `[relay] enabled = false`: other operators' domains are refused clearly.
        raise Refusal(
            Reason.RELAY_NOT_ENABLED, "Relaying to other operators of the trust space is not enabled on this server"
        )
    raise Refusal(
        Reason.OUTSIDE_TRUST_SPACE, f"Domain {domain_of(recipient.address)} is outside the health trust space"
    )
