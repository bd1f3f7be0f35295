"""Which throttle keys each secret check of the portal counts against (PORTAL.md 5.7;
OWASP Authentication Cheat Sheet, "Login Throttling"), and the attempt around the check.

- A password, activation code or old password: `account:<login>|<network>` (this account
  from this network: the tight allowance), `account:<login>` (the account from anywhere: a
  looser one, so that a guesser elsewhere cannot keep the patient out for long) and
  `address:<network>` (this network whatever the account).
- A second-factor code: `totp:<INS>` and `address:<network>`. Its own key, which a right
  password does not clear: knowing the password is exactly when TOTP must hold.

The network is the IPv4 address, or the IPv6 /64 (one subscriber's prefix: a per-/128
counter would give an attacker 2^64 fresh keys). The attempt is reserved in the core before
the secret is checked, so parallel guesses cannot all pass; a success refunds it and resets
only the narrow key (the pair, or the TOTP key), never the account-wide or network ones.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from starlette.requests import Request

from mss.refusals import Reason, Refusal
from mss.services import PatientPortal
from web.portal.context import THROTTLED, client_address
from web.portal.errors import PortalError

M = TypeVar("M")


def network_of(address: str) -> str:
    """The client's network as throttling counts it: an IPv4 address, an IPv6 /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(frozen=True)
class Keys:
    counted: list[str]
    reset_on_success: list[str]


def secret_keys(request: Request, login: str) -> Keys:
    """For a password, an activation code or the old password of a password change."""
    account = "account:" + login.strip().lower()
    network = network_of(client_address(request))
    pair = f"{account}|{network}"
    return Keys([account, pair, "address:" + network], [pair])


def second_factor_keys(request: Request, ins: str) -> Keys:
    totp = "totp:" + ins
    return Keys([totp, "address:" + network_of(client_address(request))], [totp])


async def attempt(
    core: PatientPortal, keys: Keys, step: Callable[[], Awaitable[M]], wrong: str, status: int = 401
) -> M:
    """One throttled check: 429 while the keys must wait; a refusal stays counted (as
    `wrong`, or the core's own sentence for a space that is no longer active); a success
    or a temporary failure gives the attempt back."""
    wait = await core.throttle_attempt(keys.counted)
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise PortalError(429, THROTTLED.format(n=seconds), retry_after=seconds)
    try:
        result = await step()
    except Refusal as refusal:
        if refusal.reason is Reason.TEMPORARILY_UNAVAILABLE:
            await core.throttle_succeeded(keys.counted)
            raise
        if refusal.reason is Reason.MAILBOX_DISABLED:
            raise PortalError(403, refusal.public) from None
        raise PortalError(status, wrong) from None
    except BaseException:
        await core.throttle_succeeded(keys.counted)
        raise
    await core.throttle_succeeded(keys.counted, reset=keys.reset_on_success)
    return result
