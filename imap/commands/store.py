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
    # RFC 7162 3.1: STORE (UNCHANGEDSINCE) is a CONDSTORE enabling command.
    out: list[Response] = session.enable_condstore() if cmd.unchanged_since is not None else []
    targets = view.resolve(cmd.set, cmd.uid)
    if not targets:
        return [*out, ok(cmd.tag, f"{cmd.full_name} completed")]
    seq_of = {u: s for s, u in targets}
    before = {u: view.flags.get(u) for u in seq_of}
    box = session.box
    modified: list[int] = []
    if cmd.unchanged_since is None:
        changed = await box.set_flags(view.info, list(seq_of), set(flags), cmd.mode)
    else:
        changed, modified = await box.set_flags_unchanged_since(
            view.info, list(seq_of), set(flags), cmd.mode, cmd.unchanged_since
        )
    view.note_flags(changed)
    # A new keyword: FLAGS and PERMANENTFLAGS before the FETCH that shows it (RFC 3501 7.2.6);
    # the other sessions on the folder get them at their next sync.
    out += view.note_keywords(m.flags for m in changed)
    for m in changed:
        if not cmd.silent:
            items: list[Value] = [Atom("FLAGS"), flag_list(view.shown(m).flags)]
            if cmd.uid and not view.modseqs:
                items = [Atom("UID"), m.uid, *items]
            out.append(Data(seq_of[m.uid], Atom("FETCH"), view.update_items(m, items)))
        elif view.modseqs and before.get(m.uid) != m.flags:
            # RFC 7162 3.1.3: .SILENT still reports the new MODSEQ of what changed.
            out.append(Data(seq_of[m.uid], Atom("FETCH"), view.update_items(m, [])))
    code = None
    if modified:
        # RFC 7162 3.1.3: the messages that failed the UNCHANGEDSINCE test, as numbers
        # for STORE and as UIDs for UID STORE.
        code = "MODIFIED " + SequenceSet.compact(modified if cmd.uid else (seq_of[u] for u in modified))
    text = "Conditional STORE failed for some messages" if modified else f"{cmd.full_name} completed"
    out.append(ok(cmd.tag, text, code))
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
    code = None
    if session.condstore:
        # RFC 7162 3.2.7: the tagged OK carries the folder's HIGHESTMODSEQ after the
        # expunge, so a client in sync need not ask for it.
        state = await session.box.folder_state(view.info)
        code = f"HIGHESTMODSEQ {state.highestmodseq}" if state is not None else None
    return view.note_expunged(gone) + [ok(cmd.tag, f"{cmd.full_name} completed", code)]


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
