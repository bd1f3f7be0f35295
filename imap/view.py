"""The client's view of the selected folder: sequence numbers, and what it has been told.

RFC 9051 2.3.1.2 and 7.5.1: sequence numbers may only change when the server says so
(EXPUNGE, EXISTS). The view keeps the UID list the client knows; `sync` compares it with
the store and produces the untagged updates that bring the client up to date, in an order
that keeps every number it sends valid (EXPUNGE from the highest number down).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
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
        #: The flags the client was told of, parallel to `uids` (`flags` reads it by UID): a
        #: list of references to the folder's few shared flag sets costs 8 bytes a message,
        #: a dict by UID about 60, in every session that has the folder selected.
        self._flags: list[frozenset[str]] = [m.flags for m in metas]
        self.max_uid = self.uids[-1] if self.uids else 0
        #: The UIDs that are \\Recent to this session (RFC 3501 2.3.2): claimed by its SELECT
        #: or when they arrived while it had the folder selected; none in IMAP4rev2.
        self.recent: set[int] = set()
        #: UIDs below this were claimed for \\Recent already (by this session or another).
        self.claimed_upto = info.uidnext
        #: Whether `* N RECENT` is sent when new messages arrive (not in IMAP4rev2).
        self.report_recent = True
        #: The keywords the client was told the folder has (FLAGS, PERMANENTFLAGS).
        self.keywords: set[str] = {f for fs in set(self._flags) for f in fs if not f.startswith("\\")}
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
        uids = self.uids
        if seqset.saved:
            return [(i + 1, u) for i, u in enumerate(uids) if u in self.saved]
        # Each range as a slice of the (sorted) UID list, merged: no test per message.
        n = len(uids)
        star = (uids[-1] if uids else 0) if uid else n
        spans: list[tuple[int, int]] = []
        for lo, hi in seqset.ranges:
            a = star if lo is None else lo
            b = star if hi is None else hi
            if a > b:
                a, b = b, a
            if uid:
                spans.append((bisect_left(uids, a), bisect_right(uids, b)))
            else:
                spans.append((max(a, 1) - 1, min(b, n)))
        out: list[tuple[int, int]] = []
        end = 0
        for a, b in sorted(spans):
            a = max(a, end)
            if a < b:
                out += zip(range(a + 1, b + 1), uids[a:b], strict=True)
                end = b
        return out

    def names_uid(self, seqset: SequenceSet, uid: int, star: int) -> bool:
        """Whether a UID set (or `$`) names `uid`, which may be no longer in the view (an
        expunged UID, for VANISHED); `star` is what `*` stands for."""
        return uid in self.saved if seqset.saved else seqset.contains(uid, star)

    def seq_out_of_range(self, seqset: SequenceSet) -> bool:
        """RFC 9051 6.4.8: naming a message number beyond EXISTS is a BAD. A range with `*`
        (e.g. `1:*` in an empty folder) names what exists and is never out of range."""
        n = len(self.uids)
        return any(lo is not None and hi is not None and min(lo, hi) > n for lo, hi in seqset.ranges)

    @property
    def flags(self) -> _FlagsByUid:
        """The flags the client was told of, by UID (a mapping over `uids` and `_flags`)."""
        return _FlagsByUid(self)

    def note_flags(self, metas: Sequence[MessageMeta]) -> None:
        """Flags the client has just been told of (our own STORE / implicit \\Seen)."""
        for m in metas:
            i = bisect_left(self.uids, m.uid)
            if i < len(self.uids) and self.uids[i] == m.uid:
                self._flags[i] = m.flags

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
            del self._flags[seq - 1]
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
        only if the client was told everything (no EXPUNGE held back).

        Pure arrivals take `sync_arrivals` (work in the new messages). Otherwise, when the
        client was told everything up to a known HIGHESTMODSEQ (`synced_state`), only the
        messages with a greater MODSEQ can have changed (RFC 7162 3.1: every flag change
        gives the message a new one), and none was expunged if as many messages as the view
        knows remain: a STORE by another session on a 10,000-message folder then costs a
        look at the messages it changed, not a comparison of all of them."""
        first_new = self.arrivals_only(metas, state)
        if first_new is not None:
            return self.sync_arrivals(metas, first_new, state, recent)
        prev = self.synced_state
        known = bisect_right(metas, self.max_uid, key=_uid)  # in UID order: the ones the view had
        if prev is not None and known == len(self.uids):
            gone: list[int] = []
            old = [m for m in metas[:known] if m.modseq > prev[1]]
        else:
            current = {m.uid for m in metas}
            gone = [u for u in self.uids if u not in current]
            old = list(metas[:known])
        new = list(metas[known:])
        out: list[Response] = []
        if allow_expunge:
            out += self.note_expunged(gone)
        self.synced_state = state if allow_expunge or not gone else None
        if new:
            for m in new:
                self.uids.append(m.uid)
                self._flags.append(m.flags)
            self.max_uid = new[-1].uid
            out.append(Data(len(self.uids), Atom("EXISTS")))
            if recent is not None:
                self.recent |= {m.uid for m in new if recent[0] <= m.uid < recent[1]}
                self.claimed_upto = max(self.claimed_upto, recent[1])
            if self.report_recent:
                out.append(Data(len(self.recent), Atom("RECENT")))  # RFC 3501 7.3.2
        # New keywords first: the FETCH and EXISTS below may carry them (RFC 3501 7.2.6).
        out = self.note_keywords({m.flags for m in old} | {m.flags for m in new}) + out
        told = self._flags
        for now in old:
            uid = now.uid
            seq = self.seq_of(uid)
            if seq is None:  # pragma: no cover - `old` holds UIDs of the view only
                continue
            if now.flags != told[seq - 1]:
                told[seq - 1] = now.flags
                items: list[Value] = [Atom("FLAGS"), flag_list(self.shown(now).flags)]
                if uid_mode and not self.modseqs:
                    items = [Atom("UID"), uid, *items]
                out.append(Data(seq, Atom("FETCH"), self.update_items(now, items)))
        return out

    def arrivals_only(self, metas: Sequence[MessageMeta], state: tuple[int, int] | None) -> int | None:
        """Where the new messages start in `metas` when they are the only change since the
        client was last told everything (the common case of IDLE: mail arrived), else None.

        Told in O(1), without comparing the folder message by message: a delivery, COPY or
        APPEND of k messages reserves k UIDs and k MODSEQs together (`mss.store._reserve`),
        and every other change to a folder's messages (flags, keywords, expunge) moves
        HIGHESTMODSEQ alone (RFC 7162 3.1.1). So when UIDNEXT and HIGHESTMODSEQ both moved by
        the same k since `synced_state`, and the list holds exactly the view's messages
        followed by k newer ones, nothing else changed. Anything else takes the full diff."""
        told = self.synced_state
        if told is None or state is None:
            return None
        k = state[0] - told[0]
        n = len(self.uids)
        if k <= 0 or state[1] - told[1] != k or len(metas) != n + k:
            return None
        if n and metas[n - 1].uid != self.uids[-1]:
            return None
        if metas[n].uid <= self.max_uid or metas[n].uid < told[0]:
            return None
        return n

    def sync_arrivals(
        self,
        metas: Sequence[MessageMeta],
        first_new: int,
        state: tuple[int, int] | None,
        recent: tuple[int, int] | None,
    ) -> list[Response]:
        """`sync` when only new messages arrived (`arrivals_only`): work in the number of
        new messages, not in the folder's size, for each of thousands of idlers."""
        new = metas[first_new:]
        for m in new:
            self.uids.append(m.uid)
            self._flags.append(m.flags)
        self.max_uid = new[-1].uid
        self.synced_state = state
        out: list[Response] = [_count(len(self.uids), "EXISTS")]
        if recent is not None:
            self.recent |= {m.uid for m in new if recent[0] <= m.uid < recent[1]}
            self.claimed_upto = max(self.claimed_upto, recent[1])
        if self.report_recent:
            out.append(_count(len(self.recent), "RECENT"))  # RFC 3501 7.3.2
        # New keywords first: the EXISTS may bring them (RFC 3501 7.2.6).
        return self.note_keywords(m.flags for m in new) + out


class _FlagsByUid:
    """`FolderView.flags`: the told flags of a message by UID (what a dict gave before)."""

    __slots__ = ("_view",)

    def __init__(self, view: FolderView) -> None:
        self._view = view

    def _index(self, uid: int) -> int | None:
        uids = self._view.uids
        i = bisect_left(uids, uid)
        return i if i < len(uids) and uids[i] == uid else None

    def get(self, uid: int, default: frozenset[str] | None = None) -> frozenset[str] | None:
        i = self._index(uid)
        return default if i is None else self._view._flags[i]

    def __getitem__(self, uid: int) -> frozenset[str]:
        i = self._index(uid)
        if i is None:
            raise KeyError(uid)
        return self._view._flags[i]

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, int) and self._index(uid) is not None

    def __len__(self) -> int:
        return len(self._view.uids)


@lru_cache(maxsize=1024)
def _count(n: int, name: str) -> Data:
    """`* n EXISTS` / `* n RECENT`: one object for every idler told the same number."""
    return Data(n, Atom(name))


def _uid(m: MessageMeta) -> int:
    return m.uid
