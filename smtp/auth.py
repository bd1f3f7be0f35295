"""SASL on the SMTP front end (RFC 4954 AUTH): the framing's limits and the SMTP replies.

The exchange itself is the core's (`mss.sasl`, run by `mss.services.Authentication`): the
handler writes its challenges as `334 <base64>`, feeds it the client's lines and turns the
outcome into one of the replies below. The client-message parsers are re-exported here for
the tests of their SMTP replies.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from mss.sasl import (  # noqa: F401 - re-exported (the handler, the parsers' SMTP tests)
    MECHANISMS,
    SaslError,
    bearer_error,
    oauthbearer,
    plain,
    xoauth2,
)
from mss.services import Failure, FailureKind

#: RFC 4954 4: servers accept SASL response lines of at least 12288 octets. Also the limit
#: of the AUTH command line itself: a bearer token does not fit in 512 octets, and clients
#: (Thunderbird, Outlook) send it as an initial response all the same.
MAX_RESPONSE_LINE = 12288

#: RFC 4954 4: the reply for a refused authentication. The text stays generic on purpose.
INVALID = "535 5.7.8 Authentication credentials invalid"
SUCCESS = "235 2.7.0 Authentication successful"
#: RFC 4954 4 has no reply for "closing after too many failures"; RFC 5321 3.8 / 4.2.3: 421.
TOO_MANY_FAILURES = "421 4.7.0 Too many failed authentication attempts, closing connection"

#: The reply of each failure kind (RFC 4954 4 and 6, enhanced codes RFC 3463 / RFC 5248).
#: `{public}` is the core's wire-safe text.
FAILURE_REPLY: dict[FailureKind, str] = {
    # 535 for both: RFC 4954 6 answers an authorization failure like an authentication one,
    # so that nothing is learnt about other mailboxes.
    "refused": INVALID + ": {public}",
    "unauthorized": INVALID + ": {public}",
    "malformed": "501 5.5.2 {public}",
    "cancelled": "501 5.7.0 Authentication aborted",
    "unavailable": "454 4.7.0 Temporary authentication failure, try again later",
    "unsupported": "504 5.5.4 Unrecognized authentication type",
    # Backed off (mss.auth.AuthThrottle): RFC 4954 6 names 454 4.7.0 for a temporary failure.
    "throttled": "454 4.7.0 {public}",
}


def failure_reply(failure: Failure) -> str:
    """The SMTP reply line for a failed exchange (one line: the public text's CR/LF and runs
    of white space collapse, so no text can smuggle a second reply)."""
    public = " ".join(failure.public.split()) or "."
    return FAILURE_REPLY[failure.kind].format(public=public)


def smtp_reply(exc: SaslError) -> str:
    """The reply for a parser's `SaslError`: what `failure_reply` answers for its kind."""
    return failure_reply(Failure(exc.kind, exc.text))


class ResponseLineTooLong(Exception):
    """A SASL response line longer than `MAX_RESPONSE_LINE`: the exchange is abandoned."""

    reply = f"500 5.5.6 Authentication exchange line too long (at most {MAX_RESPONSE_LINE} octets)"


class SaslServer(Protocol):
    """What `SubmissionHandler.handle_AUTH` needs of the aiosmtpd protocol it is called with
    (`smtp.server.SubmissionSMTP`): write a reply, read a response line, close."""

    transport: asyncio.BaseTransport | None

    async def push(self, status: str) -> None: ...

    async def sasl_challenge(self, challenge: bytes = b"") -> str | None:
        """Send `334 <base64 challenge>` and return the client's line (None: the client left).
        Raises `ResponseLineTooLong`."""
        ...

    def authenticated(self) -> None:
        """The connection authenticated: it leaves the pre-authentication connection cap
        (`mss.admission`); the server closes it when its address has too many already."""
        ...
