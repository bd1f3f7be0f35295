"""Which throttle keys each secret check of the portal counts against (PORTAL.md 5.7;
OWASP Authentication Cheat Sheet, "Login Throttling"), and the attempt around the check.

- A password, activation code or old password: `account:<login>|<network>` (this account
  from this network: the tight allowance), `account:<login>` (the account from anywhere: a
  looser one, so that a guesser elsewhere cannot keep the patient out for long) and
  `address:<network>` (this network whatever the account).
- A second-factor code: `totp:<INS>` and `address:<network>`. Its own key, which a right
  password does not clear: knowing the password is exactly when TOTP must hold.

A browser where the patient signed in before carries a **device cookie** for that account
(OWASP, "Slow Down Online Guessing Attacks with Device Cookies"): its sign-ins count against
`device:<nonce>` and the network instead of the account keys, so a guesser elsewhere, who
can spend the account-wide allowance at will (the INS is not a secret), never locks the
patient out of a browser they already use; a new browser is then the only one held back.

The network is the IPv4 address, or the IPv6 /64 (one subscriber's prefix: a per-/128
counter would give an attacker 2^64 fresh keys). The attempt is reserved in the core before
the secret is checked, so parallel guesses cannot all pass; a success refunds it and resets
only the narrow key (the pair, or the TOTP key), never the account-wide or network ones.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from starlette.requests import Request

from mss.refusals import Reason, Refusal
from mss.services import PatientPortal
from web.portal.context import THROTTLED, client_address
from web.portal.errors import PortalError

M = TypeVar("M")
log = logging.getLogger("mss.web")


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


DEVICE_COOKIE = "__Host-mss-device"
DEVICE_MAX_AGE_S = 180 * 24 * 3600
_DEVICE_LABEL = "device:"


def _device_mac(secret: bytes, ins: str, nonce: str) -> str:
    return hmac.new(secret, f"{_DEVICE_LABEL}{ins}:{nonce}".encode(), hashlib.sha256).hexdigest()[:32]


def new_device_cookie(secret: bytes, ins: str) -> str:
    nonce = secrets.token_urlsafe(16)
    return f"{ins}.{nonce}.{_device_mac(secret, ins, nonce)}"


def device_of(request: Request, secret: bytes, login: str) -> str | None:
    """The nonce of this browser's device cookie when it is genuine and for this login (an INS,
    or the patient address `<INS>@…`); None otherwise."""
    value = request.cookies.get(DEVICE_COOKIE) or ""
    parts = value.split(".") if len(value) < 128 and value.isascii() else []
    if len(parts) != 3:
        return None
    ins, nonce, mac = parts
    if login.strip().split("@")[0].upper() != ins.upper():
        return None
    return nonce if hmac.compare_digest(mac, _device_mac(secret, ins, nonce)) else None


def secret_keys(request: Request, login: str, *, device: str | None = None) -> Keys:
    """For a password, an activation code or the old password of a password change."""
    network = network_of(client_address(request))
    if device is not None:
        known = _DEVICE_LABEL + device
        return Keys([known, "address:" + network], [known])
    account = "account:" + login.strip().lower()
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
        await _refund(core, keys.counted, ())
        raise
    await _refund(core, keys.counted, keys.reset_on_success)
    return result


async def _refund(core: PatientPortal, counted: list[str], reset: list[str] | tuple[()]) -> None:
    """Give the reservation back. Its failure (the database gone for a moment) must not turn a
    sign-in or a password change that succeeded into an error: the attempt then stays
    counted, which only errs on the careful side."""
    try:
        await core.throttle_succeeded(counted, reset=reset)
    except Exception as exc:  # noqa: BLE001 - logged, and the check's own result stands
        log.warning("throttle refund failed: %s", type(exc).__name__)
