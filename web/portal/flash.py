"""The results a plain form reports after its 303: the page reads a short code from the
query (`?statut=…` or `?alerte=…`) and shows a fixed French sentence. Only known codes are
shown, so no text of the URL ever reaches the page."""

from __future__ import annotations

MESSAGES = {
    "deconnecte": "Vous êtes déconnecté.",
    "notifications-on": "Les notifications par e-mail sont activées.",
    "notifications-off": "Les notifications par e-mail sont désactivées.",
    "bloque": "Ce professionnel est bloqué : ses nouveaux messages vous seront refusés.",
    "debloque": "Ce professionnel est débloqué.",
    "totp-off": "La validation en deux étapes est désactivée.",
    "totp-code": "Ce code n'est pas valide. Réessayez.",
    "trop-tot": "Trop de codes essayés : attendez quelques minutes avant de réessayer.",
    "confirmation": "Cochez la case pour confirmer la clôture de votre espace.",
    "refus": "Cette action n'a pas pu être effectuée.",
    "session": "Votre session a expiré : reconnectez-vous.",
}


def message_for(code: str | None) -> str:
    return MESSAGES.get(code or "", "")
