"""Arrival notifications to patients' personal addresses: content-free, rate-limited, retried.

PORTAL.md 5.9: no sender, no subject, no snippet, a link to the portal root only, batched.
Delivery writes (in its own transaction) that a space has something new (`schedule`); this
module's task sends later, so a notification that cannot be sent never blocks or fails a
delivery. At most one notification per patient per `[patients] notify_window_s`.

Transports (`[patients] notify_url`): `file:DIR` writes one `.eml` per notification (the demo,
so a newcomer sees them), `smtp://HOST:PORT[?starttls=1]` hands it to an MTA with aiosmtplib.
Several nodes may run the task: each lease takes rows `FOR UPDATE SKIP LOCKED` (PostgreSQL) and
pushes their due time forward before sending, so two nodes never send the same one.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crypto.dates import as_utc
from crypto.files import write_private
from mss.config import Settings
from mss.db.models import PatientNotification, PatientSpace

log = logging.getLogger("mss.notify")

SUBJECT = "Nouveau message dans votre messagerie de santé"
#: The whole text. Nothing in it comes from the message: a test checks it word by word.
BODY = (
    "Bonjour,\n\n"
    "Un nouveau message vous attend dans votre messagerie de santé sécurisée.\n"
    "Pour le lire, connectez-vous à votre espace :\n\n"
    "    {portal}\n\n"
    "Par sécurité, ce courriel ne contient ni l'expéditeur ni le contenu du message.\n"
    "Il est envoyé automatiquement ; merci de ne pas y répondre.\n"
)
LEASE = timedelta(minutes=5)
MAX_BACKOFF = timedelta(hours=1)
BATCH = 50


async def schedule(s: AsyncSession, ins: str, now: datetime, window: timedelta) -> None:
    """Inside a delivery's transaction: the space has news. A pending notification stays
    as it is; otherwise one is due now, or when the window since the last one ends."""
    row = await s.get(PatientNotification, ins)
    if row is None:
        upsert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
        await s.execute(
            upsert(PatientNotification)
            .values(ins=ins, due_at=now, attempts=0, last_error="")
            .on_conflict_do_nothing(index_elements=["ins"])
        )
        return
    if row.due_at is None:
        last = as_utc(row.last_sent_at) if row.last_sent_at else None
        row.due_at = max(now, last + window) if last else now


def notification(settings: Settings, to: str) -> EmailMessage:
    """The one message a patient ever receives from us outside the portal."""
    msg = EmailMessage()
    msg["From"] = settings.patients.notify_from or f"no-reply@{settings.domain}"
    msg["To"] = to
    msg["Subject"] = SUBJECT
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=settings.domain)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834 5: no automatic answer to it
    msg.set_content(BODY.format(portal=portal_url(settings)))
    return msg


def portal_url(settings: Settings) -> str:
    if settings.patients.portal_url:
        return settings.patients.portal_url
    return f"http://{settings.listen.host}:{settings.listen.http}/portal/"


Transport = Callable[[EmailMessage], Awaitable[None]]


def transport_for(settings: Settings) -> Transport | None:
    """The configured way out, or None when notifications are off."""
    url = settings.patients.notify_url
    if not url:
        return None
    if url.startswith("file:"):
        folder = settings.path(url[len("file:") :])

        async def to_file(msg: EmailMessage) -> None:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}.eml"
            await asyncio.to_thread(write_private, path, msg.as_bytes())

        return to_file
    parts = urlsplit(url)
    if parts.scheme != "smtp" or not parts.hostname:
        raise ValueError(f"[patients] notify_url must be file:DIR or smtp://HOST:PORT, not {url!r}")
    starttls = parse_qs(parts.query).get("starttls", ["0"])[0] in ("1", "true", "yes")
    host, port = parts.hostname, parts.port or 25

    async def to_smtp(msg: EmailMessage) -> None:
        import aiosmtplib

        await aiosmtplib.send(msg, hostname=host, port=port, start_tls=starttls, timeout=30)

    return to_smtp


@dataclass
class Notifier:
    """The background task of `mss serve` that sends due notifications."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    transport: Transport
    interval_s: float = 2.0

    async def run(self) -> None:
        while True:
            try:
                await self.send_due()
            except Exception:
                log.exception("notification round failed")
            await asyncio.sleep(self.interval_s)

    async def send_due(self, now: datetime | None = None) -> int:
        """Send what is due; returns how many were sent."""
        now = now or datetime.now(UTC)
        due = await self._lease(now)
        sent = 0
        for ins, email in due:
            try:
                await self.transport(notification(self.settings, email))
            except Exception as exc:  # noqa: BLE001 - retried with back-off
                await self._failed(ins, now, exc)
            else:
                sent += 1
                await self._sent(ins, now)
        return sent

    async def _lease(self, now: datetime) -> list[tuple[str, str]]:
        async with self.sessions() as s, s.begin():
            q = (
                select(PatientNotification.ins, PatientSpace.email, PatientSpace.state, PatientSpace.notify)
                .join(PatientSpace, PatientSpace.ins == PatientNotification.ins)
                .where(PatientNotification.due_at.is_not(None), PatientNotification.due_at <= now)
                .order_by(PatientNotification.due_at)
                .limit(BATCH)
            )
            if s.get_bind().dialect.name == "postgresql":
                q = q.with_for_update(skip_locked=True, of=PatientNotification)
            rows = (await s.execute(q)).all()
            leased, dropped = [], []
            for ins, email, state, wanted in rows:
                if state in ("pending", "active") and wanted and email:
                    leased.append((ins, email))
                else:
                    dropped.append(ins)
            if leased:
                await s.execute(
                    update(PatientNotification)
                    .where(PatientNotification.ins.in_([i for i, _ in leased]))
                    .values(due_at=now + LEASE)
                )
            if dropped:  # switched off, closed, or no address: nothing to send
                await s.execute(
                    update(PatientNotification).where(PatientNotification.ins.in_(dropped)).values(due_at=None)
                )
        return leased

    async def _sent(self, ins: str, now: datetime) -> None:
        async with self.sessions() as s, s.begin():
            await s.execute(
                update(PatientNotification)
                .where(PatientNotification.ins == ins)
                .values(due_at=None, last_sent_at=now, attempts=0, last_error="")
            )
        log.info("notification sent ins=%s", ins)

    async def _failed(self, ins: str, now: datetime, exc: Exception) -> None:
        async with self.sessions() as s, s.begin():
            row = await s.get(PatientNotification, ins)
            if row is None:
                return
            row.attempts += 1
            row.last_error = f"{type(exc).__name__}: {exc}"[:500]
            row.due_at = now + min(MAX_BACKOFF, timedelta(seconds=30 * 2 ** min(row.attempts, 10)))
        log.warning("notification failed ins=%s attempt=%d error=%s", ins, row.attempts, row.last_error)


def notifier_for(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> Notifier | None:
    transport = transport_for(settings)
    return Notifier(settings, sessions, transport) if transport else None


def notifications_in(folder: Path) -> list[bytes]:
    """The `.eml` files a `file:` transport wrote (tests, the demo's README)."""
    return [p.read_bytes() for p in sorted(folder.glob("*.eml"))]
