"""Folders and messages: the only writer of `folder` and `message` rows.

Everything handed to `Store` is already ciphertext (see `mss.mailboxes` and
`mss.delivery`): the store never sees a clear message. UIDs and MODSEQs come from the
per-folder counters, bumped in the same transaction as the rows they number
(RFC 9051 2.3.1.1; RFC 7162 3.1).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Literal, Sequence

from sqlalchemy import delete, func, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mss.db.models import Folder, Message
from mss.events import Events
from mss.records import FlagMode, FolderInfo, MessageMeta, NewMessage, OuterHeaders, StoredRef

# RFC 6154 special-use folders created with every mailbox.
DEFAULT_FOLDERS: tuple[tuple[str, str | None], ...] = (
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
)

class StoreError(Exception):
    """A request the store refuses (missing folder, name clash, ...); nothing was written."""


def _flags_to_text(flags: Iterable[str]) -> str:
    return " ".join(sorted(set(flags)))


def _flags_from_text(text: str) -> frozenset[str]:
    return frozenset(text.split()) if text else frozenset()


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _folder_info(f: Folder, exists: int = 0, unseen: int = 0) -> FolderInfo:
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
    )


def canonical_folder_name(name: str) -> str:
    """INBOX is case-insensitive (RFC 9051 5.1); other names are kept as given."""
    return "INBOX" if name.upper() == "INBOX" else name


class Store:
    def __init__(self, sessions: async_sessionmaker, events: Events | None = None) -> None:
        self.sessions = sessions
        self.events = events or Events()

    # -- folders -------------------------------------------------------------------------

    async def ensure_default_folders(self, mailbox: str) -> None:
        async with self.sessions() as s, s.begin():
            await self._ensure_defaults(s, mailbox.lower())

    async def _ensure_defaults(self, s: AsyncSession, mailbox: str) -> None:
        """Create the missing default folders. Two sessions may do this for a new mailbox
        at the same moment (a login and a delivery): ON CONFLICT DO NOTHING lets both win."""
        existing = set(
            (await s.execute(select(Folder.name).where(Folder.mailbox == mailbox))).scalars()
        )
        rows = []
        for name, special in DEFAULT_FOLDERS:
            if name not in existing:
                f = self._new_folder(mailbox, name, special)
                rows.append(
                    {c: getattr(f, c) for c in ("mailbox", "name", "uidvalidity", "uidnext", "highestmodseq", "special_use", "subscribed")}
                )
        if rows:
            insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
            await s.execute(insert(Folder).values(rows).on_conflict_do_nothing(index_elements=["mailbox", "name"]))

    @staticmethod
    def _new_folder(mailbox: str, name: str, special: str | None = None) -> Folder:
        # UIDVALIDITY must change if a name is reused (RFC 9051 2.3.1.1): microseconds do.
        return Folder(
            mailbox=mailbox,
            name=name,
            uidvalidity=int(time.time() * 1000) % 4_000_000_000 or 1,
            uidnext=1,
            highestmodseq=1,
            special_use=special,
            subscribed=True,
        )

    async def list_folders(self, mailbox: str) -> list[FolderInfo]:
        async with self.sessions() as s:
            rows = (
                await s.execute(select(Folder).where(Folder.mailbox == mailbox.lower()).order_by(Folder.name))
            ).scalars().all()
            if not rows:
                # The SELECT above already began a transaction (autobegin): finish it here.
                await self._ensure_defaults(s, mailbox.lower())
                await s.commit()
                rows = (
                    await s.execute(select(Folder).where(Folder.mailbox == mailbox.lower()).order_by(Folder.name))
                ).scalars().all()
            return [_folder_info(f) for f in rows]

    async def get_folder(self, mailbox: str, name: str) -> FolderInfo | None:
        """The folder with its message and unseen counts, or None."""
        name = canonical_folder_name(name)
        async with self.sessions() as s:
            f = (
                await s.execute(select(Folder).where(Folder.mailbox == mailbox.lower(), Folder.name == name))
            ).scalar_one_or_none()
            if f is None and name == "INBOX":
                await self._ensure_defaults(s, mailbox.lower())
                await s.commit()
                f = (
                    await s.execute(select(Folder).where(Folder.mailbox == mailbox.lower(), Folder.name == name))
                ).scalar_one_or_none()
            if f is None:
                return None
            exists = (await s.execute(select(func.count()).where(Message.folder_id == f.id))).scalar_one()
            seen = (
                await s.execute(
                    select(func.count()).where(
                        Message.folder_id == f.id,
                        # Flags are space-separated; match the whole word, escaping the
                        # backslash (PostgreSQL's default LIKE escape character).
                        or_(*(Message.flags.like(p, escape="!") for p in ("\\Seen", "\\Seen %", "% \\Seen", "% \\Seen %"))),
                    )
                )
            ).scalar_one()
            return _folder_info(f, exists, exists - seen)

    async def folder_state(self, folder_id: int) -> tuple[int, int] | None:
        """(UIDNEXT, HIGHESTMODSEQ) of a folder, None if it is gone: one primary-key read, so
        an IMAP session can tell after each command whether anything changed."""
        async with self.sessions() as s:
            row = (
                await s.execute(select(Folder.uidnext, Folder.highestmodseq).where(Folder.id == folder_id))
            ).first()
        return (row[0], row[1]) if row else None

    async def create_folder(self, mailbox: str, name: str) -> FolderInfo:
        name = canonical_folder_name(name)
        async with self.sessions() as s, s.begin():
            clash = (
                await s.execute(select(Folder.id).where(Folder.mailbox == mailbox.lower(), Folder.name == name))
            ).first()
            if clash:
                raise StoreError(f"folder {name} already exists")
            f = self._new_folder(mailbox.lower(), name)
            s.add(f)
            await s.flush()
            return _folder_info(f)

    async def delete_folder(self, mailbox: str, name: str) -> None:
        if canonical_folder_name(name) == "INBOX":
            raise StoreError("INBOX cannot be deleted")
        async with self.sessions() as s, s.begin():
            f = (
                await s.execute(select(Folder).where(Folder.mailbox == mailbox.lower(), Folder.name == name))
            ).scalar_one_or_none()
            if f is None:
                raise StoreError(f"no folder {name}")
            await s.execute(delete(Message).where(Message.folder_id == f.id))
            await s.delete(f)

    async def rename_folder(self, mailbox: str, old: str, new: str) -> None:
        if canonical_folder_name(old) == "INBOX" or canonical_folder_name(new) == "INBOX":
            raise StoreError("renaming INBOX is not supported")
        async with self.sessions() as s, s.begin():
            clash = (
                await s.execute(select(Folder.id).where(Folder.mailbox == mailbox.lower(), Folder.name == new))
            ).first()
            if clash:
                raise StoreError(f"folder {new} already exists")
            res = await s.execute(
                update(Folder).where(Folder.mailbox == mailbox.lower(), Folder.name == old).values(name=new)
            )
            if res.rowcount == 0:
                raise StoreError(f"no folder {old}")

    async def set_subscribed(self, mailbox: str, name: str, subscribed: bool) -> None:
        async with self.sessions() as s, s.begin():
            res = await s.execute(
                update(Folder)
                .where(Folder.mailbox == mailbox.lower(), Folder.name == canonical_folder_name(name))
                .values(subscribed=subscribed)
            )
            if res.rowcount == 0:
                raise StoreError(f"no folder {name}")

    # -- messages ------------------------------------------------------------------------

    async def messages(self, folder_id: int) -> list[MessageMeta]:
        """Every message of the folder in UID order (their sequence numbers are 1..n)."""
        async with self.sessions() as s:
            rows = (
                await s.execute(
                    select(Message.uid, Message.modseq, Message.flags, Message.internaldate, Message.size)
                    .where(Message.folder_id == folder_id)
                    .order_by(Message.uid)
                )
            ).all()
        return [MessageMeta(u, m, _flags_from_text(fl), _aware(d), sz) for u, m, fl, d, sz in rows]

    async def headers(self, folder_id: int, uids: Sequence[int]) -> dict[int, OuterHeaders]:
        out: dict[int, OuterHeaders] = {}
        async with self.sessions() as s:
            for chunk in _chunks(list(uids), 500):
                rows = await s.execute(
                    select(
                        Message.uid, Message.hdr_from, Message.hdr_to, Message.hdr_cc,
                        Message.hdr_subject, Message.hdr_date, Message.hdr_message_id,
                    ).where(Message.folder_id == folder_id, Message.uid.in_(chunk))
                )
                for uid, *vals in rows.all():
                    out[uid] = OuterHeaders(*vals)
        return out

    async def content(self, folder_id: int, uids: Sequence[int]) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        async with self.sessions() as s:
            for chunk in _chunks(list(uids), 200):
                rows = await s.execute(
                    select(Message.uid, Message.content).where(
                        Message.folder_id == folder_id, Message.uid.in_(chunk)
                    )
                )
                out.update({u: bytes(c) for u, c in rows.all()})
        return out

    async def set_flags(
        self, folder_id: int, uids: Sequence[int], flags: Iterable[str], mode: FlagMode
    ) -> list[MessageMeta]:
        """Change flags; each changed message gets a new MODSEQ. Returns the new state.

        The folder is locked before the rows are read, so two sessions changing flags at
        once cannot each write a state computed from a stale read.
        """
        flags = set(flags)
        result: list[MessageMeta] = []
        async with self.sessions() as s, s.begin():
            await self._lock(s, folder_id)
            rows = (
                await s.execute(
                    select(Message).where(Message.folder_id == folder_id, Message.uid.in_(list(uids))).order_by(Message.uid)
                )
            ).scalars().all()
            changes = []
            for m in rows:
                old = _flags_from_text(m.flags)
                new = old | flags if mode == "add" else old - flags if mode == "remove" else frozenset(flags)
                changes.append((m, new, new != old))
            n = sum(1 for _, _, changed in changes if changed)
            modseq = (await self._bump_modseq(s, folder_id, n)) if n else 0
            for m, new, changed in changes:
                if changed:
                    m.flags = _flags_to_text(new)
                    m.modseq = modseq
                    modseq += 1
                result.append(MessageMeta(m.uid, m.modseq, frozenset(new), _aware(m.internaldate), m.size))
        if any(changed for _, _, changed in changes):
            self.events.publish(folder_id)
        return result

    async def expunge(self, folder_id: int, uids: Sequence[int] | None = None) -> list[int]:
        """Remove messages flagged \\Deleted (restricted to `uids` for UID EXPUNGE)."""
        async with self.sessions() as s, s.begin():
            await self._lock(s, folder_id)
            gone = await self._deleted_uids(s, folder_id, uids)
            if gone:
                await s.execute(delete(Message).where(Message.folder_id == folder_id, Message.uid.in_(gone)))
                await self._bump_modseq(s, folder_id, 1)
        if gone:
            self.events.publish(folder_id)
        return gone

    @staticmethod
    async def _deleted_uids(s: AsyncSession, folder_id: int, uids: Sequence[int] | None) -> list[int]:
        """UIDs flagged \\Deleted, decided on the parsed flag set: a keyword that merely
        contains the word (say `$NotDeleted`) must never be expunged."""
        q = select(Message.uid, Message.flags).where(Message.folder_id == folder_id)
        if uids is not None:
            q = q.where(Message.uid.in_(list(uids)))
        rows = (await s.execute(q)).all()
        return sorted(uid for uid, fl in rows if "\\Deleted" in _flags_from_text(fl))

    async def copy(self, folder_id: int, uids: Sequence[int], dest_folder_id: int) -> list[tuple[int, int]]:
        """Copy ciphertext rows as they are (RFC 4315 COPYUID pairs returned)."""
        async with self.sessions() as s, s.begin():
            await self._lock(s, folder_id, dest_folder_id)
            pairs = await self._copy(s, folder_id, uids, dest_folder_id)
        if pairs:
            self.events.publish(dest_folder_id)
        return pairs

    async def move(self, folder_id: int, uids: Sequence[int], dest_folder_id: int) -> list[tuple[int, int]]:
        """RFC 6851 MOVE in one transaction: the copies and the removal commit together, so a
        crash never leaves a message in both folders or in neither."""
        if folder_id == dest_folder_id:
            raise StoreError("source and destination are the same folder")
        async with self.sessions() as s, s.begin():
            await self._lock(s, folder_id, dest_folder_id)
            pairs = await self._copy(s, folder_id, uids, dest_folder_id)
            moved = [src for src, _ in pairs]
            if moved:
                await s.execute(delete(Message).where(Message.folder_id == folder_id, Message.uid.in_(moved)))
                await self._bump_modseq(s, folder_id, 1)
        if pairs:
            self.events.publish(folder_id)
            self.events.publish(dest_folder_id)
        return pairs

    async def _copy(self, s: AsyncSession, folder_id: int, uids: Sequence[int], dest_folder_id: int) -> list[tuple[int, int]]:
        rows = (
            await s.execute(
                select(Message).where(Message.folder_id == folder_id, Message.uid.in_(list(uids))).order_by(Message.uid)
            )
        ).scalars().all()
        if not rows:
            return []
        first_uid, first_modseq = await self._reserve_by_id(s, dest_folder_id, len(rows))
        pairs = []
        for k, m in enumerate(rows):
            s.add(
                Message(
                    folder_id=dest_folder_id, uid=first_uid + k, modseq=first_modseq + k, flags=m.flags,
                    internaldate=m.internaldate, size=m.size, content=m.content,
                    hdr_from=m.hdr_from, hdr_to=m.hdr_to, hdr_cc=m.hdr_cc,
                    hdr_subject=m.hdr_subject, hdr_date=m.hdr_date, hdr_message_id=m.hdr_message_id,
                )
            )
            pairs.append((m.uid, first_uid + k))
        await s.flush()
        return pairs

    async def write(self, batch: Sequence[NewMessage]) -> list[StoredRef]:
        """Store messages in one transaction; returns once the commit is durable."""
        refs: list[StoredRef] = []
        async with self.sessions() as s, s.begin():
            refs = await self._write(s, batch)
        for folder_id in {r.folder_id for r in refs}:
            self.events.publish(folder_id)
        return refs

    async def _write(self, s: AsyncSession, batch: Sequence[NewMessage]) -> list[StoredRef]:
        """Insert a batch: one folder look-up and one counter update per folder, then one
        multi-row insert, so a group commit costs O(folders) statements, not O(messages)."""
        by_folder: dict[tuple[str, str], list[int]] = {}
        for i, item in enumerate(batch):
            by_folder.setdefault((item.mailbox.lower(), canonical_folder_name(item.folder)), []).append(i)
        refs: list[StoredRef | None] = [None] * len(batch)
        rows: list[Message] = []
        keys = list(by_folder)
        if s.get_bind().dialect.name == "postgresql":
            # Same lock order as `_lock` (ascending folder id): see there.
            locked = (
                await s.execute(
                    select(Folder.mailbox, Folder.name)
                    .where(tuple_(Folder.mailbox, Folder.name).in_(keys))
                    .order_by(Folder.id)
                    .with_for_update()
                )
            ).all()
            ordered = [(m, n) for m, n in locked]
            keys = ordered + [k for k in keys if k not in set(ordered)]  # new folders last
        for mailbox, name in keys:
            positions = by_folder[(mailbox, name)]
            folder_id, uidvalidity, first_uid, first_modseq = await self._reserve(s, mailbox, name, len(positions))
            for k, i in enumerate(positions):
                item, h = batch[i], batch[i].headers
                rows.append(
                    Message(
                        folder_id=folder_id, uid=first_uid + k, modseq=first_modseq + k,
                        flags=_flags_to_text(item.flags),
                        # UTC always: SQLite keeps no offset, and IMAP renders the zone it is given.
                        internaldate=_aware(item.internaldate).astimezone(timezone.utc),
                        size=len(item.content), content=item.content,
                        hdr_from=h.from_, hdr_to=h.to, hdr_cc=h.cc, hdr_subject=h.subject,
                        hdr_date=h.date, hdr_message_id=h.message_id,
                    )
                )
                refs[i] = StoredRef(mailbox, folder_id, uidvalidity, first_uid + k)
        s.add_all(rows)
        await s.flush()
        return refs  # type: ignore[return-value]

    async def _reserve(self, s: AsyncSession, mailbox: str, name: str, n: int) -> tuple[int, int, int, int]:
        """Find the folder and reserve `n` UIDs and MODSEQs in one statement (row-locked on
        PostgreSQL): (folder id, uidvalidity, first uid, first modseq)."""
        stmt = (
            update(Folder)
            .where(Folder.mailbox == mailbox, Folder.name == name)
            .values(uidnext=Folder.uidnext + n, highestmodseq=Folder.highestmodseq + n)
            .returning(Folder.id, Folder.uidvalidity, Folder.uidnext, Folder.highestmodseq)
            .execution_options(synchronize_session=False)
        )
        row = (await s.execute(stmt)).first()
        if row is None:
            if name not in {n_ for n_, _ in DEFAULT_FOLDERS}:
                raise StoreError(f"no folder {name} in {mailbox}")
            await self._ensure_defaults(s, mailbox)
            row = (await s.execute(stmt)).one()
        folder_id, uidvalidity, uidnext, modseq = row
        return folder_id, uidvalidity, uidnext - n, modseq - n + 1

    @staticmethod
    async def _lock(s: AsyncSession, *folder_ids: int) -> None:
        """Take the write locks of these folders before reading anything.

        PostgreSQL: row locks, always in ascending id order (`_write` follows the same
        order), so two transactions that touch the same two folders cannot deadlock.
        SQLite: one database-wide write lock; taking it with the transaction's first
        statement means a later write never fails on a read snapshot that went stale.
        """
        ids = sorted(set(folder_ids))
        if s.get_bind().dialect.name == "postgresql":
            found = (
                await s.execute(select(Folder.id).where(Folder.id.in_(ids)).order_by(Folder.id).with_for_update())
            ).scalars().all()
        else:
            res = await s.execute(
                update(Folder).where(Folder.id.in_(ids)).values(highestmodseq=Folder.highestmodseq)
                .execution_options(synchronize_session=False)
            )
            found = ids if res.rowcount == len(ids) else []
        if len(found) != len(ids):
            raise StoreError("the folder no longer exists")

    @staticmethod
    async def _bump_modseq(s: AsyncSession, folder_id: int, n: int) -> int:
        """Reserve `n` MODSEQs; returns the first."""
        modseq = (
            await s.execute(
                update(Folder).where(Folder.id == folder_id)
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
                update(Folder).where(Folder.id == folder_id)
                .values(uidnext=Folder.uidnext + n, highestmodseq=Folder.highestmodseq + n)
                .returning(Folder.uidnext, Folder.highestmodseq)
                .execution_options(synchronize_session=False)
            )
        ).first()
        if row is None:
            raise StoreError("the destination folder no longer exists")
        return row[0] - n, row[1] - n + 1


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i : i + n]
