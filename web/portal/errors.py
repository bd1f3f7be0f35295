"""How the portal says no: one place maps the core's `Refusal` to HTTP, and two shapes of
reply, JSON `{"error"}` under `/portal/api/` and a small French page elsewhere.

Another patient's object is the core's `UNKNOWN_RECIPIENT` and becomes 404, the same answer
as an id that does not exist (PORTAL.md 5.10): nothing tells them apart.
"""

from __future__ import annotations

from mss.refusals import Reason, Refusal

#: HTTP status for each reason the core gives; a reason not listed is a 400.
STATUS: dict[Reason, int] = {
    Reason.UNKNOWN_RECIPIENT: 404,
    Reason.NO_SUCH_FOLDER: 404,
    Reason.BAD_ADDRESS: 400,
    Reason.MALFORMED_MESSAGE: 400,
    Reason.CANNOT: 400,
    Reason.FOLDER_EXISTS: 400,
    Reason.TOO_MANY_RECIPIENTS: 400,
    Reason.NOT_ALLOWED: 403,
    Reason.MAILBOX_DISABLED: 403,
    Reason.OUTSIDE_TRUST_SPACE: 403,
    Reason.RELAY_NOT_ENABLED: 403,
    Reason.RELAY_DENIED: 403,
    Reason.MAIL_LOOP: 400,
    Reason.DKIM_FAILED: 400,
    Reason.NO_ENCRYPTION_KEY: 403,
    Reason.OVER_QUOTA: 403,
    Reason.TOO_BIG: 413,
    Reason.TEMPORARILY_UNAVAILABLE: 503,
    Reason.STORAGE_FULL: 503,
}

NOT_FOUND = "Cette page n'existe pas ou ne vous est pas accessible."
FORBIDDEN = "Cette demande a été refusée : rechargez la page et réessayez."
SIGNED_OUT = "Votre session a expiré : reconnectez-vous."
UNAVAILABLE = "Le service est momentanément indisponible : réessayez dans quelques minutes."


class PortalError(Exception):
    """A reply decided by the portal itself (bad token, bad body, throttled...)."""

    def __init__(self, status: int, text: str, *, retry_after: int | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.retry_after = retry_after


class SignInRequired(Exception):
    """No live session: pages answer 303 to the sign-in page, the API 401."""


def from_refusal(refusal: Refusal) -> PortalError:
    status = STATUS.get(refusal.reason, 400)
    if status == 404:
        text = NOT_FOUND
    elif status == 503:
        text = UNAVAILABLE
    else:
        text = refusal.public  # the core's sentence for the patient (PatientPortal)
    return PortalError(status, text)
