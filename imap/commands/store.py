"""STORE (RFC 9051 6.4.6), EXPUNGE and UID EXPUNGE (RFC 4315), COPY/MOVE (RFC 6851) with
COPYUID (RFC 4315)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imap.flags import check_flags
from imap.protocol.commands import Copy, Expunge, SequenceSet, Store
from imap.protocol.response import Atom, Data, Response, Value, bad, no, ok
from imap.view import flag_list

if TYPE_CHECKING:
    from imap.session import Session


async def store(session: Session, cmd: Store) -> list[Response]:
    view = session.folder
    if view.readonly:
        return [no(cmd.tag, "Folder is read-only (EXAMINE)", "READ-ONLY")]
    if not cmd.uid and view.seq_out_of_range(cmd.set):
        return [bad(cmd.tag, "Invalid message sequence number")]
    flags, why = check_flags(cmd.flags)  # \Recent is the server's to set: dropped
    if why:
        return [bad(cmd.tag, why)]
    targets = view.resolve(cmd.set, cmd.uid)
    if not targets:
        return [ok(cmd.tag, f"{cmd.full_name} completed")]
    seq_of = {u: s for s, u in targets}
    changed = await session.box.set_flags(view.info, list(seq_of), set(flags), cmd.mode)
    view.note_flags(changed)
    # A new keyword: FLAGS and PERMANENTFLAGS before the FETCH that shows it (RFC 3501 7.2.6);
    # the other sessions on the folder get them at their next sync.
    out: list[Response] = view.note_keywords(m.flags for m in changed)
    if not cmd.silent:
        for m in changed:
            items: list[Value] = [Atom("FLAGS"), flag_list(view.shown(m).flags)]
            if cmd.uid:
                items = [Atom("UID"), m.uid, *items]
            out.append(Data(seq_of[m.uid], Atom("FETCH"), items))
    out.append(ok(cmd.tag, f"{cmd.full_name} completed"))
    return out


async def expunge(session: Session, cmd: Expunge) -> list[Response]:
    view = session.folder
    if view.readonly:
        return [no(cmd.tag, "Folder is read-only (EXAMINE)", "READ-ONLY")]
    uids = None
    if cmd.set is not None:  # UID EXPUNGE (RFC 4315 2.1)
        uids = [u for _, u in view.resolve(cmd.set, True)]
        if not uids:
            return [ok(cmd.tag, "UID EXPUNGE completed")]
    gone = await session.box.expunge(view.info, uids)
    return view.note_expunged(gone) + [ok(cmd.tag, f"{cmd.full_name} completed")]


async def copy(session: Session, cmd: Copy) -> list[Response]:
    view = session.folder
    move = cmd.move
    if move and view.readonly:
        return [no(cmd.tag, "Folder is read-only (EXAMINE)", "READ-ONLY")]
    if not cmd.uid and view.seq_out_of_range(cmd.set):
        return [bad(cmd.tag, "Invalid message sequence number")]
    box = session.box
    dest = await box.folder(cmd.mailbox)
    if dest is None:
        return [no(cmd.tag, f"No folder {cmd.mailbox}", "TRYCREATE")]
    uids = [u for _, u in view.resolve(cmd.set, cmd.uid)]
    if not uids:
        return [ok(cmd.tag, f"{cmd.full_name} completed")]
    # MOVE is one store transaction (RFC 6851 3.3: never in both folders, never in neither).
    pairs = await (box.move if move else box.copy)(view.info, uids, dest)
    code = None
    if pairs:
        code = (
            f"COPYUID {dest.uidvalidity} {SequenceSet.compact(p[0] for p in pairs)} "
            f"{SequenceSet.compact(p[1] for p in pairs)}"
        )
    if not move:
        return [ok(cmd.tag, f"{cmd.full_name} completed", code)]
    # RFC 6851 3.3/4.3: COPYUID in an untagged OK first, then an EXPUNGE per moved message
    # (highest sequence number first, so every number sent stays valid).
    out: list[Response] = [ok(None, "Moved", code)] if code else []
    out += view.note_expunged([src for src, _ in pairs])
    out.append(ok(cmd.tag, f"{cmd.full_name} completed"))
    return out
