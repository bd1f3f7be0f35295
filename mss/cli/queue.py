"""`mss queue`: the operator's view of the relay queue (mail waiting for other operators).

- `list [--json]`: every entry, in the order the relay will try them;
- `show ID [--json]`: one entry and each recipient's state and last reply from the peer;
- `retry ID | --all`: due now (a running server's worker takes it at its next poll);
- `delete ID`: removes it and sends the sender a failure DSN (RFC 3464) for the recipients
  still pending that did not ask NOTIFY=NEVER, as the relay does on a permanent refusal;
- `stats [--json]`: counts and the age of the oldest entry, for monitoring.

Message content is never printed: clear entries are encrypted at rest (mss.queue_key) so
that the queue shows no health data, and the CLI keeps it that way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from mss.cli.common import config_option, database, emit, json_option, load, run

T = TypeVar("T")

#: RFC 3463 5.0.0 "other undefined status": removed by the operator, no peer said anything.
DELETED_STATUS = "5.0.0"
DELETED_TEXT = "The message was removed from the relay queue by the operator of this server."


def _with_queue(config: Path | None, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run `work(queue)` on a RelayQueue over the configured database (migrated first)."""
    from mss.queue import RelayQueue

    settings = load(config)

    async def go() -> T:
        async with database(settings) as sessions:
            return await work(RelayQueue(settings, sessions))

    return run(go())


def _iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat() if dt is not None else None


def _doc(entry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "domain": entry.domain,
        "mail_from": entry.mail_from,
        "created_at": _iso(entry.created_at),
        "arrival": _iso(entry.arrival),
        "next_attempt_at": _iso(entry.next_attempt_at),
        "attempts": entry.attempts,
        "size": entry.size,
        "end_to_end": entry.end_to_end,
        "envid": entry.envid,
        "ret": entry.ret,
        "last_error": entry.last_error,
        "delay_notified": entry.delay_notified,
        "lease_owner": entry.lease_owner,
        "lease_until": _iso(entry.lease_until),
        "recipients": [
            {
                "id": r.id,
                "address": r.address,
                "orcpt": r.orcpt,
                "notify": None if r.notify is None else (sorted(r.notify) or ["NEVER"]),
                "state": r.state,
                "last_reply": r.last_reply,
            }
            for r in entry.recipients
        ],
    }


def _age(entry, now: datetime) -> str:
    seconds = int((now - entry.created_at).total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _summary(entry, now: datetime) -> str:
    pending = sum(1 for r in entry.recipients if r.state == "pending")
    leased = (
        f"  leased by {entry.lease_owner}"
        if entry.lease_owner and entry.lease_until and entry.lease_until >= now
        else ""
    )
    return (
        f"{entry.id:>6}  {entry.domain}  from <{entry.mail_from}>  {pending}/{len(entry.recipients)} pending  "
        f"attempts {entry.attempts}  next {entry.next_attempt_at:%Y-%m-%d %H:%M:%S}  age {_age(entry, now)}"
        f"{'  e2e' if entry.end_to_end else ''}{leased}"
        + (f"\n        last error: {entry.last_error}" if entry.last_error else "")
    )


@click.group()
def queue() -> None:
    """The relay queue: mail waiting for other operators of the trust space."""


@queue.command("list")
@config_option
@json_option
def list_(config: Path | None, as_json: bool) -> None:
    """Every queued message, in the order the relay will try them."""

    async def work(q):
        return await q.list()

    entries = _with_queue(config, work)
    now = datetime.now(UTC)
    lines = [_summary(e, now) for e in entries] or ["The relay queue is empty."]
    emit(as_json, {"entries": [_doc(e) for e in entries]}, lines)


@queue.command("show")
@click.argument("entry_id", metavar="ID", type=int)
@config_option
@json_option
def show(entry_id: int, config: Path | None, as_json: bool) -> None:
    """One queued message and its recipients (never its content)."""

    async def work(q):
        return await q.get(entry_id)

    entry = _with_queue(config, work)
    if entry is None:
        raise click.ClickException(f"no queue entry {entry_id}")
    now = datetime.now(UTC)
    lines = [
        _summary(entry, now),
        f"        created {entry.created_at:%Y-%m-%d %H:%M:%S}  size {entry.size}  "
        f"ret {entry.ret or '-'}  envid {entry.envid or '-'}  delay DSN sent: {'yes' if entry.delay_notified else 'no'}",
    ]
    for r in entry.recipients:
        notify = "-" if r.notify is None else (",".join(sorted(r.notify)) or "NEVER")
        lines.append(
            f"        <{r.address}>  {r.state}  notify {notify}"
            + (f"  orcpt {r.orcpt}" if r.orcpt else "")
            + (f"\n            last reply: {r.last_reply}" if r.last_reply else "")
        )
    emit(as_json, _doc(entry), lines)


@queue.command("retry")
@click.argument("entry_id", metavar="ID", type=int, required=False)
@click.option("--all", "everything", is_flag=True, help="Every entry.")
@config_option
@json_option
def retry(entry_id: int | None, everything: bool, config: Path | None, as_json: bool) -> None:
    """Make an entry (or --all) due now; the relay takes it at its next poll."""
    if (entry_id is None) == (not everything):
        raise click.UsageError("give an ID or --all (not both)")

    async def work(q):
        return await q.retry(None if everything else entry_id)

    count = _with_queue(config, work)
    if entry_id is not None and count == 0:
        raise click.ClickException(f"no queue entry {entry_id}")
    emit(as_json, {"retried": count}, [f"{count} entr{'y' if count == 1 else 'ies'} due now."])


def _wants_failure(recipient) -> bool:
    """RFC 3461 4.1: without NOTIFY a failure is reported; NEVER asks for nothing."""
    return recipient.notify is None or "FAILURE" in recipient.notify


@queue.command("delete")
@click.argument("entry_id", metavar="ID", type=int)
@click.option("--force", is_flag=True, help="Delete even while a relay worker is sending it (its outcome is lost).")
@config_option
@json_option
def delete(entry_id: int, force: bool, config: Path | None, as_json: bool) -> None:
    """Remove an entry; its sender gets a failure DSN for the recipients still pending."""
    settings = load(config)

    async def go() -> dict[str, Any]:
        from mss.core import Core
        from mss.dsn import RecipientOutcome, build_report
        from mss.queue import QueueBusy, RelayQueue
        from mss.queue_key import QueueKeyError

        core = await Core.open(settings)
        try:
            q = getattr(core, "queue", None) or RelayQueue(settings, core.sessions)
            entry = await q.get(entry_id)
            if entry is None:
                raise click.ClickException(f"no queue entry {entry_id}")
            try:
                content = await q.content(entry_id)  # before it is gone: the DSN returns it
            except QueueKeyError as exc:  # the DSN goes out without the message
                click.echo(
                    f"warning: the queued message cannot be decrypted ({exc}); the DSN will not include it", err=True
                )
                content = b""
            try:
                entry = await q.delete(entry_id, force=force)
            except QueueBusy as exc:
                raise click.ClickException(f"{exc}; wait for the attempt to end, or use --force") from exc
            if entry is None:  # finished by the relay meanwhile
                raise click.ClickException(f"no queue entry {entry_id}")
            now = datetime.now(UTC)
            pending = [r for r in entry.recipients if r.state == "pending" and _wants_failure(r)]
            reported: str | None = None
            if entry.mail_from and pending:
                raw = build_report(
                    reporting_mta=settings.autoconfig.hostname or settings.domain,
                    domain=settings.domain,
                    to=entry.mail_from,
                    original=content,
                    outcomes=[
                        RecipientOutcome(
                            final_recipient=r.address,
                            original_recipient=r.orcpt,
                            action="failed",
                            status=DELETED_STATUS,
                            last_attempt=now if entry.attempts else None,
                        )
                        for r in pending
                    ],
                    envid=entry.envid,
                    ret=entry.ret,
                    arrival=entry.arrival or entry.created_at,
                    now=now,
                    explanation=DELETED_TEXT,
                )
                await core.submission.send_report(entry.mail_from, raw)
                reported = entry.mail_from
            return {"deleted": entry_id, "dsn_to": reported, "recipients": [r.address for r in pending]}
        finally:
            await core.close()

    doc = run(go())
    line = f"Queue entry {entry_id} deleted; " + (
        f"failure DSN sent to <{doc['dsn_to']}>."
        if doc["dsn_to"]
        else "no DSN (null sender, NOTIFY=NEVER or nothing pending)."
    )
    emit(as_json, doc, [line])


@queue.command("stats")
@config_option
@json_option
def stats(config: Path | None, as_json: bool) -> None:
    """Counts for monitoring: entries, pending recipients, leased, due, deferred, oldest age."""

    async def work(q):
        return await q.stats()

    doc = _with_queue(config, work)
    oldest = doc["oldest_age_s"]
    lines = [
        f"entries {doc['entries']}  pending recipients {doc['recipients']}  bytes {doc['bytes']}",
        f"due {doc['due']}  leased {doc['leased']}  deferred {doc['deferred']}  end-to-end {doc['end_to_end']}",
        f"oldest {'-' if oldest is None else f'{oldest:.0f}s'}",
    ]
    emit(as_json, doc, lines)
