"""SASL on the SMTP front end (RFC 4954 AUTH): what is advertised, and the SMTP replies.

The client-message parsers are protocol-neutral and live in `mss.sasl` (IMAP uses them too);
this module re-exports them so that the handler reads `sasl.plain(...)` etc.

- EXTERNAL (RFC 4422 Appendix A): the credentials are the TLS client certificate the
  connection already presented; the client's message is an optional authorization identity
  (authzid) that narrows the certificate's principal to one of its mailboxes.
- OAUTHBEARER (RFC 7628) and XOAUTH2 (Google's format): an e-CPS access token, accepted by
  the core only when bound (`cnf`) to this connection's client certificate.
- PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login, what Outlook speaks): a mailbox
  address and its app password, next to a valid client certificate, never instead of it.

The functions here are pure: they turn the client's bytes into fields or a refusal; the
protocol layers do the reading, writing and the calls into `core.auth`. Nothing here keeps
or logs a password or a token: `SaslError.log_reason` never contains one.
"""
from __future__ import annotations

from mss.sasl import (  # noqa: F401 - re-exported for the handler
    MAX_AUTH_FAILURES,
    TOKEN_MECHANISMS,
    BearerCredentials,
    ExternalResult,
    PasswordCredentials,
    SaslError,
    bearer,
    bearer_error,
    decode_response,
    external,
    oauthbearer,
    plain,
    utf8,
    xoauth2,
)

#: Mechanisms advertised in the EHLO "AUTH" line, in order (only once TLS is up).
MECHANISMS: tuple[str, ...] = ("EXTERNAL", "PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2")
#: RFC 4954 4: servers accept SASL response lines of at least 12288 octets. Also the limit
#: of the AUTH command line itself: a bearer token does not fit in 512 octets, and clients
#: (Thunderbird, Outlook) send it as an initial response all the same.
MAX_RESPONSE_LINE = 12288

#: LOGIN's two challenges (the de-facto texts every client expects).
LOGIN_USERNAME = b"Username:"
LOGIN_PASSWORD = b"Password:"

#: RFC 4954 4: the reply for a refused authentication. The text stays generic on purpose.
INVALID = "535 5.7.8 Authentication credentials invalid"




def smtp_reply(exc: SaslError) -> str:
    """The SMTP reply for a SASL error: 535 for refused credentials (RFC 4954 6), else 501."""
    if isinstance(exc, SmtpSaslError):
        return exc.reply
    return f"{INVALID}: {exc.text}" if exc.refused else f"501 5.5.2 {exc.text}"


class SmtpSaslError(SaslError):
    """A refusal with an SMTP reply of its own (line too long, empty LOGIN field...)."""

    def __init__(self, reply: str, log_reason: str, *, refused: bool = False) -> None:
        super().__init__(reply.split(" ", 2)[-1], log_reason, refused=refused)
        self.reply = reply
