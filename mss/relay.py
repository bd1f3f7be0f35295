"""The relay worker: takes due entries of the relay queue and hands them to other operators.

One `RelayWorker` runs per serving node (`Core.start_background`). Its loop: wait for the
queue's `wakeup` (set after a delivery committed new entries) or `[relay] poll_interval_s`,
lease up to `[relay] concurrency` due entries (the lease makes several nodes share one queue
safely, `mss.queue`), send each over `RelayTransport` (`smtp.relay` in production), record
every recipient's outcome, and tell the sender what it asked to be told (RFC 3461):

- a 2xx to DATA: the recipient is `sent`; a success DSN ("relayed", RFC 3461 5.2.2) only when
  it asked NOTIFY=SUCCESS and the peer does not offer DSN (else the peer reports the final
  delivery itself);
- a 5xx (to RCPT, DATA, or MAIL for all), a null MX, NXDOMAIN: `failed` at once, failure DSN;
- anything else (4xx, no connection, TLS refused, DNS timeout): `pending`, retried after
  `[relay] retry_schedule_s[attempts]` (the last delay repeats); a delay DSN once after
  `delay_warning_s` when NOTIFY has DELAY; still pending at `created_at + max_age_s`: failed
  with status 4.4.7 "delivery time expired" and a failure DSN.

Never a DSN for a DSN (null reverse-path, RFC 3461 6.2 / RFC 5321 4.5.5), none when NOTIFY=NEVER.
DSNs are built by `mss.dsn.build_report` and handed to `Delivery.send_report`, which stores
them encrypted in a local sender's INBOX or queues them back to another operator.

This module is core: it speaks to the peer through the `RelayTransport` protocol only and
never imports a front end (tests/test_architecture.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal, Protocol

from mss import metrics
from mss.config import Settings
from mss.dsn import RecipientOutcome, build_report
from mss.queue import QueuedRecipient, QueueEntry, RecipientResult
from mss.queue_key import QueueKeyError
from mss.records import MailDsn, RcptDsn
from mss.routes import resolve_route
from mss.services import RelayRecipient, RelayReply, RelayRoute, RelayTransport, RelayUnavailable, SendResult

if TYPE_CHECKING:
    from mss.queue import RelayQueue

log = logging.getLogger("mss.relay")

_STATUS = re.compile(r"^(\d)\d\d[ -]([245]\.\d{1,3}\.\d{1,3})\b")
_CODE = re.compile(r"^([245])\d\d\b")

#: RFC 3463 4.4.7: "Delivery time expired".
EXPIRED_STATUS = "4.4.7"


class ReportSink(Protocol):
    """What the worker needs of `mss.delivery.Delivery`: a way to deliver a DSN."""

    async def send_report(self, to: str, raw: bytes) -> None: ...


Resolver = Callable[[str, Settings], Awaitable[list[RelayRoute]]]


def status_of(reply: str, default: str | None = None) -> str:
    """The RFC 3463 status of a recorded reply: the peer's enhanced code when it gave one,
    else the class of its basic code (`X.0.0`), else `default` (a reply of ours without code)."""
    m = _STATUS.match(reply)
    if m and m.group(1) == m.group(2)[0]:
        return m.group(2)
    m = _CODE.match(reply)
    if m:
        return f"{m.group(1)}.0.0"
    return default or "4.0.0"


def _aware(d: datetime) -> datetime:
    """SQLite gives naive datetimes back: they are UTC (mss.db stores UTC)."""
    return d if d.tzinfo is not None else d.replace(tzinfo=UTC)


def _wants(r: QueuedRecipient, what: Literal["SUCCESS", "FAILURE", "DELAY"]) -> bool:
    """RFC 3461 4.1: NOTIFY absent means failures only (and delays at the server's choice:
    MSS does not send them unasked); NEVER is the empty set."""
    if r.notify is None:
        return what == "FAILURE"
    return what in {n.upper() for n in r.notify}


@dataclass(frozen=True)
class _Attempt:
    """One attempt's outcome: per recipient id, and what the log line says."""

    results: dict[int, RecipientResult]
    route: str
    remote_host: str | None
    peer_offers_dsn: bool
    error: str | None


class RelayWorker:
    """Relays the queue (see the module doc). `owner` names this node's leases."""

    def __init__(
        self,
        settings: Settings,
        queue: RelayQueue,
        delivery: ReportSink,
        transport: RelayTransport,
        owner: str,
        *,
        resolve: Resolver = resolve_route,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.delivery = delivery
        self.transport = transport
        self.owner = owner
        self.resolve = resolve

    @property
    def reporting_mta(self) -> str:
        return self.settings.autoconfig.hostname or self.settings.domain

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Until cancelled: relay what is due, then sleep until woken or the poll interval.

        An exception in one round is logged and the loop goes on (a database hiccup must not
        stop relaying for the life of the process); cancellation stops it at once, leaving
        leased entries to expire back into the queue (`[relay] lease_s`)."""
        r = self.settings.relay
        log.info("relay worker %s started (concurrency %d)", self.owner, r.concurrency)
        try:
            try:
                await self.queue.release(self.owner)  # leases an earlier run of this node left
            except Exception:
                log.exception("could not release this node's earlier queue leases; they expire by themselves")
            while True:
                self.queue.wakeup.clear()
                try:
                    n = await self.run_once()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("relay round failed; retrying in %.0fs", r.poll_interval_s)
                    n = 0
                if n >= r.concurrency:
                    continue  # a full batch: more may be due now
                try:
                    await asyncio.wait_for(self.queue.wakeup.wait(), timeout=r.poll_interval_s)
                except TimeoutError:
                    pass
        finally:
            log.info("relay worker %s stopped", self.owner)

    async def run_once(self, now: datetime | None = None) -> int:
        """One round: lease up to `concurrency` due entries and attempt them all at once.
        Returns how many were leased. `now` (tests) fixes the clock of the whole round."""
        entries = await self.queue.lease(self.owner, self.settings.relay.concurrency, now=now)
        if not entries:
            return 0
        outcomes = await asyncio.gather(*(self.attempt(e, now=now) for e in entries), return_exceptions=True)
        for entry, outcome in zip(entries, outcomes, strict=True):
            if isinstance(outcome, asyncio.CancelledError):
                raise outcome
            if isinstance(outcome, BaseException):
                log.error(
                    "relay id=%s domain=%s attempt failed: %s",
                    entry.id,
                    entry.domain,
                    outcome,
                    exc_info=(type(outcome), outcome, outcome.__traceback__),
                )
        return len(entries)

    # -- one entry -----------------------------------------------------------------------

    async def attempt(self, entry: QueueEntry, *, now: datetime | None = None) -> QueueEntry | None:
        """Try `entry` once and record it; returns the entry as the queue has it afterwards."""
        r = self.settings.relay
        pending = [rc for rc in entry.recipients if rc.state == "pending"]
        content = b""
        # An attempt ends before its lease does, so no other attempt (of this node or another)
        # can lease the entry while this one may still be sending it.
        budget = max(1.0, r.lease_s * 0.8)
        try:
            content = await self.queue.content(entry.id)
            async with asyncio.timeout(budget):
                attempt = await self._send(entry, pending, content) if pending else _Attempt({}, "-", None, False, None)
        except asyncio.CancelledError:
            raise
        except QueueKeyError as exc:
            # The content cannot be read (the queue key is not the one it was sealed with): the
            # entry waits like any temporary failure, so it expires and its sender is told.
            log.error("relay id=%s domain=%s: queued content cannot be decrypted: %s", entry.id, entry.domain, exc)
            attempt = self._unavailable(pending, RelayUnavailable(f"queued content unreadable: {exc}"), route="-")
        except TimeoutError:
            log.warning(
                "relay id=%s domain=%s: attempt stopped after %.0fs (lease budget)", entry.id, entry.domain, budget
            )
            attempt = self._unavailable(pending, RelayUnavailable(f"attempt timed out after {budget:.0f}s"), route="-")
        except Exception as exc:
            # A bug or an unexpected error of the transport: the entry waits for its next
            # retry like any temporary failure, rather than sit leased until the lease ends.
            log.exception("relay id=%s domain=%s: unexpected error while sending", entry.id, entry.domain)
            reason = f"internal error: {exc.__class__.__name__}: {exc}"
            attempt = self._unavailable(pending, RelayUnavailable(reason), route="-")
        now = _aware(now or datetime.now(UTC))
        created = _aware(entry.created_at)
        expires = created + timedelta(seconds=r.max_age_s)
        results = dict(attempt.results)

        expired: list[QueuedRecipient] = []
        if now >= expires:
            for rc in pending:
                res = results.get(rc.id)
                if res is not None and res.state == "pending":
                    expired.append(rc)
                    results[rc.id] = RecipientResult("failed", f"{res.reply} (delivery time expired)")
        still = [rc for rc in pending if results.get(rc.id, RecipientResult("pending", "")).state == "pending"]

        retry_at: datetime | None = None
        if still:
            schedule = r.retry_schedule_s
            delay = schedule[min(entry.attempts, len(schedule) - 1)]
            # The last retry lands on the expiry, so the sender learns of it on time.
            retry_at = min(now + timedelta(seconds=delay), expires)

        delay_notified: bool | None = None
        delayed: list[QueuedRecipient] = []
        if still and not entry.delay_notified and now - created >= timedelta(seconds=r.delay_warning_s):
            delay_notified = True  # once per entry (RFC 3461 does not ask for more)
            delayed = [rc for rc in still if _wants(rc, "DELAY")]

        # DSNs before the queue forgets the entry: a crash in between gives a duplicate
        # report rather than none.
        if entry.mail_from:
            await self._reports(entry, content, pending, results, expired, delayed, attempt, now, expires)

        self._log(entry, attempt, results, retry_at)
        return await self.queue.finish_attempt(
            entry.id,
            self.owner,
            results,
            retry_at=retry_at,
            error=attempt.error,
            delay_notified=delay_notified,
            token=entry.lease_token,
        )

    async def _send(self, entry: QueueEntry, pending: Sequence[QueuedRecipient], content: bytes) -> _Attempt:
        """Routes in order until one answers; a permanent refusal of the session ends it."""
        try:
            routes = await self.resolve(entry.domain, self.settings)
        except RelayUnavailable as exc:
            return self._unavailable(pending, exc, route="dns")
        if not routes:
            return self._unavailable(pending, RelayUnavailable(f"no route to {entry.domain}"), route="-")
        recipients = [RelayRecipient(rc.address, RcptDsn(notify=rc.notify, orcpt=rc.orcpt)) for rc in pending]
        mail_dsn = MailDsn(ret=entry.ret, envid=entry.envid) if (entry.ret or entry.envid) else None  # type: ignore[arg-type]
        last: RelayUnavailable | None = None
        tried: list[str] = []
        for route in routes:
            where = f"{route.host}:{route.port}"
            tried.append(where)
            try:
                result = await self.transport.send(
                    route, mail_from=entry.mail_from, recipients=recipients, content=content, dsn=mail_dsn
                )
            except RelayUnavailable as exc:
                last = exc
                log.info("relay id=%s domain=%s route=%s unavailable: %s", entry.id, entry.domain, where, exc.reason)
                if exc.permanent:
                    break  # the peer refused the message itself (5xx to MAIL): no other MX helps
                continue
            return self._answered(pending, result, where)
        assert last is not None
        return self._unavailable(pending, last, route=",".join(tried))

    @staticmethod
    def _unavailable(pending: Sequence[QueuedRecipient], exc: RelayUnavailable, *, route: str) -> _Attempt:
        if exc.reply is not None:
            reply = str(exc.reply)
            state: Literal["failed", "pending"] = "failed" if exc.permanent or exc.reply.permanent else "pending"
        else:
            reply = exc.reason
            state = "failed" if exc.permanent else "pending"
        if exc.reply is not None and exc.reason not in reply:
            reply = f"{reply} ({exc.reason})"
        results = {rc.id: RecipientResult(state, reply) for rc in pending}
        return _Attempt(results, route, None, False, exc.reason)

    @staticmethod
    def _answered(pending: Sequence[QueuedRecipient], result: SendResult, route: str) -> _Attempt:
        results: dict[int, RecipientResult] = {}
        for rc in pending:
            reply: RelayReply | None = result.replies.get(rc.address)
            if reply is None:
                results[rc.id] = RecipientResult("pending", "451 4.3.0 no reply for this recipient")
            elif reply.accepted:
                results[rc.id] = RecipientResult("sent", str(reply))
            elif reply.permanent:
                results[rc.id] = RecipientResult("failed", str(reply))
            else:
                results[rc.id] = RecipientResult("pending", str(reply))
        return _Attempt(results, route, result.remote_host, result.peer_offers_dsn, None)

    # -- DSNs ----------------------------------------------------------------------------

    async def _reports(
        self,
        entry: QueueEntry,
        content: bytes,
        pending: Sequence[QueuedRecipient],
        results: dict[int, RecipientResult],
        expired: Sequence[QueuedRecipient],
        delayed: Sequence[QueuedRecipient],
        attempt: _Attempt,
        now: datetime,
        expires: datetime,
    ) -> None:
        expired_ids = {rc.id for rc in expired}
        failures: list[RecipientOutcome] = []
        successes: list[RecipientOutcome] = []
        for rc in pending:
            res = results.get(rc.id)
            if res is None:
                continue
            if res.state == "failed" and _wants(rc, "FAILURE"):
                status = EXPIRED_STATUS if rc.id in expired_ids else status_of(res.reply, "5.0.0")
                failures.append(self._outcome(rc, "failed", status, res.reply, attempt, now))
            elif res.state == "sent" and _wants(rc, "SUCCESS") and not attempt.peer_offers_dsn:
                # RFC 3461 5.2.2: relayed to a peer that will not report: "relayed", here.
                successes.append(self._outcome(rc, "relayed", status_of(res.reply, "2.0.0"), res.reply, attempt, now))
        delays = [
            self._outcome(
                rc, "delayed", status_of(results[rc.id].reply, "4.0.0"), results[rc.id].reply, attempt, now, expires
            )
            for rc in delayed
            if rc.id in results
        ]
        for kind, outcomes in (("failure", failures), ("delay", delays), ("success", successes)):
            if outcomes:
                await self._send_report(entry, content, outcomes, kind, now)

    def _outcome(
        self,
        rc: QueuedRecipient,
        action: Literal["failed", "delayed", "relayed"],
        status: str,
        reply: str,
        attempt: _Attempt,
        now: datetime,
        will_retry_until: datetime | None = None,
    ) -> RecipientOutcome:
        return RecipientOutcome(
            final_recipient=rc.address,
            original_recipient=rc.orcpt,
            action=action,
            status=status,
            remote_mta=attempt.remote_host,
            # Diagnostic-Code is an SMTP reply (RFC 3464 2.3.6); a reason of ours without a
            # reply code (no connection) is not one.
            diagnostic=reply if _CODE.match(reply) else None,
            last_attempt=now,
            will_retry_until=will_retry_until,
        )

    async def _send_report(
        self, entry: QueueEntry, content: bytes, outcomes: list[RecipientOutcome], kind: str, now: datetime
    ) -> None:
        try:
            raw = build_report(
                reporting_mta=self.reporting_mta,
                domain=self.settings.domain,
                to=entry.mail_from,
                original=content,
                outcomes=outcomes,
                envid=entry.envid,
                ret=entry.ret,
                arrival=_aware(entry.arrival or entry.created_at),
                now=now,
            )
            await self.delivery.send_report(entry.mail_from, raw)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("relay id=%s: %s DSN to the sender could not be delivered", entry.id, kind)
        else:
            metrics.relay_report(kind)
            log.info("relay id=%s: %s DSN for %d recipient(s) sent to the sender", entry.id, kind, len(outcomes))

    # -- the log line --------------------------------------------------------------------

    def _log(
        self, entry: QueueEntry, attempt: _Attempt, results: dict[int, RecipientResult], retry_at: datetime | None
    ) -> None:
        """One line per attempt: what an operator greps for when a peer complains."""
        counts = {"sent": 0, "failed": 0, "pending": 0}
        for res in results.values():
            counts[res.state] += 1
        metrics.relay_attempt(counts["sent"], counts["failed"], counts["pending"])
        outcome = (
            "sent"
            if counts["sent"] and not counts["failed"] and not counts["pending"]
            else (
                "failed"
                if counts["failed"] and not counts["pending"] and not counts["sent"]
                else ("deferred" if counts["pending"] and not counts["sent"] and not counts["failed"] else "partial")
            )
        )
        last = next((res.reply for res in results.values() if res.state != "sent"), None) or next(
            (res.reply for res in results.values()), ""
        )
        log.info(
            "relay id=%s domain=%s route=%s attempt=%d outcome=%s sent=%d failed=%d pending=%d reply=%r next=%s",
            entry.id,
            entry.domain,
            attempt.route,
            entry.attempts + 1,
            outcome,
            counts["sent"],
            counts["failed"],
            counts["pending"],
            last[:200],
            retry_at.isoformat(timespec="seconds") if retry_at else "-",
        )
