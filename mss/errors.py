"""Errors the core raises to front ends, each carrying what the wire may say.

`public` is safe to send to the client; `reason` is for the operator's log only (it may
name the certificate problem, the directory miss, ...).
"""
from __future__ import annotations


class AuthenticationFailed(Exception):
    def __init__(self, reason: str, public: str = "authentication failed") -> None:
        super().__init__(reason)
        self.reason = reason
        self.public = public


class PolicyRejection(Exception):
    """An SMTP-shaped refusal: `code` (e.g. 550), enhanced `status` (e.g. "5.7.1"), text."""

    def __init__(self, code: int, status: str, text: str) -> None:
        super().__init__(f"{code} {status} {text}")
        self.code = code
        self.status = status
        self.text = text

    @property
    def smtp_reply(self) -> str:
        return f"{self.code} {self.status} {self.text}"

    @property
    def permanent(self) -> bool:
        return self.code >= 500
