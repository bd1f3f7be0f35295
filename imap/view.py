"""The client's view of the selected folder: sequence numbers, and what it has been told.

RFC 9051 2.3.1.2 and 7.5.1: sequence numbers may only change when the server says so
(EXPUNGE, EXISTS). The view keeps the UID list the client knows; `sync` compares it with
the store and produces the untagged updates that bring the client up to date, in an order
that keeps every number it sends valid (EXPUNGE from the highest number down).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from functools import lru_cache

from imap.flags import RECENT
from imap.protocol.commands import SequenceSet
from imap.protocol.response import Atom, Data, Response, Serialised, Value, ok, serialise
from mss.records import FolderInfo, MessageMeta


def flag_list(flags: Iterable[str]) -> Serialised:
    """The flags as a FETCH FLAGS list, sorted, in wire form: built once per distinct flag
    set (a folder's messages share a handful of them)."""
    return _flag_list(flags if isinstance(flags, frozenset) else frozenset(flags))


@lru_cache(maxsize=4096)
def _flag_list(flags: frozenset[str]) -> Serialised:
    return Serialised(serialise([Atom(f) for f in sorted(flags)]))


@lru_cache(maxsize=4096)
def _with_recent(flags: frozenset[str]) -> frozenset[str]:
    return flags | {RECENT}


#: The system flags every folder permits (RFC 9051 2.3.2), in the order FLAGS lists them.
#: RFC 4314 4: the right that changing each flag takes ("w" for any other).
_FLAG_RIGHTS = {"\\Seen": "s", "\\Deleted": "t"}
_SYSTEM = ("\\Answered", "\\Deleted", "\\Draft", "\\Flagged", "\\Seen")


class FolderView:
    def __init__(self, info: FolderInfo, metas: Sequence[MessageMeta], readonly: bool) -> None:
        self.info = info
        self.readonly = readonly
        #: The user's RFC 4314 rights on the folder's mailbox, when not every right to
        #: change flags (a shared mailbox's member): PERMANENTFLAGS lists only what they allow.
        self.rights: str | None = None
        self.uids: list[int] = [m.uid for m in metas]
        self.flags: dict[int, frozenset[str]] = {m.uid: m.flags for m in metas}
        self.max_uid = self.uids[-1] if self.uids else 0
        #: The UIDs that are \\Recent to this session (RFC 3501 2.3.2): claimed by its SELECT
        #: or when they arrived while it had the folder selected; none in IMAP4rev2.
        self.recent: set[int] = set()
        #: UIDs below this were claimed for \\Recent already (by this session or another).
        self.claimed_upto = info.uidnext
        #: Whether `* N RECENT` is sent when new messages arrive (not in IMAP4rev2).
        self.report_recent = True
        #: The keywords the client was told the folder has (FLAGS, PERMANENTFLAGS).
        self.keywords: set[str] = {f for m in metas for f in m.flags if not f.startswith("\\")}
        #: (UIDNEXT, HIGHESTMODSEQ) of the folder when the client was last told everything
        #: (None: unknown, reload at the next sync).
        self.synced_state: tuple[int, int] | None = (info.uidnext, info.highestmodseq)
        #: CONDSTORE is enabled (RFC 7162 3.1): every untagged FETCH the server volunteers
        #: carries UID and MODSEQ.
        self.modseqs = False
        #: QRESYNC is enabled (RFC 7162 3.2.10): expunges are announced by VANISHED.
        self.vanished_mode = False
        #: The search result variable `$` (RFC 5182 2.1), as UIDs: empty at SELECT/EXAMINE
        #: (a new view), set by SEARCH RETURN (SAVE), emptied by such a SEARCH answered NO;
        #: expunged messages leave it when the client is told.
        self.saved: frozenset[int] = frozenset()

    def update_items(self, meta: MessageMeta, items: list[Value]) -> list[Value]:
        """The items of an untagged FETCH that reports a change (`items` without UID),
        with UID and MODSEQ when CONDSTORE is enabled (RFC 7162 3.1.4: "the server MUST
        automatically include both UID and mod-sequence data in all subsequent untagged
        FETCH responses")."""
        if not self.modseqs:
            return items
        return [Atom("UID"), meta.uid, *items, Atom("MODSEQ"), [meta.modseq]]

    def shown(self, meta: MessageMeta) -> MessageMeta:
        """`meta` as this session shows it: with `\\Recent` when the message is recent to it."""
        if meta.uid in self.recent:
            return MessageMeta(meta.uid, meta.modseq, _with_recent(meta.flags), meta.internaldate, meta.size)
        return meta

    def flags_responses(self) -> list[Response]:
        """`FLAGS` and `OK [PERMANENTFLAGS]` for what the folder holds now (RFC 9051 7.3.5);
        PERMANENTFLAGS is empty when the folder was opened read-only (EXAMINE)."""
        flags = [Atom(f) for f in _SYSTEM] + [Atom(k) for k in sorted(self.keywords)]
        permanent = [] if self.readonly else [*flags, Atom("\\*")]
        if self.rights is not None:
            # RFC 4314 4: only the flags the user's rights let it change are permanent.
            permanent = [a for a in permanent if _FLAG_RIGHTS.get(str(a), "w") in self.rights]
        text = "(" + " ".join(permanent) + ")"
        return [Data(Atom("FLAGS"), flags), ok(None, "Flags permitted", f"PERMANENTFLAGS {text}")]

    def note_keywords(self, flagsets: Iterable[Iterable[str]]) -> list[Response]:
        """RFC 3501 7.2.6: a STORE or a delivery brought a keyword the client was not told
        of; the FLAGS and PERMANENTFLAGS updates to send first, or nothing."""
        new = {f for flags in flagsets for f in flags if not f.startswith("\\")} - self.keywords
        if not new:
            return []
        self.keywords |= new
        return self.flags_responses()

    @property
    def id(self) -> int:
        return self.info.id

    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        i = bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def resolve(self, seqset: SequenceSet, uid: bool) -> list[tuple[int, int]]:
        """(seq, uid) pairs a sequence set names, in ascending order. `$` names the saved
        result's messages, in a UID command or not (RFC 5182 2.1)."""
        if seqset.saved:
            return [(i + 1, u) for i, u in enumerate(self.uids) if u in self.saved]
        if uid:
            star = self.uids[-1] if self.uids else 0
            return [(i + 1, u) for i, u in enumerate(self.uids) if seqset.contains(u, star)]
        n = len(self.uids)
        return [(i + 1, u) for i, u in enumerate(self.uids) if seqset.contains(i + 1, n)]

    def names_uid(self, seqset: SequenceSet, uid: int, star: int) -> bool:
        """Whether a UID set (or `$`) names `uid`, which may be no longer in the view (an
        expunged UID, for VANISHED); `star` is what `*` stands for."""
        return uid in self.saved if seqset.saved else seqset.contains(uid, star)

    def seq_out_of_range(self, seqset: SequenceSet) -> bool:
        """RFC 9051 6.4.8: naming a message number beyond EXISTS is a BAD. A range with `*`
        (e.g. `1:*` in an empty folder) names what exists and is never out of range."""
        n = len(self.uids)
        return any(lo is not None and hi is not None and min(lo, hi) > n for lo, hi in seqset.ranges)

    def note_flags(self, metas: Sequence[MessageMeta]) -> None:
        """Flags the client has just been told of (our own STORE / implicit \\Seen)."""
        for m in metas:
            if m.uid in self.flags:
                self.flags[m.uid] = m.flags

    def note_expunged(self, uids: Sequence[int]) -> list[Response]:
        """Drop UIDs and return their EXPUNGE responses, highest sequence number first, or
        one `VANISHED` listing them when QRESYNC is enabled (RFC 7162 3.2.10)."""
        out: list[Response] = []
        gone: list[int] = []
        for uid in sorted(set(uids), reverse=True):
            seq = self.seq_of(uid)
            if seq is None:
                continue
            out.append(Data(seq, Atom("EXPUNGE")))
            gone.append(uid)
            del self.uids[seq - 1]
            self.flags.pop(uid, None)
            self.recent.discard(uid)
        if gone and self.saved:
            self.saved = self.saved.difference(gone)  # RFC 5182 2.1: expunged, so not in `$`
        if self.vanished_mode:
            return [Data(Atom("VANISHED"), Atom(SequenceSet.compact(gone)))] if gone else []
        return out

    def sync(
        self,
        metas: Sequence[MessageMeta],
        *,
        allow_expunge: bool,
        uid_mode: bool,
        state: tuple[int, int] | None = None,
        recent: tuple[int, int] | None = None,
    ) -> list[Response]:
        """Untagged updates for what changed in the store since the client last heard.

        `state` is the folder's (UIDNEXT, HIGHESTMODSEQ) read before `metas`; it is kept
        only if the client was told everything (no EXPUNGE held back)."""
        current = {m.uid: m for m in metas}
        out: list[Response] = []
        gone = [u for u in self.uids if u not in current]
        if allow_expunge:
            out += self.note_expunged(gone)
        self.synced_state = state if allow_expunge or not gone else None
        new = [m for m in metas if m.uid > self.max_uid]
        if new:
            for m in new:
                self.uids.append(m.uid)
                self.flags[m.uid] = m.flags
            self.max_uid = new[-1].uid
            out.append(Data(len(self.uids), Atom("EXISTS")))
            if recent is not None:
                # The new messages this session claimed (`claim_recent`'s range).
                self.recent |= {m.uid for m in new if recent[0] <= m.uid < recent[1]}
                self.claimed_upto = max(self.claimed_upto, recent[1])
            if self.report_recent:
                out.append(Data(len(self.recent), Atom("RECENT")))  # RFC 3501 7.3.2
        new_uids = {m.uid for m in new}
        # New keywords first: the FETCH and EXISTS below may carry them (RFC 3501 7.2.6).
        out = self.note_keywords(m.flags for m in metas) + out
        for seq, uid in enumerate(self.uids, 1):
            now = current.get(uid)
            if now is None or uid in new_uids:
                continue
            if now.flags != self.flags.get(uid):
                self.flags[uid] = now.flags
                items: list[Value] = [Atom("FLAGS"), flag_list(self.shown(now).flags)]
                if uid_mode and not self.modseqs:
                    items = [Atom("UID"), uid, *items]
                out.append(Data(seq, Atom("FETCH"), self.update_items(now, items)))
        return out
