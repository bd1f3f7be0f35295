"""Folder commands: NAMESPACE (RFC 2342), SELECT/EXAMINE, CLOSE/UNSELECT (RFC 3691),
CREATE, DELETE, RENAME, SUBSCRIBE/UNSUBSCRIBE, LIST/LSUB (RFC 9051 6.3; RFC 6154
SPECIAL-USE; RFC 3348 CHILDREN), STATUS.

A session sees the folders of the one mailbox it is bound to, in a personal namespace
with "/" as hierarchy delimiter. (IMAP "mailbox" in the RFCs is our `Folder`.)
"""
from __future__ import annotations

import re

from mss.store import StoreError

from imap.protocol.commands import Command
from imap.protocol.response import Atom, Data, Response, no, ok
from imap.view import SYSTEM_FLAGS, FolderView, flag_list

DELIMITER = "/"


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
    name = cmd["mailbox"]
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
    old, new = cmd["mailbox"], cmd["new"].rstrip(DELIMITER)
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
    await store.rename_folder(session.mailbox, old, new)
    # RFC 9051 6.3.6: inferior hierarchical names are renamed too.
    prefix = old + DELIMITER
    for f in sorted(folders, key=lambda f: f.name):
        if f.name.startswith(prefix):
            try:
                await store.rename_folder(session.mailbox, f.name, new + DELIMITER + f.name[len(prefix):])
            except StoreError:
                pass
    return [ok(cmd.tag, "RENAME completed")]


async def subscribe(session, cmd: Command) -> list[Response]:
    info = await session.core.store.get_folder(session.mailbox, cmd["mailbox"])
    if info is None:
        return [no(cmd.tag, f"No folder {cmd['mailbox']}", "NONEXISTENT")]
    await session.core.store.set_subscribed(session.mailbox, info.name, cmd.name == "SUBSCRIBE")
    return [ok(cmd.tag, f"{cmd.name} completed")]


def pattern_regex(reference: str, pattern: str) -> re.Pattern:
    """RFC 9051 6.3.9: `*` matches anything, `%` anything but the delimiter."""
    full = reference + pattern if not pattern.startswith(DELIMITER) or not reference else pattern
    if full[:5].upper() == "INBOX":
        full = "INBOX" + full[5:]  # INBOX is case-insensitive (RFC 9051 5.1)
    rx = "".join(
        ".*" if c == "*" else f"[^{re.escape(DELIMITER)}]*" if c == "%" else re.escape(c) for c in full
    )
    return re.compile(rx, re.S)


async def list_(session, cmd: Command) -> list[Response]:
    reference, patterns = cmd["reference"], cmd["patterns"]
    lsub = cmd.name == "LSUB" or "SUBSCRIBED" in cmd["select"]
    kind = "LSUB" if cmd.name == "LSUB" else "LIST"
    if patterns == [""]:
        # RFC 9051 6.3.9: the hierarchy delimiter and root of the reference.
        root = reference.split(DELIMITER)[0] + DELIMITER if DELIMITER in reference else ""
        return [Data(Atom(kind), [Atom("\\Noselect")], DELIMITER, root), ok(cmd.tag, f"{kind} completed")]
    folders = await session.core.store.list_folders(session.mailbox)
    by_name = {f.name: f for f in folders}
    # Parents that do not exist themselves appear as \Noselect (a/b without a).
    names = set(by_name)
    for n in list(names):
        parts = n.split(DELIMITER)
        for i in range(1, len(parts)):
            names.add(DELIMITER.join(parts[:i]))
    regexes = [pattern_regex(reference, p) for p in patterns]
    special_only = "SPECIAL-USE" in cmd["select"]
    out: list[Response] = []
    for name in sorted(names, key=lambda n: (n != "INBOX", n)):
        if not any(rx.fullmatch(name) for rx in regexes):
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
