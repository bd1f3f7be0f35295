"""Folder commands: NAMESPACE (RFC 2342), SELECT/EXAMINE, CLOSE/UNSELECT (RFC 3691),
DELETE, RENAME, SUBSCRIBE/UNSUBSCRIBE, STATUS, and the LIST pattern matcher. CREATE and
LIST/LSUB (LIST-EXTENDED, LIST-STATUS, SPECIAL-USE) are in `imap.commands.listing`.

A session sees the folders of its own mailbox in the personal namespace, and those of the
shared mailboxes it is a member of under `Partagés/<address>/` (`imap.namespaces`), "/" being
the hierarchy delimiter of both. (IMAP "mailbox" in the RFCs is our
`Folder`.) Folder names are checked, and RENAME carried out with its inferiors in one
transaction, by the core; refusals come back as `Refusal` and the dispatcher answers them.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from imap.commands.quota import kib
from imap.names import outgoing
from imap.namespaces import SHARED_PREFIX
from imap.protocol.commands import Delete, Namespace, Qresync, Rename, Select, SequenceSet, Status, Subscribe, Unselect
from imap.protocol.response import Atom, Data, Response, Value, bad, no, ok
from imap.state import Event
from imap.view import FolderView, flag_list
from mss.records import DELIMITER, FolderInfo, MessageMeta, canonical_folder_name

if TYPE_CHECKING:
    from imap.session import Session

log = logging.getLogger("mss.imap")


async def namespace(session: Session, cmd: Namespace) -> list[Response]:
    """RFC 2342 5: the personal namespace ("" with "/"), no other users' namespace, and the
    shared namespace `Partagés/` when the session has shared mailboxes (`imap.namespaces`),
    named as every other name (modified UTF-7, or UTF-8 once UTF8=ACCEPT/IMAP4rev2)."""
    shared: Value = None
    if session.box.shared_addresses:
        shared = [[outgoing(SHARED_PREFIX, session.utf8_names), DELIMITER]]
    return [Data(Atom("NAMESPACE"), [["", DELIMITER]], None, shared), ok(cmd.tag, "NAMESPACE completed")]


async def select(session: Session, cmd: Select) -> list[Response]:
    """SELECT / EXAMINE (RFC 9051 6.3.2, 6.3.3). Whatever was selected is deselected
    before the attempt, so a SELECT that fails, for any reason, leaves none selected, and
    `OK [CLOSED]` says so first (RFC 7162 3.2.11, RFC 9051 7.1). With the QRESYNC
    parameter (RFC 7162 3.2.5) the client also learns what changed since it last knew."""
    if cmd.qresync is not None and not session.qresync:
        return [bad(cmd.tag, "ENABLE QRESYNC first (RFC 7162 3.2.5)")]
    closed: list[Response] = [ok(None, "Previous folder closed", "CLOSED")] if session.view is not None else []
    if cmd.condstore or cmd.qresync is not None:
        session.enable_condstore()  # RFC 7162 3.1.8: SELECT (CONDSTORE) is an enabling command
    try:
        box = session.box
        info = await box.folder(cmd.mailbox)
        if info is None:
            session.apply(Event.SELECT_FAILED)
            return [no(cmd.tag, f"No folder {cmd.mailbox}", "NONEXISTENT")]
        rights = box.rights_of(info)
        if "r" not in rights:  # RFC 4314 4: SELECT and EXAMINE need "r"
            session.apply(Event.SELECT_FAILED)
            return [no(cmd.tag, f'No right to read {cmd.mailbox} (RFC 4314 "r")', "NOPERM")]
        rev2 = session.imap4rev2
        # RFC 3501 2.3.2: SELECT takes the folder's recent messages for this session (claimed
        # before the list is read, so each goes to one session); EXAMINE only looks. When the
        # folder row just read shows nothing unclaimed, no claim: a claim is a write through
        # the group committer, and most SELECTs find nothing new. A message that landed
        # between that read and the list's is in the list: it is claimed then, as it would
        # have been (the next sync claims only above the list's highest UID).
        skipped = not (cmd.readonly or rev2) and info.recent_uid >= info.uidnext
        if cmd.readonly or rev2:
            claimed = None
        elif skipped:
            claimed = (info.uidnext, info.uidnext)
        else:
            claimed = await box.claim_recent(info)
        metas = await box.messages(info)
        if skipped and metas and metas[-1].uid >= info.uidnext:
            claimed = await box.claim_recent(info)
        list_line = await _list_line(session, info) if rev2 else None
        resync = cmd.qresync if cmd.qresync is not None and cmd.qresync.uidvalidity == info.uidvalidity else None
        vanished = await box.vanished(info, resync.modseq) if resync is not None else []
    except Exception:
        session.apply(Event.SELECT_FAILED)
        raise
    view = FolderView(info, metas, cmd.readonly)
    if not set("stw") <= set(rights):
        view.rights = rights
    view.report_recent = not rev2
    view.modseqs = session.condstore
    view.vanished_mode = session.qresync
    uids = view.uids  # in UID order: the recent ones are a slice
    if claimed is not None:
        view.recent = set(uids[bisect_left(uids, claimed[0]) : bisect_left(uids, claimed[1])])
        view.claimed_upto = claimed[1]
    elif not rev2:
        view.recent = set(uids[bisect_left(uids, info.recent_uid) :])
    flags_line, permanent_line = view.flags_responses()
    out: list[Response] = [
        *closed,
        flags_line,
        Data(len(metas), Atom("EXISTS")),
        Data(len(view.recent), Atom("RECENT")),
        permanent_line,
        ok(None, "UIDs valid", f"UIDVALIDITY {info.uidvalidity}"),
        ok(None, "Predicted next UID", f"UIDNEXT {info.uidnext}"),
        ok(None, "Highest", f"HIGHESTMODSEQ {info.highestmodseq}"),  # RFC 7162 3.1.2.1
    ]
    first_unseen = next((i for i, m in enumerate(metas, 1) if "\\Seen" not in m.flags), None)
    if list_line is not None:
        # RFC 9051 6.3.2 and appendix E: no RECENT, no UNSEEN code; the folder's LIST line.
        out = [r for r in out if not (isinstance(r, Data) and r.items[-1:] == ("RECENT",))]
        out.append(list_line)
    elif first_unseen:
        out.append(ok(None, "First unseen", f"UNSEEN {first_unseen}"))
    if resync is not None:
        out += _resync(view, metas, vanished, resync)
    session.apply(Event.SELECT_OK, view)
    # RFC 4314 5.2: READ-WRITE when the user has "i", "e" or a right on flags the other users
    # share ("t", "w"; not "s": \Seen is each member's own on a shared mailbox, and a member
    # with "s" alone still keeps their own \Seen in a READ-ONLY folder).
    mode = "READ-ONLY" if cmd.readonly or not set("itwe") & set(rights) else "READ-WRITE"
    out.append(ok(cmd.tag, f"{cmd.name} completed", mode))
    return out


def _resync(view: FolderView, metas: list[MessageMeta], vanished: list[int], resync: Qresync) -> list[Response]:
    """RFC 7162 3.2.5.1: what changed since the client's mod-sequence, limited to its
    known UIDs: the expunged UIDs in one `VANISHED (EARLIER)`, then a FETCH (UID, FLAGS,
    MODSEQ) for each message changed or added since."""
    known = resync.known_uids
    top = max(view.info.uidnext - 1, 1)
    if known is not None:
        vanished = [u for u in vanished if known.contains(u, top)]
    out: list[Response] = []
    if vanished:
        out.append(Data(Atom("VANISHED"), [Atom("EARLIER")], Atom(SequenceSet.compact(vanished))))
    for seq, m in enumerate(metas, 1):
        if m.modseq > resync.modseq and (known is None or known.contains(m.uid, top)):
            items: list[Value] = [Atom("FLAGS"), flag_list(view.shown(m).flags)]
            out.append(Data(seq, Atom("FETCH"), view.update_items(m, items)))
    return out


async def _list_line(session: Session, info: FolderInfo) -> Data:
    """The LIST response a rev2 SELECT must send (RFC 9051 6.3.2), attributes accurate."""
    below = any(f.name.startswith(info.name + DELIMITER) for f in await session.box.folders())
    attrs = ["\\HasChildren" if below else "\\HasNoChildren"] + ([info.special_use] if info.special_use else [])
    return Data(Atom("LIST"), [Atom(a) for a in attrs], DELIMITER, outgoing(info.name, session.utf8_names))


def _atoms(items: Iterable[str]) -> str:
    return "(" + " ".join(items) + ")"


async def unselect(session: Session, cmd: Unselect) -> list[Response]:
    """UNSELECT (RFC 3691) and CLOSE (RFC 9051 6.4.1: expunges silently, unless read-only)."""
    view = session.folder
    if cmd.expunge and not view.readonly and "e" in session.box.rights_of(view.info):
        await session.box.expunge(view.info)  # without "e" (RFC 4314 4) CLOSE expunges nothing
    session.apply(Event.CLOSE)
    return [ok(cmd.tag, f"{cmd.name} completed")]


async def delete(session: Session, cmd: Delete) -> list[Response]:
    name = canonical_folder_name(cmd.mailbox)  # INBOX is case-insensitive (RFC 9051 5.1)
    if session.view is not None:
        # By id, not name: the selected folder may have been renamed since it was selected.
        target = await session.box.folder(name)
        if target is not None and target.id == session.view.info.id:
            return [no(cmd.tag, "Cannot delete the selected folder; CLOSE it first", "INUSE")]
    await session.box.delete_folder(name)
    return [ok(cmd.tag, "DELETE completed")]


async def rename(session: Session, cmd: Rename) -> list[Response]:
    """RFC 9051 6.3.6, inferior names included: the core renames them all in one
    transaction, so the client gets OK and the new tree, or NO and the tree as it was."""
    await session.box.rename_folder(cmd.mailbox, cmd.new.rstrip(DELIMITER))
    return [ok(cmd.tag, "RENAME completed")]


async def subscribe(session: Session, cmd: Subscribe) -> list[Response]:
    await session.box.subscribe(cmd.mailbox, cmd.subscribed)
    return [ok(cmd.tag, f"{cmd.name} completed")]


#: Longest LIST pattern (reference + pattern) and most patterns in one LIST (RFC 5258
#: allows several). Names are at most 255 characters, so longer patterns match nothing useful.
MAX_PATTERN = 512
MAX_PATTERNS = 16


class Pattern:
    """RFC 9051 6.3.9 LIST pattern: `*` matches anything, `%` anything but the delimiter.

    Matched without backtracking: runs of wildcards collapse to one, then a bit-parallel
    walk keeps the set of name prefixes the pattern so far can match (one big-integer bit
    per position), so a match costs O(len(pattern) * log(len(name))) integer operations
    whatever the pattern. (A regular expression `.*a.*a.*...` backtracks exponentially.)
    """

    def __init__(self, reference: str, pattern: str) -> None:
        full = reference + pattern if not pattern.startswith(DELIMITER) or not reference else pattern
        self.tokens = _tokens(full)
        # INBOX is case-insensitive (RFC 9051 5.1): "inbox", "Inbox/%" also name INBOX.
        self.inbox_tokens = _tokens("INBOX" + full[5:]) if full[:5].upper() == "INBOX" and full[:5] != "INBOX" else None

    def match(self, name: str) -> bool:
        if _glob(self.tokens, name):
            return True
        # Only INBOX itself (and what lies below it) is case-insensitive: "inbox*" names
        # INBOX and INBOX/x, not a folder called "INBOXold".
        return (
            self.inbox_tokens is not None
            and (name == "INBOX" or name.startswith("INBOX" + DELIMITER))
            and _glob(self.inbox_tokens, name)
        )


def _tokens(full: str) -> list[str]:
    out: list[str] = []
    for c in full:
        if c in "*%" and out and out[-1] in ("*", "%"):
            if c == "*":
                out[-1] = "*"  # "%*", "*%", "**": "*"; "%%": "%"
            continue
        out.append(c)
    return out


def _glob(tokens: list[str], name: str) -> bool:
    # Bit p of `cur` set: the tokens so far can match name[:p].
    n = len(name)
    everything = (1 << (n + 1)) - 1
    at: dict[str, int] = {}
    for j, ch in enumerate(name):
        at[ch] = at.get(ch, 0) | (1 << (j + 1))
    not_delim = everything & ~at.get(DELIMITER, 0) & ~1
    cur = 1
    for t in tokens:
        if t == "*":  # from the shortest prefix matched so far, any longer one
            cur = everything & ~((cur & -cur) - 1)
        elif t == "%":  # extend through characters other than the delimiter, by doubling
            step, run = 1, not_delim
            while run and step <= n:
                cur |= (cur << step) & run
                run &= run << step
                step <<= 1
        else:
            cur = (cur << 1) & at.get(t, 0)
        if not cur:
            return False
    return bool(cur >> n & 1)


async def status(session: Session, cmd: Status) -> list[Response]:
    if session.imap4rev2 and "RECENT" in cmd.items:
        return [bad(cmd.tag, "STATUS RECENT does not exist in IMAP4rev2 (RFC 9051 6.3.11)")]
    info = await session.box.folder(cmd.mailbox)
    if info is None:
        return [no(cmd.tag, f"No folder {cmd.mailbox}", "NONEXISTENT")]
    if "r" not in session.box.rights_of(info):  # RFC 4314 4: STATUS needs "r"
        return [no(cmd.tag, f'No right to read {cmd.mailbox} (RFC 4314 "r")', "NOPERM")]
    items = await status_values(session, info, cmd.items)
    # RFC 7162 3.1: STATUS (HIGHESTMODSEQ) is a CONDSTORE enabling command.
    enabled = session.enable_condstore() if "HIGHESTMODSEQ" in cmd.items else []
    wire = outgoing(info.name, session.utf8_names)
    return [*enabled, Data(Atom("STATUS"), wire, items), ok(cmd.tag, "STATUS completed")]


async def status_values(session: Session, info: FolderInfo, wanted: Iterable[str]) -> list[Value]:
    """The `status-att-list` of STATUS (RFC 9051 6.3.11), also sent by LIST RETURN (STATUS)
    (RFC 5819): item names and values, in the order asked."""
    wanted = tuple(wanted)
    metas: list[MessageMeta] = []
    if {"SIZE", "DELETED", "DELETED-STORAGE"} & set(wanted):
        metas = await session.box.messages(info)
    values: dict[str, Callable[[], int]] = {
        "MESSAGES": lambda: info.exists,
        "RECENT": lambda: info.recent,
        "UIDNEXT": lambda: info.uidnext,
        "UIDVALIDITY": lambda: info.uidvalidity,
        "UNSEEN": lambda: info.unseen,
        "HIGHESTMODSEQ": lambda: info.highestmodseq,
        "SIZE": lambda: sum(m.size for m in metas),
        "DELETED": lambda: sum(1 for m in metas if "\\Deleted" in m.flags),
        # RFC 9208 4.4: what EXPUNGE would free, in the STORAGE resource's units (1024 octets).
        "DELETED-STORAGE": lambda: kib(sum(m.size for m in metas if "\\Deleted" in m.flags)),
        "APPENDLIMIT": lambda: session.append_limit,
    }
    items: list[Value] = []
    for item in wanted:
        items += [Atom(item), values[item]()]
    return items
