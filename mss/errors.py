"""Authentication errors the core's credential checkers raise (refusals of requests: `mss.refusals`).

`public` is safe to send to the client; `reason` and `detail` are for the operator's log only
(they may name the certificate problem, the directory miss, ...). The checkers do not log:
the per-connection `mss.auth.ConnectionAuthentication` writes the one log line of each result.
"""

from __future__ import annotations


class AuthenticationFailed(Exception):
    """The client's credentials are refused (a counted failure, RFC 4954 6 / RFC 9051 6.2.2)."""

    def __init__(self, reason: str, public: str = "authentication failed", *, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.public = public
        self.detail = detail


class AuthenticationUnavailable(Exception):
    """Nothing could be decided, and not because of the client (the JWKS cannot be fetched,
    the directory is down): answered "try again later" and not counted as a failure."""

    def __init__(self, reason: str, *, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
