"""The tamper-evident audit trail: security events in an append-only, hash-chained table.

What is recorded (docs/operations.md, "Audit trail"): logins and refused logins on SMTP and
IMAP, patient portal logins and refusals, mailbox creation, encryption key creation and
rollover, certificate revocation, app passwords created and revoked, the patient-space life
cycle (created, activated, password changed, opposed, closed, blocks) and patient data
access (conversation read, download, export). Never message content, never a secret: an
event's `fields` are identifiers, counts and reasons (`fields_json` refuses names that look
like secrets).

The chain. Row `seq` (1, 2, 3 ... gapless) carries `prev_hash`, the `hash` of row `seq - 1`
(`GENESIS`, 64 zeros, for seq 1), and `hash` = SHA-256 of `canonical(row)`: the UTF-8 bytes of
the compact JSON array

    ["mss-audit-1", seq, at, type, actor, subject, outcome, fields, prev_hash]

(`json.dumps(..., ensure_ascii=False, separators=(",", ":"))`; `at` the UTC time as
`YYYY-MM-DDTHH:MM:SS.ffffffZ`; `fields` the canonical JSON *text* of the fields object, keys
sorted, as stored in the column), lower-case hex. Changing any column of a row breaks its
hash; deleting or inserting a row breaks the next row's `prev_hash` (and `seq` has a gap or a
duplicate); cutting the tail is seen only against an anchor (`anchor()`: the last seq and
hash of a day, kept elsewhere), or against `audit_head` when whoever cut forgot it.

Writers. Every append locks the one `audit_head` row first (`UPDATE ... RETURNING`: a row lock
on PostgreSQL, held to the commit; on SQLite that write takes the database's single write
lock before anything is read), so appends from any number of processes and nodes chain one
after the other.

Durability, two ways:

* `AuditTrail.record()` and `append()` (inside the caller's transaction, so the event commits
  with the change it describes) are durable when they return: used for the rare operator and
  patient-space events.
* `AuditTrail.submit()` (synchronous, for the hot paths: SMTP/IMAP logins and refusals, portal
  refusals) queues the event in memory; one task writes whatever is queued in one transaction
  (a group commit: a burst of logins costs one transaction, not one each) and starts again as
  soon as it is done. Guarantee: a queued event is written unless the process dies (kill -9,
  power loss) before the next commit, which is at most the events of one commit window; if the
  database stays unavailable and more than `max_pending` events wait, further events are
  counted, not kept, and the count is written as an `audit.dropped` event (and logged at
  ERROR), so a loss is never silent. A failed group commit is retried one event per
  transaction: an event the database refuses on its own (while a clean `audit.dropped` probe
  commits) is quarantined (counted, logged at ERROR, recorded as `audit.dropped` with reason
  `unstorable`) instead of blocking the queue forever. Strings are cleaned first
  (`clean_text`), so that should not happen. `close()` writes what is queued before the node
  stops.

Not recorded: SASL results that test no credential (malformed, cancelled, unsupported), and
SMTP's implicit check of a connection without any certificate; anyone could grow the
append-only table with them (`submit_login`).
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import hmac
import json
import logging
import unicodedata
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mss.db.models import AuditEvent, AuditHead
from mss.metrics import AUDIT_EVENTS_DROPPED
from mss.peers import peer_host

log = logging.getLogger("mss.audit")

VERSION = "mss-audit-1"
ANCHOR_FORMAT = "mss-audit-anchor-1"
#: `prev_hash` of seq 1.
GENESIS = "0" * 64

_MAX_TEXT = 256  # longest string kept in `fields` (a client-influenced value may not flood)
_MAX_FIELDS = 16
_MAX_COLUMN = 400
#: Field names an event may not carry: the trail must never hold a secret.
_FORBIDDEN = ("password", "secret", "token", "private", "content", "body", "code")

Value = str | int | float | bool | None

#: The `login` / `login.certificate` outcomes that say something about a credential; the
#: others (`malformed`, `cancelled`, `unsupported`) test nothing of the client's, never close
#: a connection, and would let anyone grow the append-only table at will.
AUDITED_LOGIN_OUTCOMES = frozenset({"ok", "refused", "unauthorized", "throttled", "unavailable"})


def clean_text(value: str) -> str:
    """`value` as text every backend stores and UTF-8 always encodes: lone surrogates (from
    `surrogateescape` decoding of client bytes) and control characters (NUL, which PostgreSQL
    text refuses, CR, LF, DEL, C1) become `\\xNN` / `\\uNNNN` escapes. A client-influenced
    value (a JWT header's `alg` in a refusal's detail) can then never make an event unstorable."""
    if value.isprintable():
        return value
    out = []
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Cs"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def format_time(when: datetime) -> str:
    """The canonical `at`: UTC, microseconds, `Z` (sorts as text)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fields_json(fields: Mapping[str, Value]) -> str:
    """The canonical JSON text of an event's fields (sorted keys, compact, strings cut).

    Raises ValueError for a field whose name looks like a secret, a non-scalar value or too
    many fields: a programming error, caught in tests, never written."""
    if len(fields) > _MAX_FIELDS:
        raise ValueError(f"an audit event carries at most {_MAX_FIELDS} fields")
    clean: dict[str, Value] = {}
    for name, value in fields.items():
        lowered = name.lower()
        if any(word in lowered for word in _FORBIDDEN):
            raise ValueError(f"audit field {name!r} looks like a secret or content")
        if isinstance(value, str):
            value = value if len(value) <= _MAX_TEXT else f"{value[:_MAX_TEXT]}...(+{len(value) - _MAX_TEXT})"
            value = clean_text(value)
        elif value is not None and not isinstance(value, int | float | bool):
            raise ValueError(f"audit field {name!r}: {type(value).__name__} is not a scalar")
        clean[name] = value
    return json.dumps(clean, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def canonical(
    seq: int, at: str, type: str, actor: str, subject: str, outcome: str, fields: str, prev_hash: str
) -> bytes:
    """The bytes a row's hash covers (module docstring)."""
    return json.dumps(
        [VERSION, seq, at, type, actor, subject, outcome, fields, prev_hash], ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")


def row_hash(seq: int, at: str, type: str, actor: str, subject: str, outcome: str, fields: str, prev_hash: str) -> str:
    return hashlib.sha256(canonical(seq, at, type, actor, subject, outcome, fields, prev_hash)).hexdigest()


def _column(value: str) -> str:
    value = clean_text(str(value))
    return value if len(value) <= _MAX_COLUMN else value[:_MAX_COLUMN]


# -- who did it ------------------------------------------------------------------------------


def cli_actor() -> str:
    """`cli:<login>` of whoever runs the `mss` command."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        user = "?"
    return f"cli:{user}"


def principal_actor(principal: Any) -> str:
    """`<kind>:<identifier>` of a `mss.principal.Principal` (PS:..., ORG:..., PATIENT:...)."""
    if principal.kind == "PATIENT":
        return f"portal:{principal.identifier}"
    return f"{principal.kind}:{principal.identifier}"


# -- appending -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """An event before it has a place in the chain."""

    type: str
    actor: str
    subject: str
    outcome: str
    fields: str  # canonical JSON (fields_json)
    at: str  # canonical time (format_time)

    @classmethod
    def of(
        cls,
        type: str,
        /,
        *,
        actor: str,
        subject: str = "",
        outcome: str = "ok",
        at: datetime | None = None,
        **fields: Value,
    ) -> Record:
        return cls(
            type=_column(type)[:64],
            actor=_column(actor),
            subject=_column(subject),
            outcome=_column(outcome)[:16],
            fields=fields_json(fields),
            at=format_time(at or datetime.now(UTC)),
        )


async def append(session: AsyncSession, records: Sequence[Record]) -> list[int]:
    """Chain `records` inside the session's transaction; their seqs. Durable at its commit.

    The head row is locked first and stays locked until the commit: append last in a
    transaction, and keep that transaction short."""
    if not records:
        return []
    head = (
        await session.execute(
            text("UPDATE audit_head SET seq = seq + :n WHERE id = 1 RETURNING seq, hash"), {"n": len(records)}
        )
    ).one_or_none()
    if head is None:  # never recreated here: a fresh head would restart the chain at seq 1
        raise RuntimeError("the audit_head row is missing: schema older than migration 0007, or removed by hand")
    last, prev = int(head[0]), str(head[1])
    seq = last - len(records)
    rows = []
    for r in records:
        seq += 1
        h = row_hash(seq, r.at, r.type, r.actor, r.subject, r.outcome, r.fields, prev)
        rows.append(
            {
                "seq": seq,
                "at": r.at,
                "type": r.type,
                "actor": r.actor,
                "subject": r.subject,
                "outcome": r.outcome,
                "fields": r.fields,
                "prev_hash": prev,
                "hash": h,
            }
        )
        prev = h
    await session.execute(insert(AuditEvent), rows)
    await session.execute(text("UPDATE audit_head SET hash = :h WHERE id = 1"), {"h": prev})
    return [row["seq"] for row in rows]


class AuditTrail:
    """The node's audit trail: durable `record()`, and `submit()` for the hot paths (module
    docstring: what each guarantees)."""

    def __init__(
        self,
        sessions: async_sessionmaker,
        *,
        max_pending: int = 10_000,
        batch_max: int = 500,
        retry_s: float = 1.0,
        enabled: bool = True,
    ) -> None:
        self.sessions = sessions
        self.max_pending = max_pending
        self.batch_max = batch_max
        self.retry_s = retry_s
        self.enabled = enabled
        self._pending: deque[Record] = deque()
        self._dropped = 0
        #: Events the database refused on their own (not for being unavailable): dropped.
        self.quarantined = 0
        self._wake: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    # -- durable -------------------------------------------------------------------------

    async def record(self, type: str, /, *, actor: str, subject: str = "", outcome: str = "ok", **fields: Value) -> int:
        """Write one event in its own transaction; its seq once committed (0 when disabled)."""
        if not self.enabled:
            return 0
        rec = Record.of(type, actor=actor, subject=subject, outcome=outcome, **fields)
        async with self.sessions() as s, s.begin():
            return (await append(s, [rec]))[0]

    async def record_in(
        self,
        session: AsyncSession,
        type: str,
        /,
        *,
        actor: str,
        subject: str = "",
        outcome: str = "ok",
        **fields: Value,
    ) -> None:
        """Write one event in the caller's transaction: it commits, or not, with the change."""
        if self.enabled:
            await append(session, [Record.of(type, actor=actor, subject=subject, outcome=outcome, **fields)])

    # -- queued (hot paths) --------------------------------------------------------------

    def submit(self, type: str, /, *, actor: str, subject: str = "", outcome: str = "ok", **fields: Value) -> None:
        """Queue one event for the next group commit; never raises into the caller (a login
        must not fail because of its audit line: the failure is logged and counted)."""
        if not self.enabled:
            return
        try:
            rec = Record.of(type, actor=actor, subject=subject, outcome=outcome, **fields)
        except ValueError:
            log.exception("audit event %s not recorded: invalid fields", type)
            self._dropped += 1
            AUDIT_EVENTS_DROPPED.labels("invalid").inc()
            return
        if len(self._pending) >= self.max_pending:
            self._dropped += 1
            AUDIT_EVENTS_DROPPED.labels("queue_full").inc()
            if self._dropped == 1 or self._dropped % 1000 == 0:
                log.error("audit queue full (%d events): %d event(s) dropped so far", self.max_pending, self._dropped)
        else:
            self._pending.append(rec)
        self._kick()

    def submit_login(
        self,
        protocol: str,
        peer: str,
        event: str,
        outcome: str,
        mechanism: str | None,
        fields: Mapping[str, object],
    ) -> None:
        """One `mss.auth.ConnectionAuthentication` result (its log line's fields): `login`
        for a SASL attempt, `login.certificate` for SMTP's check when TLS comes up. The actor
        is the principal when known, else the client's address; the subject the mailbox.

        Only results that say something about a credential are recorded
        (`AUDITED_LOGIN_OUTCOMES`), and not the implicit check of a connection that presented
        no certificate at all (every monitoring probe of the SMTP ports): the log has them."""
        if outcome not in AUDITED_LOGIN_OUTCOMES:
            return
        if event != "auth" and fields.get("reason") == "no_certificate":
            return
        kind, ident = fields.get("kind"), fields.get("id")
        actor = f"{kind}:{ident}" if kind and ident else f"peer:{peer_host(peer)}"
        extra: dict[str, Value] = {"protocol": protocol, "peer": peer, "mechanism": mechanism}
        for name in ("reason", "failures", "closing", "detail", "cert"):
            value = fields.get(name)
            if value is not None and value != "":
                extra[name] = str(value)
        self.submit(
            "login" if event == "auth" else "login.certificate",
            actor=actor,
            subject=str(fields.get("mailbox") or ""),
            outcome=outcome,
            **extra,
        )

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _kick(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: nothing can write; flush() or close() later will
            return
        if self._wake is None:
            self._wake, self._idle = asyncio.Event(), asyncio.Event()
        assert self._idle is not None
        self._idle.clear()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="audit-writer")

    async def _write(self, records: Sequence[Record]) -> None:
        async with self.sessions() as s, s.begin():
            await append(s, records)

    async def _run(self) -> None:
        assert self._wake is not None and self._idle is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending or self._dropped:
                batch = [self._pending.popleft() for _ in range(min(self.batch_max, len(self._pending)))]
                dropped = self._dropped
                records = (
                    [Record.of("audit.dropped", actor="system", subject="audit", outcome="error", count=dropped)]
                    if dropped
                    else []
                ) + batch
                written = 0
                try:
                    await self._write(records)
                    written = len(records)
                except asyncio.CancelledError:
                    self._pending.extendleft(reversed(batch))
                    raise
                except Exception as exc:  # noqa: BLE001 - the database is unavailable, or one event is unstorable
                    log.warning("audit trail: a commit of %d event(s) failed (%s); one at a time", len(records), exc)
                    written = await self._one_by_one(records, batch)
                if dropped and written:
                    self._dropped -= dropped
                rest = records[written:]
                if rest and dropped and not written:
                    rest = rest[1:]  # the count is still in self._dropped
                if rest:
                    log.error("audit trail: database unavailable, %d event(s) not written yet, retrying", len(rest))
                    self._pending.extendleft(reversed(rest))
                    await asyncio.sleep(self.retry_s)
            self._idle.set()

    async def _one_by_one(self, records: list[Record], batch: list[Record]) -> int:
        """After a failed group commit: write `records` one per transaction, so that one the
        database cannot store (it fails alone while a clean `audit.dropped` event still
        commits) is quarantined, counted and logged at ERROR, instead of blocking every later
        event. How many of `records` are done (written or quarantined); it stops at the first
        that fails while the database is unavailable (the rest is retried)."""
        for i, rec in enumerate(records):
            try:
                await self._write([rec])
                continue
            except asyncio.CancelledError:
                self._pending.extendleft(reversed(batch[max(0, i - (len(records) - len(batch))) :]))
                raise
            except Exception as exc:  # noqa: BLE001 - unavailable or unstorable: the probe tells
                error = exc
            try:  # the probe: can the database take a clean event right now?
                await self._write(
                    [
                        Record.of(
                            "audit.dropped",
                            actor="system",
                            subject="audit",
                            outcome="error",
                            count=1,
                            reason="unstorable",
                            event=rec.type,
                        )
                    ]
                )
            except asyncio.CancelledError:
                self._pending.extendleft(reversed(batch[max(0, i - (len(records) - len(batch))) :]))
                raise
            except Exception:  # noqa: BLE001
                return i  # unavailable: records[i:] wait for the next attempt
            self.quarantined += 1
            AUDIT_EVENTS_DROPPED.labels("unstorable").inc()
            log.error(
                "audit trail: event %s (actor %r) could not be stored and was dropped (%d so far): %s: %s",
                rec.type,
                rec.actor,
                self.quarantined,
                type(error).__name__,
                error,
            )
        return len(records)

    async def flush(self) -> None:
        """Return once every event submitted so far is committed."""
        if self._pending or self._dropped:
            self._kick()
        elif self._idle is None or self._idle.is_set():
            return
        assert self._idle is not None
        await self._idle.wait()

    async def close(self, *, timeout: float = 10.0) -> None:
        """Write what is queued (for up to `timeout` seconds), then stop the writer."""
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except TimeoutError:
            log.error("audit trail: %d event(s) could not be written before shutdown", len(self._pending))
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None


# -- reading: verify, export, anchor ---------------------------------------------------------


@dataclass
class Problem:
    seq: int
    what: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.what}"


@dataclass
class Verification:
    events: int = 0
    first: int = 0
    last: int = 0
    last_hash: str = GENESIS
    problems: list[Problem] = field(default_factory=list)
    anchor_checked: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "events": self.events,
            "last_seq": self.last,
            "last_hash": self.last_hash,
            "anchor_checked": self.anchor_checked,
            "problems": [{"seq": p.seq, "what": p.what} for p in self.problems],
        }


def _short(h: str) -> str:
    return h[:16]


async def _rows(sessions: async_sessionmaker, upto: int, *, chunk: int = 2000) -> AsyncIterator[AuditEvent]:
    """The rows with seq <= upto in seq order, `chunk` at a time (a long chain is not loaded
    whole). Rows with a seq below 1 (inserted by hand) come first."""
    after: int | None = None
    while True:
        async with sessions() as s:
            q = select(AuditEvent).where(AuditEvent.seq <= upto).order_by(AuditEvent.seq).limit(chunk)
            if after is not None:
                q = q.where(AuditEvent.seq > after)
            batch = (await s.execute(q)).scalars().all()
        if not batch:
            return
        for row in batch:
            yield row
        after = batch[-1].seq


async def verify(sessions: async_sessionmaker, anchor: Mapping[str, Any] | None = None) -> Verification:
    """Walk the chain (rows up to the head as read at the start, so appends meanwhile do not
    count) and name every row that does not fit; against `anchor` too (its seq must still carry
    its hash)."""
    async with sessions() as s:
        # The newest seq first, then the head: an append committing in between moves the head
        # past it (never the reverse), so a running server does not look truncated.
        top = (await s.execute(text("SELECT max(seq) FROM audit_event"))).scalar()
        head = await s.get(AuditHead, 1)
    head_seq, head_hash = (head.seq, head.hash) if head is not None else (0, GENESIS)
    upto = max(head_seq, int(top or 0))
    result = Verification()
    if head is None:
        result.problems.append(Problem(0, "the audit_head row is missing"))
    expected, prev_seq, prev_hash, before_prev = 1, 0, GENESIS, None
    anchor_seq = int(anchor["seq"]) if anchor else None
    if anchor_seq == 0:  # anchored before the first event: any chain reaches it
        result.anchor_checked, anchor_seq = True, None
    async for row in _rows(sessions, upto):
        result.events += 1
        result.first = result.first or row.seq
        cols = (row.at, row.type, row.actor, row.subject, row.outcome, row.fields)
        recomputed = row_hash(row.seq, *cols, row.prev_hash)
        if row.seq > expected:
            gap = f"seq {expected}" if row.seq == expected + 1 else f"seqs {expected}..{row.seq - 1}"
            result.problems.append(Problem(row.seq, f"{gap} missing before it: row(s) deleted"))
        elif row.seq < expected:
            result.problems.append(Problem(row.seq, f"out of sequence after seq {prev_seq}: row inserted"))
        elif row.prev_hash != prev_hash:
            if before_prev is not None and row.prev_hash == before_prev:
                what = f"its prev_hash is the hash of the row before seq {prev_seq}: seq {prev_seq} was inserted"
            else:
                what = (
                    f"prev_hash {_short(row.prev_hash)} is not the hash of seq {prev_seq} ({_short(prev_hash)}): "
                    f"seq {prev_seq} was rewritten, or a row was inserted or deleted"
                )
            result.problems.append(Problem(row.seq, what))
        if recomputed != row.hash:
            if row_hash(row.seq - 1, *cols, row.prev_hash) == row.hash:
                what = f"this row was seq {row.seq - 1} (renumbered: a row was inserted before it)"
            else:
                what = (
                    f"content does not match its hash (stored {_short(row.hash)}, recomputed {_short(recomputed)}): "
                    "the row was modified (at, type, actor, subject, outcome or fields)"
                )
            result.problems.append(Problem(row.seq, what))
        if anchor_seq is not None and row.seq == anchor_seq:
            result.anchor_checked = True
            if row.hash != anchor["hash"]:
                result.problems.append(
                    Problem(row.seq, f"hash {_short(row.hash)} differs from the anchor's {_short(str(anchor['hash']))}")
                )
        before_prev, prev_hash, prev_seq = prev_hash, row.hash, row.seq
        expected = row.seq + 1
    result.last, result.last_hash = prev_seq, prev_hash
    if head is not None and (head_seq != prev_seq or head_hash != prev_hash):
        result.problems.append(
            Problem(
                head_seq,
                f"audit_head says the chain ends at seq {head_seq} ({_short(head_hash)}) but it ends at seq "
                f"{prev_seq} ({_short(prev_hash)}): rows at the end deleted, or the head altered",
            )
        )
    if anchor_seq is not None and not result.anchor_checked:
        result.problems.append(
            Problem(
                anchor_seq,
                f"the anchor's seq {anchor_seq} is not in the chain (it ends at seq {prev_seq}): the tail was cut",
            )
        )
    return result


def event_dict(row: AuditEvent) -> dict[str, object]:
    """One exported event (a JSON line): the columns, `fields` as an object."""
    return {
        "seq": row.seq,
        "at": row.at,
        "type": row.type,
        "actor": row.actor,
        "subject": row.subject,
        "outcome": row.outcome,
        "fields": json.loads(row.fields),
        "prev_hash": row.prev_hash,
        "hash": row.hash,
    }


async def export(
    sessions: async_sessionmaker, since: datetime | None = None, *, after_seq: int | None = None
) -> AsyncIterator[dict[str, object]]:
    """The events at or after `since` and with a seq above `after_seq`, in seq order. `fields`
    text that is not JSON (edited by hand) is exported as the text.

    `at` is when an event was queued, `seq` when it committed: a queued login may commit after
    an event with a later `at`, so an incremental export must continue from a seq
    (`after_seq`, the last exported or the last anchor's), never from a time."""
    after: int | None = after_seq
    start = format_time(since) if since is not None else None
    while True:
        async with sessions() as s:
            q = select(AuditEvent).order_by(AuditEvent.seq).limit(2000)
            if start is not None:
                q = q.where(AuditEvent.at >= start)
            if after is not None:
                q = q.where(AuditEvent.seq > after)
            batch = (await s.execute(q)).scalars().all()
        if not batch:
            return
        for row in batch:
            try:
                yield event_dict(row)
            except ValueError:  # fields no longer JSON: edited by hand; `verify` names the row
                yield event_dict_raw(row)
        after = batch[-1].seq


def event_dict_raw(row: AuditEvent) -> dict[str, object]:
    return {
        c: getattr(row, c) for c in ("seq", "at", "type", "actor", "subject", "outcome", "fields", "prev_hash", "hash")
    }


def _anchor_bytes(doc: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in doc.items() if k != "hmac_sha256"}
    return json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


def anchor_mac(key: bytes, doc: Mapping[str, Any]) -> str:
    return hmac.new(key, _anchor_bytes(doc), hashlib.sha256).hexdigest()


async def anchor(
    sessions: async_sessionmaker,
    *,
    day: date | None = None,
    domain: str = "",
    key: bytes | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, object]:
    """The anchor of `day` (UTC): the last event recorded that day or before, as
    {format, domain, day, seq, hash, at, created_at[, hmac_sha256]}; without `day`, the
    newest event. Keep it away from the database (mail it, sign it, print it): `verify
    --anchor` then proves the chain still reaches it unchanged. seq 0 when there is none."""
    async with sessions() as s:
        q = select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1)
        if day is not None:
            q = q.where(
                AuditEvent.at < format_time(datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC))
            )
        row = (await s.execute(q)).scalars().first()
    doc: dict[str, object] = {
        "format": ANCHOR_FORMAT,
        "domain": domain,
        "day": day.isoformat() if day is not None else None,
        "seq": row.seq if row is not None else 0,
        "hash": row.hash if row is not None else GENESIS,
        "at": row.at if row is not None else None,
        "created_at": format_time(clock()),
    }
    if key:
        doc["hmac_sha256"] = anchor_mac(key, doc)
    return doc


def check_anchor_document(doc: Mapping[str, Any], key: bytes | None) -> list[str]:
    """What is wrong with an anchor file itself (format, MAC); empty when it can be used."""
    problems = []
    if (
        doc.get("format") != ANCHOR_FORMAT
        or not isinstance(doc.get("seq"), int)
        or not isinstance(doc.get("hash"), str)
    ):
        return [f"not an audit anchor ({ANCHOR_FORMAT} with seq and hash)"]
    if key:
        mac = doc.get("hmac_sha256")
        if not isinstance(mac, str):
            problems.append("the anchor has no hmac_sha256 but [audit] anchor_key_file is set")
        elif not hmac.compare_digest(mac, anchor_mac(key, doc)):
            problems.append("the anchor's hmac_sha256 does not match: the anchor file was altered")
    return problems
