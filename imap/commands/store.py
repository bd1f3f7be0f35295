"""STORE (RFC 9051 6.4.6), EXPUNGE and UID EXPUNGE (RFC 4315), COPY/MOVE (RFC 6851) with
COPYUID (RFC 4315)."""
from __future__ import annotations

from imap.protocol.commands import Command, SequenceSet
from imap.protocol.response import Atom, Data, Response, bad, no, ok
from imap.view import flag_list

_STORABLE_SYSTEM = {"\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"}


def _check_flags(flags: list[str]) -> str | None:
    for f in flags:
        if f.startswith("\\") and f not in _STORABLE_SYSTEM and f != "\\Recent":
            return f"{f} is not a flag that can be stored"
    return None


async def store(session, cmd: Command) -> list[Response]:
    view = session.view
    if view.readonly:
        return [no(cmd.tag, "Folder is read-only (EXAMINE)", "READ-ONLY")]
    if not cmd.uid and view.seq_out_of_range(cmd["set"]):
        return [bad(cmd.tag, "Invalid message sequence number")]
    why = _check_flags(cmd["flags"])
    if why:
        return [bad(cmd.tag, why)]
    flags = {f for f in cmd["flags"] if f != "\\Recent"}  # \Recent is the server's to set
    targets = view.resolve(cmd["set"], cmd.uid)
    if not targets:
        return [ok(cmd.tag, f"{cmd.full_name} completed")]
    seq_of = {u: s for s, u in targets}
    changed = await session.core.store.set_flags(view.id, list(seq_of), flags, cmd["mode"])
    view.note_flags(changed)
    out: list[Response] = []
    if not cmd["silent"]:
        for m in changed:
            items: list = [Atom("FLAGS"), flag_list(m.flags)]
            if cmd.uid:
                items = [Atom("UID"), m.uid] + items
            out.append(Data(seq_of[m.uid], Atom("FETCH"), items))
    out.append(ok(cmd.tag, f"{cmd.full_name} completed"))
    return out


async def expunge(session, cmd: Command) -> list[Response]:
    view = session.view
    if view.readonly:
        return [no(cmd.tag, "Folder is read-only (EXAMINE)", "READ-ONLY")]
    uids = None
    if cmd.uid:
        uids = [u for _, u in view.resolve(cmd["set"], True)]
        if not uids:
            return [ok(cmd.tag, "UID EXPUNGE completed")]
    gone = await session.core.store.expunge(view.id, uids)
    return view.note_expunged(gone) + [ok(cmd.tag, f"{cmd.full_name} completed")]


async def copy(session, cmd: Command) -> list[Response]:
    view = session.view
    move = cmd.name == "MOVE"
    if move and view.readonly:
        return [no(cmd.tag, "Folder is read-only (EXAMINE)", "READ-ONLY")]
    if not cmd.uid and view.seq_out_of_range(cmd["set"]):
        return [bad(cmd.tag, "Invalid message sequence number")]
    store = session.core.store
    dest = await store.get_folder(session.mailbox, cmd["mailbox"])
    if dest is None:
        return [no(cmd.tag, f"No folder {cmd['mailbox']}", "TRYCREATE")]
    uids = [u for _, u in view.resolve(cmd["set"], cmd.uid)]
    if not uids:
        return [ok(cmd.tag, f"{cmd.full_name} completed")]
    pairs = await store.copy(view.id, uids, dest.id)
    code = None
    if pairs:
        code = (
            f"COPYUID {dest.uidvalidity} {SequenceSet.compact(p[0] for p in pairs)} "
            f"{SequenceSet.compact(p[1] for p in pairs)}"
        )
    if not move:
        return [ok(cmd.tag, f"{cmd.full_name} completed", code)]
    # RFC 6851 3.3: COPYUID goes in an untagged OK before the EXPUNGEs.
    moved = [p[0] for p in pairs]
    out: list[Response] = [ok(None, "Moved", code)] if code else []
    if moved:
        await store.set_flags(view.id, moved, {"\\Deleted"}, "add")
        gone = await store.expunge(view.id, moved)
        out += view.note_expunged(gone)
    out.append(ok(cmd.tag, f"{cmd.full_name} completed"))
    return out
