"""Folders and messages: the only writer of `folder`, `message` and `message_keyword` rows.

Everything handed to `Store` is already ciphertext (see `mss.sealing` and `mss.delivery`):
the store never sees a clear message. UIDs and MODSEQs come from the per-folder counters,
bumped in the same transaction as the rows they number (RFC 9051 2.3.1.1; RFC 7162 3.1);
UIDVALIDITY comes from a store-wide counter, so it only ever grows.

Every method names the mailbox it acts on, and every folder id is checked against it in
SQL: a folder id of another mailbox matches nothing. Every write goes through the group
committer (`mss.commit`), which shares transactions and fsyncs between concurrent writers.
Front ends never see this class: they get a `mss.services.MailboxHandle`.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC
from typing import TypeVar

from sqlalchemy import Select, bindparam, delete, func, insert, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crypto.dates import as_utc
from mss.commit import GroupCommit, Locks
from mss.db.models import (
    Folder,
    MailboxUsage,
    MemberSubscription,
    Message,
    MessageKeyword,
    MessageSeen,
    StoreCounter,
    Vanished,
)
from mss.events import Events
from mss.folder_cache import FolderCache, ListState
from mss.records import (
    DELIMITER,
    FlagMode,
    FolderInfo,
    MessageMeta,
    NewMessage,
    OuterHeaders,
    Quota,
    QuotaLimits,
    StoredRef,
    canonical_folder_name,
)
from mss.refusals import Reason, Refusal
from mss.rights import flag_right
from mss.structure_cache import StructureCache
from mss.write_gate import ProcessWriteGate

T = TypeVar("T")
#: Work done in a write's own transaction once its rows exist (see `Store.write_some`): the
#: refs in batch order, None for an optional message the quota left out.
AfterWrite = Callable[[AsyncSession, list[StoredRef | None]], Awaitable[None]]

#: RFC 6154 special-use folders created with every mailbox.
DEFAULT_FOLDERS: tuple[tuple[str, str | None], ...] = (
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
)
_DEFAULT_NAMES = frozenset(name for name, _ in DEFAULT_FOLDERS)
#: RFC 9051 2.3.2 system flags and the column each one is kept in.
SYSTEM_FLAGS: dict[str, str] = {
    "\\Seen": "seen",
    "\\Answered": "answered",
    "\\Flagged": "flagged",
    "\\Deleted": "deleted",
    "\\Draft": "draft",
}
MAX_KEYWORD = 255
#: Operations on more messages than this run in a transaction of their own (`mss.commit`):
#: a COPY of a whole folder must not hold up the deliveries queued behind it.
BULK = 500
#: Most values in one SQL IN list (PostgreSQL and SQLite cap bound parameters near 32,766).
IN_CHUNK = 1000
MAX_FOLDER_NAME = 255
#: Most UIDs the members' \\Seen sets hold in all (`Store._seen_set`), least recently used
#: evicted first: about 2,000,000 ints (some tens of MB), whatever the number of (folder,
#: member) entries; a set larger than this alone is not kept.
SEEN_UIDS = 2_000_000
_UIDVALIDITY = "uidvalidity:"  # + mailbox: one counter per BAL
_FLOOR = "uidvalidity-floor"  # where a mailbox's first counter starts (migration 0004)
_MAX_UIDVALIDITY = 2**32 - 1  # RFC 9051 9: nz-number, 32 bits


def folder_name_problem(name: str) -> str | None:
    """Why a new folder name is refused, or None (RFC 9051 5.1: no wildcards, no controls,
    no empty hierarchy level)."""
    if not name or len(name) > MAX_FOLDER_NAME:
        return f"Folder name must be 1 to {MAX_FOLDER_NAME} characters"
    if any(c in name for c in "*%") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "Folder name contains a character that is not allowed"
    if name.startswith(DELIMITER) or DELIMITER * 2 in name or name.endswith(DELIMITER):
        return "Folder name has an empty hierarchy level"
    return None


def _no_folder(name: str | None = None) -> Refusal:
    return Refusal(Reason.NO_SUCH_FOLDER, f"No folder {name}" if name else "The folder no longer exists")


def _over_quota(q: Quota, octets: int, messages: int) -> Refusal:
    what = "storage" if not q.plus(octets, 0).fits(0, 0) else "messages"
    return Refusal(
        Reason.OVER_QUOTA,
        f"Mailbox <{q.mailbox}> is over its quota",
        f"{q.mailbox} over quota ({what}): {q.storage_used}+{octets}/{q.storage_limit or '-'} octets, "
        f"{q.messages_used}+{messages}/{q.messages_limit or '-'} messages",
    )


async def forget_member(s: AsyncSession, mailbox: str, member: str) -> int:
    """Delete a former member's own \\Seen (`message_seen`) and subscriptions
    (`member_subscription`) on the folders of the shared `mailbox`, in the caller's
    transaction (`mss mailbox revoke`: nothing of their idNat_PS stays behind). Returns how
    many rows went. The HIGHESTMODSEQ of each folder where the member had seen something
    moves by one: a serving node keeps each member's \\Seen set under the folder's state
    (`Store._seen_set`), and must not show the member, granted again, what this forgot."""
    folders = select(Folder.id).where(Folder.mailbox == mailbox.lower()).scalar_subquery()
    touched = select(MessageSeen.folder_id).where(MessageSeen.folder_id.in_(folders), MessageSeen.member == member)
    await s.execute(
        update(Folder)
        .where(Folder.id.in_(touched.distinct().scalar_subquery()))
        .values(highestmodseq=Folder.highestmodseq + 1)
        .execution_options(synchronize_session=False)
    )
    gone = 0
    for model in (MessageSeen, MemberSubscription):
        res = await s.execute(
            delete(model)
            .where(model.folder_id.in_(folders), model.member == member)
            .execution_options(synchronize_session=False)
        )
        gone += res.rowcount or 0
    return gone


# The statements every delivery makes, built once with bound parameters: building a
# SQLAlchemy expression per message (`Folder.uidnext + n`, `MailboxUsage.mailbox == m`) took
# about a fifth of the event loop's busy time under SMTP load (py-spy, bench compare).
#: What a folder list holds of each message (`MessageMeta`), and STORE reads under its lock:
#: flags and dates only, never the ciphertext. The row's id first, for its keywords.
_META_COLUMNS = (
    Message.id,
    Message.uid,
    Message.modseq,
    Message.internaldate,
    Message.size,
    *(getattr(Message, c) for c in SYSTEM_FLAGS.values()),
)
_READ_QUOTA = select(
    MailboxUsage.storage_bytes,
    MailboxUsage.messages,
    MailboxUsage.limit_bytes,
    MailboxUsage.limit_messages,
).where(MailboxUsage.mailbox == bindparam("b_mailbox"))
_RESERVE = (
    update(Folder)
    .where(Folder.mailbox == bindparam("b_mailbox"), Folder.name == bindparam("b_name"))
    .values(uidnext=Folder.uidnext + bindparam("b_n"), highestmodseq=Folder.highestmodseq + bindparam("b_n"))
    .returning(Folder.id, Folder.uidvalidity, Folder.uidnext, Folder.highestmodseq)
)
_TAKE_USAGE = (
    update(MailboxUsage)
    .where(MailboxUsage.mailbox == bindparam("b_mailbox"))
    .values(
        storage_bytes=MailboxUsage.storage_bytes + bindparam("b_octets"),
        messages=MailboxUsage.messages + bindparam("b_messages"),
    )
)


def _add_usage(upsert: Callable[[type[MailboxUsage]], PgInsert | SqliteInsert]) -> PgInsert | SqliteInsert:
    """The dialect's upsert adding to a mailbox's usage (`Store._count`)."""
    stmt = upsert(MailboxUsage).values(
        mailbox=bindparam("b_mailbox"), storage_bytes=bindparam("b_octets"), messages=bindparam("b_messages")
    )
    return stmt.on_conflict_do_update(
        index_elements=["mailbox"],
        set_={
            "storage_bytes": MailboxUsage.storage_bytes + stmt.excluded.storage_bytes,
            "messages": MailboxUsage.messages + stmt.excluded.messages,
        },
    )


_ADD_USAGE = {"postgresql": _add_usage(pg_insert), "sqlite": _add_usage(sqlite_insert)}


async def read_quota(s: AsyncSession, mailbox: str, defaults: QuotaLimits) -> Quota:
    """A mailbox's usage and limits as this transaction sees them (a mailbox never written to
    has no row: nothing used, the defaults)."""
    mailbox = mailbox.lower()
    # Core on the session's connection (no ORM layer): read at RCPT, before and in each write.
    row = (await (await s.connection()).execute(_READ_QUOTA, {"b_mailbox": mailbox})).first()
    used, count, own_bytes, own_messages = row if row is not None else (0, 0, None, None)
    return Quota(
        mailbox=mailbox,
        storage_used=used,
        messages_used=count,
        storage_limit=defaults.storage if own_bytes is None else own_bytes,
        messages_limit=defaults.messages if own_messages is None else own_messages,
        storage_override=own_bytes,
        messages_override=own_messages,
    )


async def set_quota_limits(s: AsyncSession, mailbox: str, changes: Mapping[str, int | None]) -> None:
    """The operator's limits of one mailbox (`mss mailbox quota`), in the caller's transaction:
    `changes` maps "storage" / "messages" to a limit (0: none) or None (the default); a key not
    given keeps its value. Only the limit columns are written: a delivery committing at the
    same moment keeps its usage change (one row, updated in place)."""
    columns = {"storage": "limit_bytes", "messages": "limit_messages"}
    if not changes or set(changes) - set(columns):
        raise ValueError(f"changes must name some of {sorted(columns)}")
    if any(v is not None and v < 0 for v in changes.values()):
        raise ValueError("a quota limit is 0 (none) or positive")
    values = {columns[k]: v for k, v in changes.items()}
    upsert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    await s.execute(
        upsert(MailboxUsage)
        .values(mailbox=mailbox.lower(), storage_bytes=0, messages=0, **values)
        .on_conflict_do_update(index_elements=["mailbox"], set_=values)
    )


def _folder_info(f: Folder, exists: int = 0, unseen: int = 0, recent: int = 0) -> FolderInfo:
    return FolderInfo(
        id=f.id,
        mailbox=f.mailbox,
        name=f.name,
        uidvalidity=f.uidvalidity,
        uidnext=f.uidnext,
        highestmodseq=f.highestmodseq,
        special_use=f.special_use,
        subscribed=f.subscribed,
        exists=exists,
        unseen=unseen,
        recent=recent,
        recent_uid=f.recent_uid if f.recent_uid is not None else 1,
    )


def _flag_set(row: Message | tuple, keywords: Iterable[str] = ()) -> frozenset[str]:
    """The flag set of a row, from its five columns and its keywords."""
    return frozenset([name for name, column in SYSTEM_FLAGS.items() if getattr(row, column)] + list(keywords))


#: Every combination of the five system flags, by bit mask (bit k: the k-th of
#: `SYSTEM_FLAGS`): the flag sets of a folder's messages are shared, not built per row.
_FLAG_SETS: tuple[frozenset[str], ...] = tuple(
    frozenset(name for k, name in enumerate(SYSTEM_FLAGS) if mask >> k & 1) for mask in range(1 << len(SYSTEM_FLAGS))
)


def _system_values(flags: Iterable[str]) -> dict[str, bool]:
    present = set(flags)
    return {column: name in present for name, column in SYSTEM_FLAGS.items()}


def _meta_uid(m: MessageMeta) -> int:
    return m.uid


def _keywords(flags: Iterable[str]) -> set[str]:
    return {f for f in flags if f not in SYSTEM_FLAGS and not f.startswith("\\")}


class Store:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        events: Events | None = None,
        *,
        max_batch: int = 64,
        quota: QuotaLimits | None = None,
        write_gate: ProcessWriteGate | None = None,
    ) -> None:
        self.sessions = sessions
        self.events = events or Events()
        #: Folder message lists by (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ) (`mss.folder_cache`).
        self.folder_cache = FolderCache()
        #: Kept structures by (mailbox, folder, UIDVALIDITY) (`mss.structure_cache`).
        self.structure_cache = StructureCache()
        #: Message list reads in flight, by the state their callers knew (`messages`).
        self._list_reads: dict[tuple[str, int, ListState], asyncio.Future[list[MessageMeta]]] = {}
        #: Members' own \\Seen UIDs by (folder, member), under the folder's state (`_seen_set`).
        self._seen_sets: OrderedDict[tuple[int, str], tuple[ListState, frozenset[int]]] = OrderedDict()
        #: How many UIDs `_seen_sets` holds in all (bounded by `SEEN_UIDS`).
        self._seen_uids = 0
        #: \\Recent claims in flight (`claim_recent`).
        self._claims: dict[tuple[str, int], asyncio.Future[tuple[int, int]]] = {}
        #: Folder state reads in flight, shared by whoever asks meanwhile (`folder_state`).
        self._state_reads: dict[tuple[str, int], asyncio.Future[tuple[int, int, int, int] | None]] = {}
        self.events.on_change(self._changed)
        #: Every mailbox's limits unless the operator set its own (none by default here; the
        #: server passes `[limits] mailbox_quota`, `mailbox_quota_messages`).
        self.quota_limits = quota or QuotaLimits()
        self.commit = GroupCommit(sessions, self._lock, self.events.publish, max_batch=max_batch, gate=write_gate)

    async def close(self) -> None:
        """Commit what is queued, then stop the committer."""
        await self.commit.stop()
        if self.commit.gate is not None:
            self.commit.gate.close()

    # -- reads ---------------------------------------------------------------------------

    async def list_folders(self, mailbox: str, reader: str | None = None) -> list[FolderInfo]:
        """The mailbox's folders by name; `reader`: a member of a shared mailbox, whose own
        subscriptions are shown (`member_subscription`)."""
        async with self.sessions() as s:
            rows = (
                (await s.execute(select(Folder).where(Folder.mailbox == mailbox.lower()).order_by(Folder.name)))
                .scalars()
                .all()
            )
            out = [_folder_info(f) for f in rows]
            if reader is not None and out:
                own = await self._subscriptions(s, [f.id for f in out], reader)
                out = [replace(f, subscribed=own.get(f.id, True)) for f in out]
        return out

    @staticmethod
    async def _subscriptions(s: AsyncSession, folder_ids: Sequence[int], reader: str) -> dict[int, bool]:
        rows = await s.execute(
            select(MemberSubscription.folder_id, MemberSubscription.subscribed).where(
                MemberSubscription.folder_id.in_(folder_ids), MemberSubscription.member == reader
            )
        )
        return dict(rows.all())

    async def get_folder(self, mailbox: str, name: str, reader: str | None = None) -> FolderInfo | None:
        """The folder with its message and unseen counts, or None. `reader`: a member of a
        shared mailbox; the unseen count and the subscription are theirs (RFC 4314 4)."""
        async with self.sessions() as s:
            f = (
                await s.execute(
                    select(Folder).where(Folder.mailbox == mailbox.lower(), Folder.name == canonical_folder_name(name))
                )
            ).scalar_one_or_none()
            if f is None:
                return None
            cached = self.folder_cache.get(f.id, f.mailbox, ListState(f.uidvalidity, f.uidnext, f.highestmodseq))
            if cached is not None:  # counted in memory: no scan of the folder's rows
                unseen = self.folder_cache.unseen(f.id)
                recent = len(cached) - bisect_left(cached, f.recent_uid, key=_meta_uid)  # in UID order
                exists = len(cached)
            else:
                exists, unseen, recent = (
                    await s.execute(
                        select(
                            func.count(),
                            func.count().filter(Message.seen.is_(False)),
                            func.count().filter(Message.uid >= f.recent_uid),
                        ).where(Message.folder_id == f.id)
                    )
                ).one()
            info = _folder_info(f, exists, unseen or 0, recent or 0)
            if reader is not None:
                seen = (
                    await s.execute(
                        select(func.count()).where(MessageSeen.folder_id == f.id, MessageSeen.member == reader)
                    )
                ).scalar_one()
                own = await self._subscriptions(s, [f.id], reader)
                info = replace(info, unseen=max(exists - seen, 0), subscribed=own.get(f.id, True))
        return info

    async def quota(self, mailbox: str) -> Quota:
        """The mailbox's usage and limits (IMAP GETQUOTA, the RCPT check)."""
        async with self.sessions() as s:
            return await read_quota(s, mailbox, self.quota_limits)

    async def quotas(self, mailboxes: Iterable[str]) -> dict[str, Quota]:
        """`quota` of several mailboxes, read together (a delivery's recipients)."""
        async with self.sessions() as s:
            return {m.lower(): await read_quota(s, m, self.quota_limits) for m in set(mailboxes)}

    async def fitting(self, batch: Sequence[NewMessage]) -> list[bool]:
        """Whether each message would fit its mailbox's quota now, in batch order (each after
        the ones before it that fit): what a delivery checks before it writes, to leave out
        the recipients without room. Not a promise: `write` checks again, exactly."""
        quotas = await self.quotas(i.mailbox for i in batch)
        admitted = set(_admitted(batch, quotas))
        return [i in admitted for i in range(len(batch))]

    async def _charge(self, s: AsyncSession, mailbox: str, octets: int, messages: int) -> None:
        """Count `messages` new messages of `octets` against the mailbox, or refuse them
        (`OVER_QUOTA`, RFC 9208 4.3) before anything is written. Exact: every write of a
        mailbox holds its lock (`_lock`) until it commits, so no other write moves the
        usage between this read and the commit."""
        q = await read_quota(s, mailbox, self.quota_limits)
        if not q.fits(octets, messages):
            raise _over_quota(q, octets, messages)
        await self._count(s, mailbox, octets, messages)

    @staticmethod
    async def _count(s: AsyncSession, mailbox: str, octets: int, messages: int) -> None:
        """Add to (or, negative, take from) the mailbox's usage, in the write's transaction."""
        if not octets and not messages:
            return
        params = {"b_mailbox": mailbox.lower(), "b_octets": octets, "b_messages": messages}
        conn = await s.connection()
        if octets >= 0 and messages >= 0:
            dialect = "postgresql" if s.get_bind().dialect.name == "postgresql" else "sqlite"
            await conn.execute(_ADD_USAGE[dialect], params)
            return
        await conn.execute(_TAKE_USAGE, params)

    async def claim_recent(self, mailbox: str, folder_id: int) -> tuple[int, int]:
        """Claim the folder's recent messages for one session (RFC 3501 2.3.2): returns the
        UIDs recent to the caller as a range [first, end), and moves the folder's `recent_uid` to `uidnext`, so
        no other session sees those messages as recent. One write, through the group
        committer (serialised with the deliveries to this mailbox); nothing to claim, no write.

        While one claim for the folder is in flight, another caller gets nothing at once (an
        empty range, (0, 0)) instead of a write of its own, and does not wait for the claim's
        commit: every IDLE session on the folder tries at once when mail arrives, only one
        may have it, and the others' `* n EXISTS` need not wait for its fsync. A message that
        lands after that claim read UIDNEXT wakes the sessions again and is claimed then."""
        key = (mailbox.lower(), folder_id)
        if key in self._claims:
            return 0, 0
        pending = asyncio.ensure_future(self._claim_recent(mailbox, folder_id))
        self._claims[key] = pending
        pending.add_done_callback(lambda _: self._claims.pop(key, None))
        return await asyncio.shield(pending)

    async def _claim_recent(self, mailbox: str, folder_id: int) -> tuple[int, int]:
        async def run(s: AsyncSession) -> tuple[tuple[int, int], Iterable[int]]:
            row = (
                await s.execute(
                    select(Folder.recent_uid, Folder.uidnext).where(
                        Folder.id == folder_id, Folder.mailbox == mailbox.lower()
                    )
                )
            ).one_or_none()
            if row is None:
                raise _no_folder()
            first, uidnext = row
            if first < uidnext:
                await s.execute(
                    update(Folder).where(Folder.id == folder_id, Folder.recent_uid == first).values(recent_uid=uidnext)
                )
            return (first, uidnext), ()

        return await self.commit.run(Locks(mailbox.lower(), frozenset({folder_id})), run)

    async def folder_state(
        self, mailbox: str, folder_id: int, uidvalidity: int | None = None
    ) -> tuple[int, int, int] | None:
        """(UIDNEXT, HIGHESTMODSEQ, first UID not yet claimed as \\Recent) of a folder, None
        if it is gone: one primary-key read, so a session can tell after each command
        whether anything changed. `uidvalidity`: the folder's as the caller knows it; a
        folder row of another UIDVALIDITY is another folder that took the id (SQLite gives a
        new row the id of the row deleted last), so the caller's folder is gone.

        Concurrent asks for one folder share one read (a new message wakes every IDLE
        session on the folder at once); a change published here or by another node drops
        the read in flight, so whoever asks after an event reads after it."""
        key = (mailbox.lower(), folder_id)
        pending = self._state_reads.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._read_state(*key))
            self._state_reads[key] = pending
            pending.add_done_callback(
                lambda f: self._state_reads.pop(key, None) if self._state_reads.get(key) is f else None
            )
        row = await asyncio.shield(pending)
        if row is None or (uidvalidity is not None and row[3] != uidvalidity):
            return None
        return row[:3]

    async def _read_state(self, mailbox: str, folder_id: int) -> tuple[int, int, int, int] | None:
        """The state row; and when the folder cache has no list for that state, the list
        too, in the same read: whoever asks for a folder's state asks for its list next
        when the state moved (`imap.session.Session.sync`), and thousands of IDLE sessions
        woken by one delivery then find it cached instead of waiting for a second read."""
        async with self.sessions() as s:
            row = (
                await s.execute(
                    select(Folder.uidnext, Folder.highestmodseq, Folder.recent_uid, Folder.uidvalidity).where(
                        Folder.id == folder_id, Folder.mailbox == mailbox
                    )
                )
            ).first()
            if row is None:
                return None
            state = ListState(row[3], row[0], row[1])
            if not self.folder_cache.holds(folder_id, mailbox, state):
                self.folder_cache.put(folder_id, mailbox, state, await self._fresh_list(s, mailbox, folder_id, state))
        return (row[0], row[1], row[2], row[3])

    def _changed(self, folder_id: int) -> None:
        """An event for `folder_id`: reads of its state started before it are not shared on."""
        for key in [k for k in self._state_reads if k[1] == folder_id]:
            del self._state_reads[key]

    @staticmethod
    def _in_folder(query: Select, mailbox: str, folder_id: int) -> Select:
        """Restrict a message query to one folder of one mailbox (the id alone is not trusted)."""
        return query.join(Folder, Folder.id == Message.folder_id).where(
            Message.folder_id == folder_id, Folder.mailbox == mailbox.lower()
        )

    async def messages(
        self, mailbox: str, folder_id: int, known_state: ListState | None = None, reader: str | None = None
    ) -> list[MessageMeta]:
        """Every message of the folder in UID order (their sequence numbers are 1..n): from
        the folder cache when the folder's state has not moved since it was read.
        `known_state` is the folder's UIDVALIDITY with the (UIDNEXT, HIGHESTMODSEQ) the
        caller has just read (`folder_state`): when the cache holds the list for it, no read
        at all.

        `reader`: a member of a shared mailbox, whose own \\Seen replaces the mailbox-wide
        one (RFC 4314 4). Laid over the cached list (one indexed read of the member's
        `message_seen` rows): the cache holds the mailbox-wide list only, shared by all."""
        metas = await self._messages(mailbox, folder_id, known_state)
        if reader is None:
            return metas
        return _overlay_seen(metas, await self._seen_set(mailbox.lower(), folder_id, reader))

    async def _seen_set(self, mailbox: str, folder_id: int, reader: str) -> frozenset[int]:
        """The UIDs `reader` has seen, kept per (folder, member) under the folder's state:
        every change of `message_seen` rows moves UIDNEXT or HIGHESTMODSEQ in its own
        transaction (a member's \\Seen change gives the message a new MODSEQ), so the set
        read under a state holds while the folder row shows it. One UID set per (folder,
        member), the sets bounded together by the UIDs they hold (`SEEN_UIDS`, least recently
        used evicted); the member's message list itself is not kept (the folder cache's
        mailbox-wide list is shared by all)."""
        async with self.sessions() as s:
            row = (
                await s.execute(
                    select(Folder.uidvalidity, Folder.uidnext, Folder.highestmodseq).where(
                        Folder.id == folder_id, Folder.mailbox == mailbox
                    )
                )
            ).first()
            if row is None:
                return frozenset()
            state = ListState(*row)
            key = (folder_id, reader)
            hit = self._seen_sets.get(key)
            if hit is not None and hit[0] == state:
                self._seen_sets.move_to_end(key)
                return hit[1]
            seen = frozenset(await self._seen_by(s, folder_id, reader))
        old = self._seen_sets.pop(key, None)
        if old is not None:
            self._seen_uids -= len(old[1])
        if len(seen) <= SEEN_UIDS:
            self._seen_sets[key] = (state, seen)
            self._seen_uids += len(seen)
        while self._seen_uids > SEEN_UIDS:
            _, (_, evicted) = self._seen_sets.popitem(last=False)
            self._seen_uids -= len(evicted)
        return seen

    @staticmethod
    async def _seen_by(s: AsyncSession, folder_id: int, reader: str, uids: Sequence[int] | None = None) -> set[int]:
        """The UIDs `reader` has seen in the folder (all, or among `uids`)."""
        q = select(MessageSeen.uid).where(MessageSeen.folder_id == folder_id, MessageSeen.member == reader)
        if uids is None:
            return set((await s.execute(q)).scalars())
        out: set[int] = set()
        for chunk in _chunks(list(uids), IN_CHUNK):
            out.update((await s.execute(q.where(MessageSeen.uid.in_(chunk)))).scalars())
        return out

    async def _messages(self, mailbox: str, folder_id: int, known_state: ListState | None = None) -> list[MessageMeta]:
        mailbox = mailbox.lower()
        if known_state is None:
            return await self._load_messages(mailbox, folder_id)
        hit = self.folder_cache.get(folder_id, mailbox, known_state)
        if hit is not None:
            return list(hit)
        # Every IDLE session on the folder asks at once after a change: one read for all who
        # know the same state (the read starts after they read it, so it is at least as new).
        key = (mailbox, folder_id, known_state)
        pending = self._list_reads.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._load_messages(mailbox, folder_id))
            self._list_reads[key] = pending
            pending.add_done_callback(lambda _: self._list_reads.pop(key, None))
        return list(await asyncio.shield(pending))

    async def _load_messages(self, mailbox: str, folder_id: int) -> list[MessageMeta]:
        async with self.sessions() as s:
            row = (
                await s.execute(
                    select(Folder.uidvalidity, Folder.uidnext, Folder.highestmodseq).where(
                        Folder.id == folder_id, Folder.mailbox == mailbox
                    )
                )
            ).first()
            if row is None:
                return []
            state = ListState(*row)
            cached = self.folder_cache.get(folder_id, mailbox, state)
            if cached is not None:
                return list(cached)
            out = await self._fresh_list(s, mailbox, folder_id, state)
        self.folder_cache.put(folder_id, mailbox, state, out)
        return out

    async def _fresh_list(self, s: AsyncSession, mailbox: str, folder_id: int, state: ListState) -> list[MessageMeta]:
        """The folder's list for `state` (read just before, in this session): the list held
        for an older state of the same folder brought up to date with what changed since
        its HIGHESTMODSEQ (`mss.folder_cache`), else the whole folder. Read after the state
        row, so possibly newer than `state`, which the cache allows (a list newer than its
        key is correct for whoever sees the key; the next change moves it)."""
        base = self.folder_cache.base(folder_id, mailbox, state.uidvalidity)
        if base is None:
            return await self._read_messages(s, mailbox, folder_id)
        held, metas = base
        if held.highestmodseq > state.highestmodseq or held.uidnext > state.uidnext:  # not older
            return await self._read_messages(s, mailbox, folder_id)
        since = held.highestmodseq
        changed = await self._read_messages(s, mailbox, folder_id, since=since)
        gone = set(
            (await s.execute(select(Vanished.uid).where(Vanished.folder_id == folder_id, Vanished.modseq > since)))
            .scalars()
            .all()
        )
        self.folder_cache.deltas += 1
        by_uid = {m.uid: m for m in changed}
        out = [by_uid.pop(m.uid, m) for m in metas if m.uid not in gone]
        if by_uid:  # new messages (UIDs above every one held), unless expunged already
            top = out[-1].uid if out else 0
            new = [m for uid, m in sorted(by_uid.items()) if uid not in gone]
            out.extend(new)
            if new and new[0].uid < top:  # never by UIDs (RFC 3501 2.3.1.1), but stay sorted
                out.sort(key=_meta_uid)
        return out

    async def _read_messages(
        self, s: AsyncSession, mailbox: str, folder_id: int, *, since: int | None = None
    ) -> list[MessageMeta]:
        """The folder's messages in UID order; `since`: only those whose MODSEQ is above it."""
        query = self._in_folder(select(*_META_COLUMNS), mailbox, folder_id)
        if since is not None:
            query = query.where(Message.modseq > since)
        rows = (await s.execute(query.order_by(Message.uid))).all()
        keywords = (
            await self._folder_keywords(s, folder_id)
            if since is None
            else await self._keywords_of(s, [r[0] for r in rows])
        )
        # The hot loop of SELECT on a large folder: plain tuple unpacking, shared flag sets.
        out: list[MessageMeta] = []
        for mid, uid, modseq, when, size, f0, f1, f2, f3, f4 in rows:
            flags = _FLAG_SETS[f0 | f1 << 1 | f2 << 2 | f3 << 3 | f4 << 4]
            words = keywords.get(mid)
            out.append(MessageMeta(uid, modseq, flags.union(words) if words else flags, as_utc(when), size))
        return out

    @staticmethod
    async def _folder_keywords(s: AsyncSession, folder_id: int) -> dict[int, list[str]]:
        rows = await s.execute(
            select(MessageKeyword.message_id, MessageKeyword.keyword)
            .join(Message, Message.id == MessageKeyword.message_id)
            .where(Message.folder_id == folder_id)
        )
        out: dict[int, list[str]] = {}
        for mid, word in rows.all():
            out.setdefault(mid, []).append(word)
        return out

    async def headers(self, mailbox: str, folder_id: int, uids: Sequence[int]) -> dict[int, OuterHeaders]:
        out: dict[int, OuterHeaders] = {}
        async with self.sessions() as s:
            for chunk in _chunks(list(uids), 500):
                rows = await s.execute(
                    self._in_folder(
                        select(
                            Message.uid,
                            Message.hdr_from,
                            Message.hdr_to,
                            Message.hdr_cc,
                            Message.hdr_subject,
                            Message.hdr_date,
                            Message.hdr_message_id,
                        ),
                        mailbox,
                        folder_id,
                    ).where(Message.uid.in_(chunk))
                )
                for uid, *vals in rows.all():
                    out[uid] = OuterHeaders(*vals)
        return out

    async def content(self, mailbox: str, folder_id: int, uids: Sequence[int]) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        async with self.sessions() as s:
            for chunk in _chunks(list(uids), 200):
                rows = await s.execute(
                    self._in_folder(select(Message.uid, Message.content), mailbox, folder_id).where(
                        Message.uid.in_(chunk)
                    )
                )
                out.update({u: bytes(c) for u, c in rows.all()})
        return out

    async def structures(self, mailbox: str, folder_id: int, uids: Sequence[int]) -> dict[int, bytes]:
        """The derived structures kept for these messages (`keep_structures`); a message
        with none is missing from the answer. Held in memory too (`mss.structure_cache`):
        once read, a folder's structures cost one primary-key read of the folder row."""
        mailbox = mailbox.lower()
        async with self.sessions() as s:
            validity = (
                await s.execute(select(Folder.uidvalidity).where(Folder.id == folder_id, Folder.mailbox == mailbox))
            ).scalar_one_or_none()
            if validity is None:
                return {}
            key = (mailbox, folder_id, validity)
            out, missing = self.structure_cache.get(key, uids)
            if not missing:
                return out
            read: dict[int, bytes] = {}
            for chunk in _chunks(missing, IN_CHUNK):
                rows = await s.execute(
                    select(Message.uid, Message.structure).where(
                        Message.folder_id == folder_id, Message.uid.in_(chunk), Message.structure.is_not(None)
                    )
                )
                read.update({u: bytes(v) for u, v in rows.all()})
        self.structure_cache.put(key, read)
        out.update(read)
        return out

    async def keep_structures(self, mailbox: str, folder_id: int, structures: dict[int, bytes]) -> None:
        """Keep what a front end derived from each message's clear structure (opaque here).
        Not a change of the folder: no MODSEQ moves and no session is told."""
        if not structures:
            return
        params = [{"fid": folder_id, "u": uid, "v": value} for uid, value in structures.items()]

        async def run(s: AsyncSession) -> tuple[int | None, Iterable[int]]:
            validity = (
                await s.execute(
                    select(Folder.uidvalidity).where(Folder.id == folder_id, Folder.mailbox == mailbox.lower())
                )
            ).scalar_one_or_none()
            if validity is not None:
                conn = await s.connection()
                await conn.execute(_KEEP_STRUCTURE, params)
            return validity, ()

        validity = await self.commit.run(Locks(mailbox.lower(), frozenset({folder_id})), run)
        if validity is not None:  # committed: what the next read would find
            self.structure_cache.put((mailbox.lower(), folder_id, validity), structures)

    # -- folder writes ---------------------------------------------------------------------

    async def ensure_default_folders(self, mailbox: str) -> None:
        """Create the mailbox's missing special-use folders; no write when none is missing."""
        mailbox = mailbox.lower()
        existing = {f.name for f in await self.list_folders(mailbox)}
        if all(name in existing for name, _ in DEFAULT_FOLDERS):
            return

        async def run(s: AsyncSession) -> tuple[None, Iterable[int]]:
            await self._ensure_defaults(s, mailbox)
            return None, ()

        await self.commit.run(Locks(mailbox), run)

    async def _ensure_defaults(self, s: AsyncSession, mailbox: str) -> None:
        """Create the missing default folders. Two sessions may do this for a new mailbox
        at the same moment (a login and a delivery): ON CONFLICT DO NOTHING lets both win."""
        existing = set((await s.execute(select(Folder.name).where(Folder.mailbox == mailbox))).scalars())
        missing = [(name, special) for name, special in DEFAULT_FOLDERS if name not in existing]
        if not missing:
            return
        first = await self._reserve_uidvalidity(s, mailbox, len(missing))
        rows = [
            {
                "mailbox": mailbox,
                "name": name,
                "uidvalidity": first + k,
                "uidnext": 1,
                "highestmodseq": 1,
                "special_use": special,
                "subscribed": True,
            }
            for k, (name, special) in enumerate(missing)
        ]
        upsert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
        await s.execute(upsert(Folder).values(rows).on_conflict_do_nothing(index_elements=["mailbox", "name"]))

    @staticmethod
    async def _reserve_uidvalidity(s: AsyncSession, mailbox: str, n: int) -> int:
        """Reserve `n` consecutive UIDVALIDITY values of `mailbox`'s counter; returns the first.

        One counter per mailbox (BAL): no user can use up another's values. A mailbox's first
        counter starts above the store's floor (above every time-based value a store migrated
        from 0003 may have handed out), so a folder created later always gets a greater value
        (RFC 9051 2.3.1.1). Checked before anything is written (the `mss.commit` contract).
        """
        key = _UIDVALIDITY + mailbox
        current = (await s.execute(select(StoreCounter.value).where(StoreCounter.name == key))).scalar_one_or_none()
        if current is None:
            floor = (
                await s.execute(select(StoreCounter.value).where(StoreCounter.name == _FLOOR))
            ).scalar_one_or_none()
            current = floor or 0
            if current + n > _MAX_UIDVALIDITY:
                raise Refusal(Reason.CANNOT, "No UIDVALIDITY left for a new folder", "uidvalidity counter exhausted")
            await s.execute(insert(StoreCounter).values(name=key, value=current + n))
        else:
            if current + n > _MAX_UIDVALIDITY:
                raise Refusal(Reason.CANNOT, "No UIDVALIDITY left for a new folder", "uidvalidity counter exhausted")
            await s.execute(
                update(StoreCounter)
                .where(StoreCounter.name == key)
                .values(value=current + n)
                .execution_options(synchronize_session=False)
            )
        return current + 1

    async def create_folder(self, mailbox: str, name: str, special_use: str | None = None) -> FolderInfo:
        """A new folder, subscribed (IMAP CREATE subscribes, docs/imap.md); `special_use`
        (RFC 6154) is refused when another folder of the mailbox already has it."""
        mailbox, name = mailbox.lower(), canonical_folder_name(name)
        problem = folder_name_problem(name)
        if problem:
            raise Refusal(Reason.CANNOT, problem)

        async def run(s: AsyncSession) -> tuple[FolderInfo, Iterable[int]]:
            clash = (await s.execute(select(Folder.id).where(Folder.mailbox == mailbox, Folder.name == name))).first()
            if clash:
                raise Refusal(Reason.FOLDER_EXISTS, f"Folder {name} already exists")
            if special_use is not None:
                holder = (
                    await s.execute(
                        select(Folder.name).where(Folder.mailbox == mailbox, Folder.special_use == special_use)
                    )
                ).scalar_one_or_none()
                if holder is not None:
                    raise Refusal(Reason.CANNOT, f"{special_use} is already the use of folder {holder}")
            f = Folder(
                mailbox=mailbox,
                name=name,
                uidvalidity=await self._reserve_uidvalidity(s, mailbox, 1),
                uidnext=1,
                highestmodseq=1,
                special_use=special_use,
                subscribed=True,
            )
            s.add(f)
            await s.flush()
            return _folder_info(f), ()

        return await self.commit.run(Locks(mailbox), run)

    async def delete_folder(self, mailbox: str, name: str) -> None:
        mailbox, name = mailbox.lower(), canonical_folder_name(name)
        if name == "INBOX":
            raise Refusal(Reason.CANNOT, "INBOX cannot be deleted")

        async def run(s: AsyncSession) -> tuple[None, Iterable[int]]:
            f = (
                await s.execute(select(Folder).where(Folder.mailbox == mailbox, Folder.name == name))
            ).scalar_one_or_none()
            if f is None:
                raise _no_folder(name)
            octets, count = (
                await s.execute(
                    select(func.coalesce(func.sum(Message.size), 0), func.count()).where(Message.folder_id == f.id)
                )
            ).one()
            await s.execute(delete(Message).where(Message.folder_id == f.id))
            await s.execute(delete(MessageSeen).where(MessageSeen.folder_id == f.id))
            await s.execute(delete(MemberSubscription).where(MemberSubscription.folder_id == f.id))
            await s.delete(f)
            await self._count(s, mailbox, -octets, -count)
            return None, (f.id,)

        await self.commit.run(Locks(mailbox, folder_keys=frozenset({(mailbox, name)})), run)

    async def rename_folder(self, mailbox: str, old: str, new: str) -> None:
        """RFC 9051 6.3.6: the folder and every inferior name, in one transaction, so a
        failure renames nothing. Folders keep their UIDVALIDITY (the counter guarantees a
        folder created later under the old name gets a greater one)."""
        mailbox, old, new = mailbox.lower(), canonical_folder_name(old), canonical_folder_name(new)
        if old == "INBOX" or new == "INBOX":
            raise Refusal(Reason.CANNOT, "Renaming INBOX is not supported")
        problem = folder_name_problem(new)
        if problem:
            raise Refusal(Reason.CANNOT, problem)
        prefix = old + DELIMITER
        if new.startswith(prefix):
            raise Refusal(Reason.CANNOT, "Cannot rename a folder into itself")

        async def run(s: AsyncSession) -> tuple[None, Iterable[int]]:
            rows = (await s.execute(select(Folder.id, Folder.name).where(Folder.mailbox == mailbox))).all()
            names = {n: i for i, n in rows}
            if old not in names:
                raise _no_folder(old)
            moves = [(old, new)] + [
                (n, new + DELIMITER + n[len(prefix) :]) for n in sorted(names) if n.startswith(prefix)
            ]
            for _, target in moves:
                if target in names:
                    raise Refusal(Reason.FOLDER_EXISTS, f"Folder {target} already exists")
                problem = folder_name_problem(target)
                if problem:
                    raise Refusal(Reason.CANNOT, f"{target}: {problem}")
            for src, dst in moves:
                await s.execute(
                    update(Folder)
                    .where(Folder.id == names[src])
                    .values(name=dst)
                    .execution_options(synchronize_session=False)
                )
            return None, [names[src] for src, _ in moves]

        await self.commit.run(Locks(mailbox), run)

    async def delete_mailbox(self, mailbox: str) -> int:
        """Every folder and message of a mailbox (a patient space being closed); returns how
        many messages went. Watchers of its folders hear that they are gone."""
        mailbox = mailbox.lower()

        async def run(s: AsyncSession) -> tuple[int, Iterable[int]]:
            ids = list((await s.execute(select(Folder.id).where(Folder.mailbox == mailbox))).scalars())
            if not ids:
                return 0, ()
            gone = (await s.execute(delete(Message).where(Message.folder_id.in_(ids)))).rowcount or 0
            await s.execute(delete(MessageSeen).where(MessageSeen.folder_id.in_(ids)))
            await s.execute(delete(MemberSubscription).where(MemberSubscription.folder_id.in_(ids)))
            await s.execute(delete(Folder).where(Folder.id.in_(ids)))
            # Nothing stored any more; the operator's limits, if any, stay.
            await s.execute(
                update(MailboxUsage)
                .where(MailboxUsage.mailbox == mailbox)
                .values(storage_bytes=0, messages=0)
                .execution_options(synchronize_session=False)
            )
            return gone, ids

        return await self.commit.run(Locks(mailbox), run)

    async def set_subscribed(self, mailbox: str, name: str, subscribed: bool, reader: str | None = None) -> None:
        """`reader`: a member of a shared mailbox subscribing for themselves only."""
        mailbox, name = mailbox.lower(), canonical_folder_name(name)

        async def run(s: AsyncSession) -> tuple[None, Iterable[int]]:
            if reader is not None:
                fid = (
                    await s.execute(select(Folder.id).where(Folder.mailbox == mailbox, Folder.name == name))
                ).scalar()
                if fid is None:
                    raise _no_folder(name)
                await s.execute(
                    delete(MemberSubscription).where(
                        MemberSubscription.folder_id == fid, MemberSubscription.member == reader
                    )
                )
                if not subscribed:
                    await s.execute(insert(MemberSubscription), [{"folder_id": fid, "member": reader}])
                return None, ()
            res = await s.execute(
                update(Folder)
                .where(Folder.mailbox == mailbox, Folder.name == name)
                .values(subscribed=subscribed)
                .execution_options(synchronize_session=False)
            )
            if res.rowcount == 0:
                raise _no_folder(name)
            return None, ()

        await self.commit.run(Locks(mailbox), run)

    # -- message writes --------------------------------------------------------------------

    async def set_flags(
        self,
        mailbox: str,
        folder_id: int,
        uids: Sequence[int],
        flags: Iterable[str],
        mode: FlagMode,
        reader: str | None = None,
        *,
        changeable: frozenset[str] | None = None,
    ) -> list[MessageMeta]:
        """Change flags; each changed message gets a new MODSEQ. Returns the new state.

        The folder is locked before the rows are read, so two sessions changing flags at
        once cannot each write a state computed from a stale read. `changeable`: see
        `set_flags_unchanged_since`.
        """
        done, _ = await self.set_flags_unchanged_since(
            mailbox, folder_id, uids, flags, mode, None, reader, changeable=changeable
        )
        return done

    async def set_flags_unchanged_since(
        self,
        mailbox: str,
        folder_id: int,
        uids: Sequence[int],
        flags: Iterable[str],
        mode: FlagMode,
        unchanged_since: int | None,
        reader: str | None = None,
        *,
        changeable: frozenset[str] | None = None,
    ) -> tuple[list[MessageMeta], list[int]]:
        """`set_flags`, conditional when `unchanged_since` is given (RFC 7162 3.1.3
        UNCHANGEDSINCE): a message whose MODSEQ is above it is left as it is and its UID is
        returned second (the MODIFIED set). The test and the writes are one transaction
        under the folder's lock, so no change can land between them.

        `reader`: a member of a shared mailbox; \\Seen is theirs (`message_seen`), the other
        flags the mailbox's. A change of their \\Seen alone still gives the message a new
        MODSEQ, for everyone: the other members' CONDSTORE/QRESYNC sync then fetches its
        flags again and finds them unchanged (a spurious FETCH, RFC 7162 allows it), and the
        member's own other sessions learn of it.

        `changeable`: the flag classes (`mss.rights.FLAG_CLASSES`: "s" \\Seen, "t" \\Deleted,
        "w" the others) the caller has the RFC 4314 right to change; None: all. A flag of
        another class keeps, on each message, the value read here under the lock, whatever
        the mode (a replacing STORE of a member with "s" only changes their \\Seen alone)."""
        wanted = frozenset(flags)
        too_long = [k for k in _keywords(wanted) if len(k) > MAX_KEYWORD]
        if too_long:
            raise Refusal(Reason.CANNOT, f"Keywords are at most {MAX_KEYWORD} characters")
        targets = list(uids)

        async def run(s: AsyncSession) -> tuple[tuple[list[MessageMeta], list[int]], Iterable[int]]:
            rows = []
            for chunk in _chunks(targets, IN_CHUNK):  # never the ciphertext: flags only
                rows += (
                    await s.execute(
                        select(*_META_COLUMNS).where(Message.folder_id == folder_id, Message.uid.in_(chunk))
                    )
                ).all()
            rows.sort(key=lambda r: r.uid)
            modified = []
            if unchanged_since is not None:
                modified = [r.uid for r in rows if r.modseq > unchanged_since]
                rows = [r for r in rows if r.modseq <= unchanged_since]
            keywords = await self._keywords_of(s, [r.id for r in rows])
            seen = await self._seen_by(s, folder_id, reader, [r.uid for r in rows]) if reader is not None else set()
            changes = []
            seen_added: list[dict[str, object]] = []
            seen_removed: list[int] = []
            for r in rows:
                base = _flag_set(r, keywords.get(r.id, ()))
                old = base if reader is None else (base - _SEEN) | (_SEEN if r.uid in seen else frozenset())
                new = old | wanted if mode == "add" else old - wanted if mode == "remove" else wanted
                if changeable is not None:  # the flags it may not change stay as read under the lock
                    new = frozenset(f for f in new if flag_right(f) in changeable) | frozenset(
                        f for f in old if flag_right(f) not in changeable
                    )
                if reader is not None:
                    if "\\Seen" in new and "\\Seen" not in old:
                        seen_added.append({"folder_id": folder_id, "member": reader, "uid": r.uid})
                    elif "\\Seen" in old and "\\Seen" not in new:
                        seen_removed.append(r.uid)
                column = new if reader is None else (new - _SEEN) | (base & _SEEN)
                changes.append((r, new, column, new != old))
            n = sum(1 for *_, changed in changes if changed)
            modseq = (await self._bump_modseq(s, folder_id, n)) if n else 0
            if n:  # the folder's state around this write, for the folder cache (`advance`)
                uidvalidity, uidnext = (
                    await s.execute(select(Folder.uidvalidity, Folder.uidnext).where(Folder.id == folder_id))
                ).one()
                moved.append(
                    (ListState(uidvalidity, uidnext, modseq - 1), ListState(uidvalidity, uidnext, modseq + n - 1))
                )
            updates: list[dict[str, object]] = []
            added: list[dict[str, object]] = []
            removed: list[tuple[int, str]] = []
            result: list[MessageMeta] = []
            shared[:] = []
            for r, new, column, changed in changes:
                current = r.modseq
                if changed:
                    current = modseq
                    modseq += 1
                    updates.append(
                        {"mid": r.id, "new_modseq": current, **{f"v_{c}": v for c, v in _system_values(column).items()}}
                    )
                    before = set(keywords.get(r.id, ()))
                    after = _keywords(new)
                    added += [{"message_id": r.id, "keyword": k} for k in sorted(after - before)]
                    removed += [(r.id, k) for k in sorted(before - after)]
                result.append(MessageMeta(r.uid, current, new, as_utc(r.internaldate), r.size))
                # The folder cache holds the mailbox's flags, never a member's own \Seen.
                shared.append(MessageMeta(r.uid, current, column, as_utc(r.internaldate), r.size))
            if updates:
                conn = await s.connection()  # a Core executemany, not an ORM bulk update by key
                await conn.execute(
                    update(Message)
                    .where(Message.id == bindparam("mid"))
                    .values(modseq=bindparam("new_modseq"), **{c: bindparam(f"v_{c}") for c in SYSTEM_FLAGS.values()})
                    .execution_options(synchronize_session=False),
                    updates,
                )
            for chunk in _chunks(removed, IN_CHUNK // 2):
                await s.execute(
                    delete(MessageKeyword).where(tuple_(MessageKeyword.message_id, MessageKeyword.keyword).in_(chunk))
                )
            if added:
                await s.execute(insert(MessageKeyword), added)
            if seen_added:
                await s.execute(insert(MessageSeen), seen_added)
            for chunk in _chunks(seen_removed, IN_CHUNK):
                await s.execute(
                    delete(MessageSeen).where(
                        MessageSeen.folder_id == folder_id, MessageSeen.member == reader, MessageSeen.uid.in_(chunk)
                    )
                )
            return (result, modified), (folder_id,) if n else ()

        moved: list[tuple[ListState, ListState]] = []
        shared: list[MessageMeta] = []
        result, modified = await self.commit.run(
            Locks(mailbox.lower(), frozenset({folder_id})), run, alone=len(targets) > BULK
        )
        if moved:  # committed: the last attempt's states (a retried batch runs `run` again)
            before, after = moved[-1]
            self.folder_cache.advance(folder_id, mailbox.lower(), before, after, shared)
        return result, modified

    @staticmethod
    async def _keywords_of(s: AsyncSession, message_ids: Sequence[int]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for chunk in _chunks(list(message_ids), IN_CHUNK):
            rows = await s.execute(
                select(MessageKeyword.message_id, MessageKeyword.keyword).where(MessageKeyword.message_id.in_(chunk))
            )
            for mid, word in rows.all():
                out.setdefault(mid, []).append(word)
        return out

    async def expunge(self, mailbox: str, folder_id: int, uids: Sequence[int] | None = None) -> list[int]:
        """Remove messages flagged \\Deleted (restricted to `uids` for UID EXPUNGE)."""
        only = None if uids is None else list(uids)

        async def run(s: AsyncSession) -> tuple[list[int], Iterable[int]]:
            q = select(Message.uid).where(Message.folder_id == folder_id, Message.deleted.is_(True))
            if only is None:
                gone = sorted((await s.execute(q)).scalars())
            else:
                gone = []
                for chunk in _chunks(only, IN_CHUNK):
                    gone += (await s.execute(q.where(Message.uid.in_(chunk)))).scalars()
                gone.sort()
            if gone:
                await self._delete_uids(s, mailbox, folder_id, gone, await self._bump_modseq(s, folder_id, 1))
            return gone, (folder_id,) if gone else ()

        return await self.commit.run(Locks(mailbox.lower(), frozenset({folder_id})), run)

    async def copy(
        self,
        mailbox: str,
        folder_id: int,
        uids: Sequence[int],
        dest_folder_id: int,
        *,
        settable: frozenset[str] | None = None,
        reader: str | None = None,
    ) -> list[tuple[int, int]]:
        """Copy ciphertext rows as they are (RFC 4315 COPYUID pairs returned). `settable`,
        `reader`: see `_drop_flags`."""
        targets = list(uids)

        async def run(s: AsyncSession) -> tuple[list[tuple[int, int]], Iterable[int]]:
            pairs = await self._copy(s, mailbox, folder_id, targets, dest_folder_id)
            await self._drop_flags(s, dest_folder_id, [b for _, b in pairs], settable, reader)
            return pairs, (dest_folder_id,) if pairs else ()

        return await self.commit.run(
            Locks(mailbox.lower(), frozenset({folder_id, dest_folder_id})), run, alone=len(targets) > BULK
        )

    async def move(
        self,
        mailbox: str,
        folder_id: int,
        uids: Sequence[int],
        dest_folder_id: int,
        *,
        settable: frozenset[str] | None = None,
        reader: str | None = None,
    ) -> list[tuple[int, int]]:
        """RFC 6851 MOVE in one transaction: the copies and the removal commit together, so a
        crash never leaves a message in both folders or in neither. Moving into the same
        folder is a COPY then an EXPUNGE of the originals (RFC 6851 3.3 asks for no
        exception): the messages come back under new UIDs. The mailbox's usage does not
        change (the messages stay in it), so MOVE is never refused for its quota."""
        targets = list(uids)

        async def run(s: AsyncSession) -> tuple[list[tuple[int, int]], Iterable[int]]:
            pairs = await self._copy(s, mailbox, folder_id, targets, dest_folder_id, charge=False)
            await self._drop_flags(s, dest_folder_id, [b for _, b in pairs], settable, reader)
            moved = [src for src, _ in pairs]
            if moved:
                await self._delete_uids(
                    s, mailbox, folder_id, moved, await self._bump_modseq(s, folder_id, 1), count=False
                )
            return pairs, (folder_id, dest_folder_id) if pairs else ()

        return await self.commit.run(
            Locks(mailbox.lower(), frozenset({folder_id, dest_folder_id})), run, alone=len(targets) > BULK
        )

    async def copy_between(
        self,
        mailbox: str,
        folder_id: int,
        uids: Sequence[int],
        dest_mailbox: str,
        dest_folder_id: int,
        *,
        move: bool = False,
        reader: str | None = None,
        dest_reader: str | None = None,
        settable: frozenset[str] | None = None,
    ) -> list[tuple[int, int]]:
        """COPY or MOVE from a folder of one mailbox to a folder of another (a member's
        personal folders and a shared mailbox's): the ciphertext rows as they are, so a copy
        stays readable by whoever could decrypt it before, no one else (E2E by design). The
        copies count against the destination's quota (a MOVE takes them off the source's);
        \\Seen goes as the copier saw it (`reader`, `dest_reader`: a member's own \\Seen on
        either side). One transaction, both mailboxes locked (in sorted order, as always)."""
        mailbox, dest_mailbox = mailbox.lower(), dest_mailbox.lower()
        targets = list(uids)

        async def run(s: AsyncSession) -> tuple[list[tuple[int, int]], Iterable[int]]:
            dest_ok = (
                await s.execute(select(Folder.id).where(Folder.id == dest_folder_id, Folder.mailbox == dest_mailbox))
            ).first()
            if dest_ok is None:
                raise _no_folder()
            if reader is not None:
                seen = await self._seen_by(s, folder_id, reader, targets)
            else:
                seen = set()
                for chunk in _chunks(targets, IN_CHUNK):
                    seen.update(
                        (
                            await s.execute(
                                select(Message.uid).where(
                                    Message.folder_id == folder_id, Message.uid.in_(chunk), Message.seen.is_(True)
                                )
                            )
                        ).scalars()
                    )
            pairs = await self._copy(
                s, mailbox, folder_id, targets, dest_folder_id, carry_seen=False, charge_to=dest_mailbox
            )
            if dest_reader is not None and (settable is None or "s" in settable):
                rows = [{"folder_id": dest_folder_id, "member": dest_reader, "uid": b} for a, b in pairs if a in seen]
                if rows:
                    await s.execute(insert(MessageSeen), rows)
            if dest_reader is not None and pairs:
                # A member's \\Seen is theirs: the copies start unseen for the mailbox.
                for chunk in _chunks([b for _, b in pairs], IN_CHUNK):
                    await s.execute(
                        update(Message)
                        .where(Message.folder_id == dest_folder_id, Message.uid.in_(chunk))
                        .values(seen=False)
                        .execution_options(synchronize_session=False)
                    )
            elif reader is not None and pairs:
                conn = await s.connection()
                await conn.execute(
                    update(Message)
                    .where(Message.folder_id == dest_folder_id, Message.uid == bindparam("duid"))
                    .values(seen=bindparam("v_seen"))
                    .execution_options(synchronize_session=False),
                    [{"duid": b, "v_seen": a in seen} for a, b in pairs],
                )
            await self._drop_flags(s, dest_folder_id, [b for _, b in pairs], settable, None)
            changed = [dest_folder_id] if pairs else []
            if move and pairs:
                moved = [src for src, _ in pairs]
                await self._delete_uids(s, mailbox, folder_id, moved, await self._bump_modseq(s, folder_id, 1))
                changed.append(folder_id)
            return pairs, changed

        # The destination is locked by key: `Locks` scopes folder ids to one mailbox.
        dest_name = await self._folder_name(dest_mailbox, dest_folder_id)
        return await self.commit.run(
            Locks(mailbox, frozenset({folder_id}), frozenset({(dest_mailbox, dest_name)})),
            run,
            alone=len(targets) > BULK,
        )

    @staticmethod
    async def _drop_flags(
        s: AsyncSession, folder_id: int, uids: Sequence[int], settable: frozenset[str] | None, reader: str | None
    ) -> None:
        """Clear, on copies just made, the flags the copier may not set in the destination
        (RFC 4314 2.1: "s", "w", "t" govern setting flags during APPEND and COPY, as for
        `MailboxHandle.append_many`): `settable` holds the flag classes
        (`mss.rights.FLAG_CLASSES`) they may set there; None: all. Without "s", `reader`'s
        own \\Seen on the copies goes too. In the caller's transaction."""
        if settable is None or not uids:
            return
        values: dict[str, bool] = {}
        if "s" not in settable:
            values["seen"] = False
        if "t" not in settable:
            values["deleted"] = False
        if "w" not in settable:
            values.update(answered=False, flagged=False, draft=False)
        for chunk in _chunks(list(uids), IN_CHUNK):
            if values:
                await s.execute(
                    update(Message)
                    .where(Message.folder_id == folder_id, Message.uid.in_(chunk))
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
            if "w" not in settable:
                ids = select(Message.id).where(Message.folder_id == folder_id, Message.uid.in_(chunk))
                await s.execute(delete(MessageKeyword).where(MessageKeyword.message_id.in_(ids)))
            if "s" not in settable and reader is not None:
                await s.execute(
                    delete(MessageSeen).where(
                        MessageSeen.folder_id == folder_id, MessageSeen.member == reader, MessageSeen.uid.in_(chunk)
                    )
                )

    async def _folder_name(self, mailbox: str, folder_id: int) -> str:
        async with self.sessions() as s:
            name = (
                await s.execute(select(Folder.name).where(Folder.id == folder_id, Folder.mailbox == mailbox))
            ).scalar()
        if name is None:
            raise _no_folder()
        return name

    async def _delete_uids(
        self, s: AsyncSession, mailbox: str, folder_id: int, uids: Sequence[int], modseq: int, *, count: bool = True
    ) -> None:
        """Delete messages of a folder, leave their tombstones (`vanished`, at the expunge's
        `modseq`, for QRESYNC, RFC 7162 3.2.5) and, unless they move within the mailbox
        (`count` False), take them off its usage; all in the caller's transaction."""
        octets = removed = 0
        for chunk in _chunks(list(uids), IN_CHUNK):
            sizes = (
                await s.execute(
                    delete(Message)
                    .where(Message.folder_id == folder_id, Message.uid.in_(chunk))
                    .returning(Message.size)
                    .execution_options(synchronize_session=False)
                )
            ).scalars()
            for size in sizes:
                octets += size
                removed += 1
        for chunk in _chunks(list(uids), IN_CHUNK):
            await s.execute(delete(MessageSeen).where(MessageSeen.folder_id == folder_id, MessageSeen.uid.in_(chunk)))
        await s.execute(insert(Vanished), [{"folder_id": folder_id, "uid": u, "modseq": modseq} for u in uids])
        if count:
            await self._count(s, mailbox, -octets, -removed)

    async def vanished(self, mailbox: str, folder_id: int, since: int) -> list[int]:
        """UIDs expunged from the folder by a change with a MODSEQ above `since`, ascending
        (RFC 7162 3.2.5.1 `VANISHED (EARLIER)`)."""
        async with self.sessions() as s:
            rows = await s.execute(
                select(Vanished.uid)
                .join(Folder, Folder.id == Vanished.folder_id)
                .where(Vanished.folder_id == folder_id, Folder.mailbox == mailbox.lower(), Vanished.modseq > since)
                .order_by(Vanished.uid)
            )
            return list(rows.scalars())

    async def _copy(
        self,
        s: AsyncSession,
        mailbox: str,
        folder_id: int,
        uids: Sequence[int],
        dest_folder_id: int,
        *,
        charge: bool = True,
        carry_seen: bool = True,
        charge_to: str | None = None,
    ) -> list[tuple[int, int]]:
        """Copy rows inside the database (INSERT ... SELECT): the ciphertext never travels
        through this process, however large the folder. The copies are counted against the
        mailbox's quota (`charge`; not for a MOVE) and the whole COPY is refused, before
        anything is written, when they do not all fit (RFC 9208 4.3: nothing is copied)."""
        rows = []
        for chunk in _chunks(list(uids), IN_CHUNK):
            rows += (
                await s.execute(
                    select(Message.id, Message.uid, Message.size).where(
                        Message.folder_id == folder_id, Message.uid.in_(chunk)
                    )
                )
            ).all()
        if not rows:
            return []
        rows.sort(key=lambda r: r.uid)
        if charge:
            await self._charge(s, charge_to or mailbox, sum(r.size for r in rows), len(rows))
        first_uid, first_modseq = await self._reserve_by_id(s, dest_folder_id, len(rows))
        params = [
            {"src": r.id, "dest": dest_folder_id, "uid": first_uid + k, "modseq": first_modseq + k}
            for k, r in enumerate(rows)
        ]
        await s.execute(_COPY_MESSAGE, params)
        new_ids = {}
        new_uids = [p["uid"] for p in params]
        for chunk in _chunks(new_uids, IN_CHUNK):
            new_ids.update(
                (
                    await s.execute(
                        select(Message.uid, Message.id).where(
                            Message.folder_id == dest_folder_id, Message.uid.in_(chunk)
                        )
                    )
                ).all()
            )
        await s.execute(_COPY_KEYWORDS, [{"src": p["src"], "new": new_ids[p["uid"]]} for p in params])
        pairs = [(r.uid, first_uid + k) for k, r in enumerate(rows)]
        if carry_seen:
            # Within one mailbox each member's own \\Seen goes with the copy (RFC 4314 4).
            await s.execute(
                _COPY_SEEN, [{"src": folder_id, "suid": a, "dest": dest_folder_id, "duid": b} for a, b in pairs]
            )
        return pairs

    async def write(self, batch: Sequence[NewMessage], *, then: AfterWrite | None = None) -> list[StoredRef]:
        """Store new messages; returns once the commit holding them is durable. A message
        that does not fit its mailbox's quota refuses the whole batch (`OVER_QUOTA`, nothing
        stored): IMAP APPEND answers NO [OVERQUOTA] (RFC 9208 4.3). `then`: see `write_some`."""
        refs = await self.write_some(batch, then=then)
        return [r for r in refs if r is not None]

    async def write_some(
        self, batch: Sequence[NewMessage], *, optional: Iterable[int] = (), then: AfterWrite | None = None
    ) -> list[StoredRef | None]:
        """`write`, where the messages at the positions `optional` (a sender's Sent copy, a
        delivery report) are left out, their ref None, when their mailbox has no room for
        them, instead of refusing the batch; any other message that does not fit refuses
        it. Quotas are checked in batch order, each message after the ones before it.

        `then` runs in the same transaction once the rows exist (a delivery's conversation
        and notification rows): the messages and what the core records of them commit
        together or not at all."""
        items = list(batch)
        skippable = frozenset(optional)
        keys = frozenset((i.mailbox.lower(), canonical_folder_name(i.folder)) for i in items)

        async def run(s: AsyncSession) -> tuple[list[StoredRef | None], Iterable[int]]:
            refs = await self._write(s, items, skippable)
            if then is not None:
                await then(s, refs)
            return refs, {r.folder_id for r in refs if r is not None}

        return await self.commit.run(Locks(folder_keys=keys), run)

    async def _admit(self, s: AsyncSession, batch: Sequence[NewMessage], optional: frozenset[int]) -> list[int]:
        """The positions of the messages that fit their mailbox's quota (the optional ones
        that do not are dropped), or `OVER_QUOTA` for a required one; writes nothing."""
        quotas = {m: await read_quota(s, m, self.quota_limits) for m in {i.mailbox.lower() for i in batch}}
        admitted = _admitted(batch, quotas)
        refused = sorted(set(range(len(batch))) - set(admitted) - optional)
        if refused:
            i = refused[0]
            raise _over_quota(_usage_before(batch, quotas, admitted, i), len(batch[i].content), 1)
        return admitted

    async def _write(
        self, s: AsyncSession, batch: Sequence[NewMessage], optional: frozenset[int] = frozenset()
    ) -> list[StoredRef | None]:
        """Insert messages: one counter update per folder, then one multi-row insert, so a
        group commit costs O(folders) statements, not O(messages)."""
        admitted = await self._admit(s, batch, optional)
        by_folder: dict[tuple[str, str], list[int]] = {}
        for i in admitted:
            item = batch[i]
            by_folder.setdefault((item.mailbox.lower(), canonical_folder_name(item.folder)), []).append(i)
        # Refuse before writing anything (the `mss.commit` contract): a folder that is not a
        # default one must exist already.
        for mailbox, name in by_folder:
            if (
                name not in _DEFAULT_NAMES
                and (await s.execute(select(Folder.id).where(Folder.mailbox == mailbox, Folder.name == name))).first()
                is None
            ):
                raise _no_folder(name)
        refs: list[StoredRef | None] = [None] * len(batch)
        rows: list[dict[str, object]] = []
        for mailbox, name in by_folder:
            positions = by_folder[(mailbox, name)]
            folder_id, uidvalidity, first_uid, first_modseq = await self._reserve(s, mailbox, name, len(positions))
            for k, i in enumerate(positions):
                item, h = batch[i], batch[i].headers
                rows.append(
                    dict(
                        folder_id=folder_id,
                        uid=first_uid + k,
                        modseq=first_modseq + k,
                        **_system_values(item.flags),
                        # UTC always: SQLite keeps no offset, and IMAP renders the zone it is given.
                        internaldate=as_utc(item.internaldate).astimezone(UTC),
                        size=len(item.content),
                        content=item.content,
                        hdr_from=h.from_,
                        hdr_to=h.to,
                        hdr_cc=h.cc,
                        hdr_subject=h.subject,
                        hdr_date=h.date,
                        hdr_message_id=h.message_id,
                    )
                )
                refs[i] = StoredRef(mailbox, folder_id, uidvalidity, first_uid + k)
        # Core on the transaction's connection, not the ORM's unit of work nor its bulk path:
        # the hot path of every delivery. The new ids come back (in the rows' order) only
        # when keywords need them.
        conn = await s.connection()
        order = [i for positions in by_folder.values() for i in positions]
        if any(_keywords(batch[i].flags) for i in order):
            inserted = await conn.execute(
                insert(Message.__table__).returning(Message.__table__.c.id, sort_by_parameter_order=True), rows
            )
            kw_rows = [
                {"message_id": message_id, "keyword": word}
                for message_id, i in zip(inserted.scalars().all(), order, strict=True)
                for word in sorted(_keywords(batch[i].flags))
            ]
            await conn.execute(insert(MessageKeyword.__table__), kw_rows)
        elif rows:
            await conn.execute(insert(Message.__table__), rows)
        usage: dict[str, tuple[int, int]] = {}
        for i in admitted:
            octets, count = usage.get(batch[i].mailbox.lower(), (0, 0))
            usage[batch[i].mailbox.lower()] = (octets + len(batch[i].content), count + 1)
        for mailbox, (octets, count) in usage.items():
            await self._count(s, mailbox, octets, count)
        return refs

    async def _reserve(self, s: AsyncSession, mailbox: str, name: str, n: int) -> tuple[int, int, int, int]:
        """Find the folder and reserve `n` UIDs and MODSEQs in one statement (row-locked on
        PostgreSQL): (folder id, uidvalidity, first uid, first modseq)."""
        params = {"b_mailbox": mailbox, "b_name": name, "b_n": n}
        conn = await s.connection()  # Core: the one statement every delivery's write makes per folder
        row = (await conn.execute(_RESERVE, params)).first()
        if row is None:
            if name not in {n_ for n_, _ in DEFAULT_FOLDERS}:
                raise _no_folder(name)
            await self._ensure_defaults(s, mailbox)
            row = (await conn.execute(_RESERVE, params)).one()
        folder_id, uidvalidity, uidnext, modseq = row
        return folder_id, uidvalidity, uidnext - n, modseq - n + 1

    async def _lock(self, s: AsyncSession, batch_locks: Sequence[Locks]) -> set[int]:
        """Take the write locks of everything a batch touches, before it reads anything;
        returns the positions of the operations that named a folder that is gone (or that
        is not their mailbox's): they are refused, the others go on.

        PostgreSQL: first one transaction-scoped advisory lock per mailbox, in sorted order,
        then the folder rows in ascending id order. Every row a write touches (folders, their
        messages, the mailbox's UIDVALIDITY counter, a patient's conversation rows) belongs
        to one mailbox, so two batches on any number of nodes take their locks in the same
        global order and cannot deadlock. SQLite: one database-wide write lock, taken by the
        transaction's first statement, so a later write never fails on a stale read snapshot.
        """
        mailboxes: set[str] = set()
        owned: list[set[tuple[str, int]]] = []
        for lk in batch_locks:
            if lk.folder_ids and lk.mailbox is None:
                raise ValueError("folder ids are locked within a mailbox")
            if lk.mailbox:
                mailboxes.add(lk.mailbox)
            mailboxes.update(m for m, _ in lk.folder_keys)
            owned.append({(lk.mailbox, i) for i in lk.folder_ids})  # type: ignore[misc]
        ids = sorted({i for o in owned for _, i in o})
        if s.get_bind().dialect.name == "postgresql":
            for mailbox in sorted(mailboxes):
                await s.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:m, 0))"), {"m": mailbox})
            if not ids:
                return set()
            found = (
                await s.execute(
                    select(Folder.id, Folder.mailbox).where(Folder.id.in_(ids)).order_by(Folder.id).with_for_update()
                )
            ).all()
        else:
            await s.execute(
                update(StoreCounter)
                .where(StoreCounter.name == _FLOOR)
                .values(value=StoreCounter.value)
                .execution_options(synchronize_session=False)
            )
            if not ids:
                return set()
            found = (await s.execute(select(Folder.id, Folder.mailbox).where(Folder.id.in_(ids)))).all()
        have = {(m, i) for i, m in found}
        return {k for k, o in enumerate(owned) if not o <= have}

    @staticmethod
    async def _bump_modseq(s: AsyncSession, folder_id: int, n: int) -> int:
        """Reserve `n` MODSEQs; returns the first."""
        modseq = (
            await s.execute(
                update(Folder)
                .where(Folder.id == folder_id)
                .values(highestmodseq=Folder.highestmodseq + n)
                .returning(Folder.highestmodseq)
                .execution_options(synchronize_session=False)
            )
        ).scalar_one()
        return modseq - n + 1

    @staticmethod
    async def _reserve_by_id(s: AsyncSession, folder_id: int, n: int) -> tuple[int, int]:
        """Reserve `n` UIDs and MODSEQs of a folder known by id: (first uid, first modseq)."""
        row = (
            await s.execute(
                update(Folder)
                .where(Folder.id == folder_id)
                .values(uidnext=Folder.uidnext + n, highestmodseq=Folder.highestmodseq + n)
                .returning(Folder.uidnext, Folder.highestmodseq)
                .execution_options(synchronize_session=False)
            )
        ).first()
        if row is None:
            raise _no_folder()
        return row[0] - n, row[1] - n + 1


_COLUMNS = (
    "seen, answered, flagged, deleted, draft, internaldate, size, content, "
    "hdr_from, hdr_to, hdr_cc, hdr_subject, hdr_date, hdr_message_id, structure"
)
_COPY_MESSAGE = text(
    f"INSERT INTO message (folder_id, uid, modseq, {_COLUMNS}) "  # noqa: S608 - fixed column names
    f"SELECT :dest, :uid, :modseq, {_COLUMNS} FROM message WHERE id = :src"
)
_KEEP_STRUCTURE = text("UPDATE message SET structure = :v WHERE folder_id = :fid AND uid = :u")
_SEEN = frozenset({"\\Seen"})
_COPY_SEEN = text(
    "INSERT INTO message_seen (folder_id, member, uid) "
    "SELECT :dest, member, :duid FROM message_seen WHERE folder_id = :src AND uid = :suid"
)
_COPY_KEYWORDS = text(
    "INSERT INTO message_keyword (message_id, keyword) SELECT :new, keyword FROM message_keyword WHERE message_id = :src"
)


def _admitted(batch: Sequence[NewMessage], quotas: Mapping[str, Quota]) -> list[int]:
    """The positions of the messages that fit, in batch order, each counted after the ones
    before it that fit (`quotas`: by lower-case mailbox)."""
    room = dict(quotas)
    out: list[int] = []
    for i, item in enumerate(batch):
        mailbox, size = item.mailbox.lower(), len(item.content)
        if room[mailbox].fits(size, 1):
            room[mailbox] = room[mailbox].plus(size, 1)
            out.append(i)
    return out


def _usage_before(batch: Sequence[NewMessage], quotas: Mapping[str, Quota], admitted: list[int], i: int) -> Quota:
    """The quota of message `i`'s mailbox as it stood when `i` was refused (for the log)."""
    mailbox = batch[i].mailbox.lower()
    before = [k for k in admitted if k < i and batch[k].mailbox.lower() == mailbox]
    return quotas[mailbox].plus(sum(len(batch[k].content) for k in before), len(before))


def _chunks(items: list[T], n: int) -> Iterable[list[T]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _overlay_seen(metas: Sequence[MessageMeta], seen: frozenset[int] | set[int]) -> list[MessageMeta]:
    """`metas` with a member's own \\Seen (`seen`: their UIDs) in place of the mailbox's.
    The flag sets are shared, as `_read_messages` shares them: one per distinct set."""
    out: list[MessageMeta] = []
    swapped: dict[frozenset[str], frozenset[str]] = {}
    for m in metas:
        flags = m.flags
        if (m.uid in seen) == ("\\Seen" in flags):
            out.append(m)
            continue
        other = swapped.get(flags)
        if other is None:
            other = swapped[flags] = flags - _SEEN if "\\Seen" in flags else flags | _SEEN
        out.append(MessageMeta(m.uid, m.modseq, other, m.internaldate, m.size))
    return out
