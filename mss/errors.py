"""Authentication errors the core raises to front ends (refusals of requests: `mss.refusals`).

`public` is safe to send to the client; `reason` is for the operator's log only (it may
name the certificate problem, the directory miss, ...).
"""
from __future__ import annotations


class AuthenticationFailed(Exception):
    def __init__(self, reason: str, public: str = "authentication failed") -> None:
        super().__init__(reason)
        self.reason = reason
        self.public = public
