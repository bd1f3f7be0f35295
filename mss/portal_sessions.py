"""Server-side sessions of the patient portal, in the database (every node sees them).

The cookie carries 32 random bytes (urlsafe base64); the table keeps only their SHA-256, so
neither a copy of the table nor a log line opens a session. A session ends:

* after `idle_timeout_s` without a request. `get()` pushes the idle expiry back, but at
  most once every `_push_every` seconds (30 s, less for tiny test timeouts): one write per
  request would turn every page view into a database write. `get(touch=False)` reads the
  session without pushing anything back (a status check is not activity);
* `absolute_timeout_s` after it was opened, however active (OWASP Session Management);
* a session waiting for the second factor (`pending_totp`) after `PENDING_TOTP_S` (5 min);
* at logout (`close`), when the space is closed (`end_all`), or when a newer session
  replaces it (the web layer renews the id at login and after the second factor).

Expired rows are deleted when they are met, and in bulk whenever a session is opened.

Each full session has a **session key** `local_key` (K_s, 32 random bytes made at `open`, in
the row only; none while the second factor is due): the browser keeps the session's private key in IndexedDB wrapped under it
(docs/patient-keys.md 4). It goes with the row, so whatever the browser left behind opens
with nothing once the session has ended.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crypto.dates import as_utc
from mss.config import Settings
from mss.db.models import PatientSpace, PortalSessionRow
from mss.principal import Principal

ID_BYTES = 32
LOCAL_KEY_BYTES = 32
MAX_CLIENT = 64
MAX_USER_AGENT = 256
_MAX_COOKIE = 128
#: A session waiting for its second factor lives this long at most.
PENDING_TOTP_S = 300


@dataclass(frozen=True)
class SessionState:
    """A live session as the store of sessions sees it (`mss.portal` makes the record)."""

    handle: str
    principal: Principal
    pending_totp: bool
    created_at: datetime
    expires_at: datetime
    local_key: bytes = field(default=b"", repr=False)


def new_id() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(ID_BYTES)).rstrip(b"=").decode("ascii")


def id_hash(session_id: str) -> str:
    """The hex SHA-256 of the cookie id: the row key, and `PortalSession.handle`."""
    return hashlib.sha256(session_id.encode("ascii", "replace")).hexdigest()


def truncated_client(client: str) -> str:
    """The client address for the patient's journal: IPv4 to its /24, IPv6 to its /48
    (enough to recognise "my home, my phone", not enough to locate anyone); "" when it is
    not an address. Accepts `ip`, `ip:port` and `[ip6]:port`."""
    text = (client or "").strip()
    candidates = [text]
    if text.startswith("[") and "]" in text:
        candidates.append(text[1 : text.index("]")])
    elif text.count(":") == 1:
        candidates.append(text.partition(":")[0])
    for candidate in candidates:
        try:
            ip = ipaddress.ip_address(candidate)
        except ValueError:
            continue
        mapped = getattr(ip, "ipv4_mapped", None)
        if mapped is not None:
            ip = mapped
        prefix = 24 if ip.version == 4 else 48
        return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
    return ""


def _principal(ins: str, name: str, address: str) -> Principal:
    return Principal("PATIENT", ins, name or ins, frozenset({address}), address, mechanism="PATIENT")


class PortalSessions:
    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._settings = settings
        self._sessions = sessions

    @property
    def _idle(self) -> timedelta:
        return timedelta(seconds=self._settings.portal.idle_timeout_s)

    @property
    def _push_every(self) -> timedelta:
        return timedelta(seconds=min(30.0, self._settings.portal.idle_timeout_s / 4))

    async def open(
        self, principal: Principal, *, pending_totp: bool, client: str, user_agent: str
    ) -> tuple[str, SessionState]:
        now = datetime.now(UTC)
        sid = new_id()
        handle = id_hash(sid)
        lifetime = self._settings.portal.absolute_timeout_s
        if pending_totp:  # the second factor is due now, not hours later
            lifetime = min(lifetime, PENDING_TOTP_S)
        absolute = now + timedelta(seconds=lifetime)
        idle = min(now + self._idle, absolute)
        # A session waiting for its second factor gets no key: nothing may be unwrapped yet.
        local_key = b"" if pending_totp else secrets.token_bytes(LOCAL_KEY_BYTES)
        async with self._sessions() as s, s.begin():
            # idle_expires_at <= expires_at always: one indexed condition finds every dead row.
            await s.execute(delete(PortalSessionRow).where(PortalSessionRow.idle_expires_at < now))
            s.add(
                PortalSessionRow(
                    id_hash=handle,
                    ins=principal.identifier,
                    pending_totp=pending_totp,
                    created_at=now,
                    last_seen_at=now,
                    idle_expires_at=idle,
                    expires_at=absolute,
                    client=(client or "")[:MAX_CLIENT],
                    user_agent=_printable(user_agent)[:MAX_USER_AGENT],
                    local_key=local_key or None,
                )
            )
        return sid, SessionState(handle, principal, pending_totp, now, idle, local_key)

    async def get(self, session_id: str, *, touch: bool = True) -> SessionState | None:
        """The live session of a cookie id, its idle expiry pushed back (unless `touch` is
        false); None when gone. The space must still be active (a closed space's sessions are
        gone anyway)."""
        if not session_id or len(session_id) > _MAX_COOKIE or not session_id.isascii():
            return None
        handle = id_hash(session_id)
        now = datetime.now(UTC)
        async with self._sessions() as s, s.begin():
            found = (
                await s.execute(
                    select(PortalSessionRow, PatientSpace.display_name, PatientSpace.address, PatientSpace.state)
                    .join(PatientSpace, PatientSpace.ins == PortalSessionRow.ins)
                    .where(PortalSessionRow.id_hash == handle)
                )
            ).first()
            if found is None:
                return None
            row, name, address, state = found
            idle_at, absolute = as_utc(row.idle_expires_at), as_utc(row.expires_at)
            if state != "active" or idle_at <= now or absolute <= now:
                await s.execute(delete(PortalSessionRow).where(PortalSessionRow.id_hash == handle))
                return None
            if touch and now - as_utc(row.last_seen_at) >= self._push_every:
                idle_at = min(now + self._idle, absolute)
                await s.execute(
                    update(PortalSessionRow)
                    .where(PortalSessionRow.id_hash == handle)
                    .values(last_seen_at=now, idle_expires_at=idle_at)
                )
            return SessionState(
                handle,
                _principal(row.ins, name, address),
                row.pending_totp,
                as_utc(row.created_at),
                idle_at,
                bytes(row.local_key or b""),
            )

    async def close(self, session_id: str) -> None:
        if not session_id or len(session_id) > _MAX_COOKIE or not session_id.isascii():
            return
        async with self._sessions() as s, s.begin():
            await s.execute(delete(PortalSessionRow).where(PortalSessionRow.id_hash == id_hash(session_id)))

    async def end_all(self, ins: str, *, keep: str | None = None) -> int:
        """End every session of a patient (the space is closed; or, with `keep`, the password
        changed: every session but the one that changed it); returns how many."""
        condition = PortalSessionRow.ins == ins
        if keep:
            condition = condition & (PortalSessionRow.id_hash != id_hash(keep))
        async with self._sessions() as s, s.begin():
            result = await s.execute(delete(PortalSessionRow).where(condition))
            return result.rowcount or 0


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in (text or "")[: MAX_USER_AGENT * 2])
