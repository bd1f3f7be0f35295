"""Folder commands: NAMESPACE (RFC 2342), SELECT/EXAMINE, CLOSE/UNSELECT (RFC 3691),
CREATE, DELETE, RENAME, SUBSCRIBE/UNSUBSCRIBE, LIST/LSUB (RFC 9051 6.3; RFC 6154
SPECIAL-USE; RFC 3348 CHILDREN), STATUS.

A session sees the folders of the one mailbox it is bound to, in a personal namespace
with "/" as hierarchy delimiter. (IMAP "mailbox" in the RFCs is our `Folder`.)
"""
from __future__ import annotations

import logging

from mss.store import StoreError, canonical_folder_name

from imap.flags import SYSTEM_FLAGS
from imap.protocol.commands import Command
from imap.protocol.response import Atom, Data, Response, bad, no, ok
from imap.view import FolderView, flag_list

DELIMITER = "/"
log = logging.getLogger("mss.imap")


def check_name(name: str) -> str | None:
    """Why a new folder name is refused, or None."""
    if not name or len(name) > 255:
        return "Folder name must be 1 to 255 characters"
    if any(c in name for c in "*%") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "Folder name contains a character that is not allowed"
    if name.startswith(DELIMITER) or DELIMITER * 2 in name:
        return "Folder name has an empty hierarchy level"
    return None


async def namespace(session, cmd: Command) -> list[Response]:
    return [Data(Atom("NAMESPACE"), [["", DELIMITER]], None, None), ok(cmd.tag, "NAMESPACE completed")]


async def select(session, cmd: Command) -> list[Response]:
    readonly = cmd.name == "EXAMINE"
    if session.view is not None:
        session.deselected()  # RFC 9051 6.3.2: a failed SELECT leaves no folder selected
    store = session.core.store
    info = await store.get_folder(session.mailbox, cmd["mailbox"])
    if info is None:
        return [no(cmd.tag, f"No folder {cmd['mailbox']}", "NONEXISTENT")]
    metas = await store.messages(info.id)
    view = FolderView(info, metas, readonly)
    keywords = sorted({f for m in metas for f in m.flags if not f.startswith("\\")})
    flags = flag_list(SYSTEM_FLAGS) + [Atom(k) for k in keywords]
    permanent = [] if readonly else flags + [Atom("\\*")]
    out: list[Response] = [
        Data(Atom("FLAGS"), flags),
        Data(len(metas), Atom("EXISTS")),
        Data(0, Atom("RECENT")),
        ok(None, "Flags permitted", "PERMANENTFLAGS " + _atoms(permanent)),
        ok(None, "UIDs valid", f"UIDVALIDITY {info.uidvalidity}"),
        ok(None, "Predicted next UID", f"UIDNEXT {info.uidnext}"),
    ]
    first_unseen = next((i for i, m in enumerate(metas, 1) if "\\Seen" not in m.flags), None)
    if first_unseen:
        out.append(ok(None, "First unseen", f"UNSEEN {first_unseen}"))
    session.selected(view)
    mode = "READ-ONLY" if readonly else "READ-WRITE"
    out.append(ok(cmd.tag, f"{cmd.name} completed", mode))
    return out


def _atoms(items) -> str:  # noqa: ANN001
    return "(" + " ".join(items) + ")"


async def close(session, cmd: Command) -> list[Response]:
    view = session.view
    if cmd.name == "CLOSE" and not view.readonly:
        # RFC 9051 6.4.1: CLOSE expunges silently.
        await session.core.store.expunge(view.id)
    session.deselected()
    return [ok(cmd.tag, f"{cmd.name} completed")]


async def create(session, cmd: Command) -> list[Response]:
    name = cmd["mailbox"].rstrip(DELIMITER) if cmd["mailbox"] != DELIMITER else ""
    why = check_name(name)
    if why:
        return [no(cmd.tag, why, "CANNOT")]
    store = session.core.store
    if await store.get_folder(session.mailbox, name) is not None:
        return [no(cmd.tag, f"Folder {name} already exists", "ALREADYEXISTS")]
    await store.create_folder(session.mailbox, name)
    return [ok(cmd.tag, "CREATE completed")]


async def delete(session, cmd: Command) -> list[Response]:
    name = canonical_folder_name(cmd["mailbox"])  # INBOX is case-insensitive (RFC 9051 5.1)
    if name == "INBOX":
        return [no(cmd.tag, "INBOX cannot be deleted", "CANNOT")]
    store = session.core.store
    info = await store.get_folder(session.mailbox, name)
    if info is None:
        return [no(cmd.tag, f"No folder {name}", "NONEXISTENT")]
    if session.view is not None and session.view.id == info.id:
        return [no(cmd.tag, "Cannot delete the selected folder; CLOSE it first", "INUSE")]
    await store.delete_folder(session.mailbox, info.name)
    return [ok(cmd.tag, "DELETE completed")]


async def rename(session, cmd: Command) -> list[Response]:
    """RFC 9051 6.3.6, inferior names included. The store renames one folder per
    transaction, so every target name is checked first, and a failure half-way renames
    back what was already renamed: the client gets NO and the tree as it was."""
    old = canonical_folder_name(cmd["mailbox"])
    new = canonical_folder_name(cmd["new"].rstrip(DELIMITER))
    if old == "INBOX" or new == "INBOX":
        return [no(cmd.tag, "Renaming INBOX is not supported", "CANNOT")]
    why = check_name(new)
    if why:
        return [no(cmd.tag, why, "CANNOT")]
    store = session.core.store
    folders = await store.list_folders(session.mailbox)
    names = {f.name for f in folders}
    if old not in names:
        return [no(cmd.tag, f"No folder {old}", "NONEXISTENT")]
    if new in names:
        return [no(cmd.tag, f"Folder {new} already exists", "ALREADYEXISTS")]
    prefix = old + DELIMITER
    if new.startswith(prefix):
        return [no(cmd.tag, "Cannot rename a folder into itself", "CANNOT")]
    moves = [(old, new)] + [
        (n, new + DELIMITER + n[len(prefix):]) for n in sorted(names) if n.startswith(prefix)
    ]
    for _, target in moves[1:]:
        if target in names:
            return [no(cmd.tag, f"Folder {target} already exists", "ALREADYEXISTS")]
        why = check_name(target)
        if why:
            return [no(cmd.tag, f"{target}: {why}", "CANNOT")]
    done: list[tuple[str, str]] = []
    try:
        for src, dst in moves:
            await store.rename_folder(session.mailbox, src, dst)
            done.append((src, dst))
    except StoreError as exc:
        undone = await _rename_back(session, done)
        if undone:
            return [no(cmd.tag, f"RENAME failed, nothing was renamed: {exc}", "CANNOT")]
        return [no(cmd.tag, f"RENAME failed and was only partly undone: {exc}", "SERVERBUG")]
    return [ok(cmd.tag, "RENAME completed")]


async def _rename_back(session, done: list[tuple[str, str]]) -> bool:
    ok_ = True
    for src, dst in reversed(done):
        try:
            await session.core.store.rename_folder(session.mailbox, dst, src)
        except StoreError as exc:
            ok_ = False
            log.error(
                "imap rename undo failed peer=%s mailbox=%s folder=%s error=%s", session.peer, session.mailbox, dst, exc
            )
    return ok_


async def subscribe(session, cmd: Command) -> list[Response]:
    info = await session.core.store.get_folder(session.mailbox, cmd["mailbox"])
    if info is None:
        return [no(cmd.tag, f"No folder {cmd['mailbox']}", "NONEXISTENT")]
    await session.core.store.set_subscribed(session.mailbox, info.name, cmd.name == "SUBSCRIBE")
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


async def list_(session, cmd: Command) -> list[Response]:
    reference, patterns = cmd["reference"], cmd["patterns"]
    lsub = cmd.name == "LSUB" or "SUBSCRIBED" in cmd["select"]
    kind = "LSUB" if cmd.name == "LSUB" else "LIST"
    if patterns == [""]:
        # RFC 9051 6.3.9: the hierarchy delimiter and root of the reference.
        root = reference.split(DELIMITER)[0] + DELIMITER if DELIMITER in reference else ""
        return [Data(Atom(kind), [Atom("\\Noselect")], DELIMITER, root), ok(cmd.tag, f"{kind} completed")]
    full = [reference + p for p in patterns]
    if len(patterns) > MAX_PATTERNS or any(len(p) > MAX_PATTERN for p in full):
        return [bad(cmd.tag, f"At most {MAX_PATTERNS} patterns of at most {MAX_PATTERN} characters")]
    folders = await session.core.store.list_folders(session.mailbox)
    by_name = {f.name: f for f in folders}
    # Parents that do not exist themselves appear as \Noselect (a/b without a).
    names = set(by_name)
    for n in list(names):
        parts = n.split(DELIMITER)
        for i in range(1, len(parts)):
            names.add(DELIMITER.join(parts[:i]))
    matchers = [Pattern(reference, p) for p in patterns]
    special_only = "SPECIAL-USE" in cmd["select"]
    out: list[Response] = []
    for name in sorted(names, key=lambda n: (n != "INBOX", n)):
        if not any(m.match(name) for m in matchers):
            continue
        f = by_name.get(name)
        if lsub and (f is None or not f.subscribed):
            continue
        if special_only and (f is None or not f.special_use):
            continue
        has_children = any(o.startswith(name + DELIMITER) for o in names)
        attrs = ["\\HasChildren" if has_children else "\\HasNoChildren"]
        if f is None:
            attrs.insert(0, "\\Noselect")
        elif f.special_use:
            attrs.append(f.special_use)
        if lsub and kind == "LIST":
            attrs.append("\\Subscribed")
        out.append(Data(Atom(kind), [Atom(a) for a in attrs], DELIMITER, name))
    out.append(ok(cmd.tag, f"{kind} completed"))
    return out


async def status(session, cmd: Command) -> list[Response]:
    store = session.core.store
    info = await store.get_folder(session.mailbox, cmd["mailbox"])
    if info is None:
        return [no(cmd.tag, f"No folder {cmd['mailbox']}", "NONEXISTENT")]
    metas = None
    if {"SIZE", "DELETED"} & set(cmd["items"]):
        metas = await store.messages(info.id)
    values = {
        "MESSAGES": lambda: info.exists,
        "RECENT": lambda: 0,
        "UIDNEXT": lambda: info.uidnext,
        "UIDVALIDITY": lambda: info.uidvalidity,
        "UNSEEN": lambda: info.unseen,
        "HIGHESTMODSEQ": lambda: info.highestmodseq,
        "SIZE": lambda: sum(m.size for m in metas),
        "DELETED": lambda: sum(1 for m in metas if "\\Deleted" in m.flags),
    }
    items: list = []
    for item in cmd["items"]:
        items += [Atom(item), values[item]()]
    return [Data(Atom("STATUS"), info.name, items), ok(cmd.tag, "STATUS completed")]
