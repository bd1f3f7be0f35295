"""Pure rules over a principal, an envelope and a resolved recipient. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from annuaire.local import DeliveryTarget
from mss.principal import Principal
from mss.refusals import Reason, Refusal

if TYPE_CHECKING:
    from mss.patients import PatientTarget

RecipientKind = Literal["local", "unknown_local", "trust_space", "outside", "patient"]


@dataclass(frozen=True)
class Recipient:
    """A recipient as RCPT resolved it, carried to delivery (`mss.services.Recipient`).

    `target` is what delivery needs of a local mailbox (its type and the certificates a
    message for it is encrypted to), looked up once at RCPT."""

    address: str
    kind: RecipientKind
    target: DeliveryTarget | PatientTarget | None = None


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def check_sender(principal: Principal, mail_from: str) -> None:
    """MAIL FROM must be one of the principal's mailboxes (no null sender from clients)."""
    if not mail_from:
        raise Refusal(Reason.NOT_ALLOWED, "A null sender is not accepted on submission")
    if not principal.may_use(mail_from):
        raise Refusal(Reason.NOT_ALLOWED, f"Sender <{mail_from}> is not a mailbox of the authenticated user")


def check_recipient(recipient: Recipient) -> None:
    """RFC 5321 4.2.2 / RFC 3463 codes for each way a recipient can be refused."""
    if recipient.kind in ("local", "patient"):  # a patient's rules: mss.patients.PatientSpaces.target
        return
    if recipient.kind == "unknown_local":
        raise Refusal(Reason.UNKNOWN_RECIPIENT, f"Mailbox <{recipient.address}> does not exist")
    if recipient.kind == "trust_space":
        # Relay to other operators comes with the outbound queue; until then refuse clearly.
        raise Refusal(
            Reason.RELAY_NOT_ENABLED, "Relaying to other operators of the trust space is not enabled on this server yet"
        )
    raise Refusal(
        Reason.OUTSIDE_TRUST_SPACE, f"Domain {domain_of(recipient.address)} is outside the health trust space"
    )
