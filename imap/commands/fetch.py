"""FETCH and UID FETCH (RFC 9051 6.4.5, 7.5.2).

Message data is the stored S/MIME message as it is: ENVELOPE and BODYSTRUCTURE come from
its clear outer headers and MIME structure; BODY[] returns the exact stored bytes, which
the client decrypts with the mailbox key.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING

from crypto.dates import as_utc
from imap import mime
from imap.protocol.commands import Fetch, FetchAtt, SequenceSet
from imap.protocol.response import Atom, Data, Literal, Literal8, Response, Stream, Value, Wire, bad, no, ok, serialise
from imap.structure import Structure, structures
from imap.view import flag_list
from mss.records import MessageMeta

if TYPE_CHECKING:
    from imap.session import Session

_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
_NEEDS_CONTENT = {"RFC822", "RFC822.HEADER", "RFC822.TEXT"}
#: Items answered from the kept structure (`imap.structure`), not from the stored bytes.
_STRUCTURE = {"ENVELOPE", "BODYSTRUCTURE", "BODY"}
_SETS_SEEN = {"RFC822", "RFC822.TEXT"}
_CHUNK = 200  # messages whose content is held in memory at once (a few MB)
_LINES = 500  # messages answered from metadata and kept structures, per `Wire`


def internaldate(dt: datetime) -> str:
    """`date-time` (RFC 9051 9): "dd-Mon-yyyy hh:mm:ss +zzzz"."""
    dt = as_utc(dt)
    off = dt.utcoffset()
    minutes = int(off.total_seconds() // 60) if off else 0
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return (
        f"{dt.day:02d}-{_MONTHS[dt.month - 1]}-{dt.year:04d} {dt.hour:02d}:{dt.minute:02d}:{dt.second:02d} "
        f"{sign}{minutes // 60:02d}{minutes % 60:02d}"
    )


def _sets_seen(att: FetchAtt) -> bool:
    # RFC 3516 4.2: BINARY sets \Seen as BODY[] does; BINARY.PEEK and BINARY.SIZE do not.
    return att.name in _SETS_SEEN or (att.name in ("BODY", "BINARY") and att.section is not None)


def _needs_content(att: FetchAtt) -> bool:
    return att.name in _NEEDS_CONTENT or att.section is not None


def _needs_structure(att: FetchAtt) -> bool:
    return att.name in _STRUCTURE and att.section is None


async def fetch(session: Session, cmd: Fetch) -> list[Response]:
    view = session.folder
    if not cmd.uid and view.seq_out_of_range(cmd.set):
        return [bad(cmd.tag, "Invalid message sequence number")]
    if cmd.vanished and not session.qresync:
        return [bad(cmd.tag, "VANISHED needs ENABLE QRESYNC (RFC 7162 3.2.6)")]
    atts: list[FetchAtt] = list(cmd.atts)
    if cmd.uid and not any(a.name == "UID" for a in atts):
        atts.insert(0, FetchAtt("UID"))  # RFC 9051 6.4.9: UID FETCH always returns UID
    out: list[Response] = []
    if cmd.changed_since is not None or any(a.name == "MODSEQ" for a in atts):
        out += session.enable_condstore()  # RFC 7162 3.1: enabling commands
    targets = view.resolve(cmd.set, cmd.uid)
    box = session.box
    metas = _by_uid(await session.read_folder(), targets)
    targets = [(s, u) for s, u in targets if u in metas]  # expunged, not yet announced
    if cmd.changed_since is not None:
        since = cmd.changed_since
        targets = [(s, u) for s, u in targets if metas[u].modseq > since]
        if cmd.vanished:
            # RFC 7162 3.2.6: the UIDs of the set expunged since, before the FETCH responses.
            expunged = await box.vanished(view.info, since)
            top = max([view.max_uid, 1, *expunged[-1:]])  # `*`: no UID above these was ever used
            gone = [u for u in expunged if view.names_uid(cmd.set, u, top)]
            if gone:
                out.append(Data(Atom("VANISHED"), [Atom("EARLIER")], Atom(SequenceSet.compact(gone))))

    # RFC 3516 4.3: a part whose encoding cannot be removed fails the whole request, so
    # that is known before anything is sent or \Seen is set.
    try:
        loaded = await _check_binary(session, atts, [u for _, u in targets])
    except mime.UnknownCte as exc:
        return [*out, no(cmd.tag, f"Cannot decode Content-Transfer-Encoding {exc}", "UNKNOWN-CTE")]

    # RFC 9051 6.4.5: BODY[...] (not PEEK), RFC822 and RFC822.TEXT set \Seen.
    flags_changed: set[int]
    # RFC 4314 4: the implicit \Seen needs "s"; without it the FETCH goes on, as a PEEK.
    if not view.readonly and "s" in box.rights_of(view.info) and any(_sets_seen(a) for a in atts):
        unseen = [u for _, u in targets if "\\Seen" not in metas[u].flags]
        if unseen:
            for m in await box.set_flags(view.info, unseen, {"\\Seen"}, "add"):
                metas[m.uid] = m
            flags_changed = set(unseen)
        else:
            flags_changed = set()
    else:
        flags_changed = set()
    if flags_changed and not any(a.name == "FLAGS" for a in atts):
        atts.append(FetchAtt("FLAGS"))  # tell the client of the implicit \Seen
    if cmd.changed_since is not None or (session.condstore and any(a.name == "FLAGS" for a in atts)):
        # RFC 7162 3.1.4.1: CHANGEDSINCE implies MODSEQ; once CONDSTORE is on, flags go
        # with their mod-sequence.
        atts = [a for a in atts if a.name != "MODSEQ"] + [FetchAtt("MODSEQ")]
    view.note_flags([metas[u] for _, u in targets])

    want_content = any(_needs_content(a) for a in atts)
    want_structure = any(_needs_structure(a) for a in atts)
    writers = _plan(atts)
    # A few hundred bytes a message, read (or derived and kept) for the whole set at once.
    kept = await structures(box, view.info, [u for _, u in targets]) if want_structure else {}
    shown = view.shown
    step = _CHUNK if want_content else _LINES

    async def chunk_lines(chunk: list[tuple[int, int]]) -> Wire | None:
        if loaded is not None:
            contents = loaded
        elif want_content:
            contents = {u: _Content(r) for u, r in (await box.content(view.info, [u for _, u in chunk])).items()}
        else:
            contents = {}
        rows = []
        for seq, uid in chunk:
            content = contents.get(uid)
            structure = kept.get(uid)
            if (want_content and content is None) or (want_structure and structure is None):
                continue  # expunged meanwhile
            rows.append((seq, shown(metas[uid]), content, structure))
        return _render(writers, rows) if rows else None

    chunks = [targets[i : i + step] for i in range(0, len(targets), step)]
    if loaded is None and len(chunks) > 1:
        # The first chunk is read now (a storage failure before anything is sent is a NO,
        # as for any command); the others while the first are written (`Stream`), so the
        # client parses the first lines while the server writes the next.
        first = await chunk_lines(chunks[0])
        out.append(Stream(first or Wire([]), _later(chunk_lines, chunks[1:])))
    else:
        for chunk in chunks:
            lines = await chunk_lines(chunk)
            if lines is not None:
                out.append(lines)
    out.append(ok(cmd.tag, f"{cmd.full_name} completed"))
    return out


def _by_uid(stored: list[MessageMeta], targets: list[tuple[int, int]]) -> dict[int, MessageMeta]:
    """The stored messages (in UID order) of `targets` by UID: looked up one by one when they
    are few (a client fetching its newest messages), else the whole list as a dict."""
    if len(targets) * 16 >= len(stored):
        return {m.uid: m for m in stored}
    out: dict[int, MessageMeta] = {}
    for _, uid in targets:
        i = bisect_left(stored, uid, key=_meta_uid)
        if i < len(stored) and stored[i].uid == uid:
            out[uid] = stored[i]
    return out


def _meta_uid(m: MessageMeta) -> int:
    return m.uid


async def _later(
    produce: Callable[[list[tuple[int, int]]], Awaitable[Wire | None]], chunks: list[list[tuple[int, int]]]
) -> AsyncIterator[Wire | None]:
    for chunk in chunks:
        yield await produce(chunk)


async def _check_binary(session: Session, atts: list[FetchAtt], uids: list[int]) -> dict[int, _Content] | None:
    """Raise `mime.UnknownCte` if a BINARY item of one of `uids` cannot be decoded. The
    messages are read for it; when they are few (one chunk) they are returned, parsed, for
    the FETCH to use, otherwise they are read again chunk by chunk (None)."""
    paths = {a.section.part for a in atts if a.binary and a.section is not None and a.section.part}
    if not paths or not uids:
        return None
    box, info = session.box, session.folder.info
    kept: dict[int, _Content] = {}
    for i in range(0, len(uids), _CHUNK):
        for uid, raw in (await box.content(info, uids[i : i + _CHUNK])).items():
            content = _Content(raw)
            for path in paths:
                mime.check_binary(content.part, path)
            kept[uid] = content
    return kept if len(uids) <= _CHUNK else None


class _Content:
    """One stored message; its MIME structure is parsed only if an item needs it (BODY[]
    and RFC822 are the stored bytes as they are)."""

    __slots__ = ("_part", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._part: mime.Part | None = None

    @property
    def part(self) -> mime.Part:
        if self._part is None:
            self._part = mime.parse(self.raw)
        return self._part


#: What one FETCH item of one message is in wire form: its bytes, or (the bytes up to and
#: including a literal's `{n}CRLF`, the literal's n bytes) for content sent as it is stored.
ItemBytes = bytes | tuple[bytes, bytes]
Writer = Callable[[MessageMeta, "_Content | None", "Structure | None"], ItemBytes]


def _plan(atts: list[FetchAtt]) -> list[Writer]:
    """One writer per FETCH item, in the order asked, each item once (RFC 9051 7.5.2: an
    item asked for twice is sent once, the first time it is named)."""
    seen: set[str] = set()
    plan: list[Writer] = []
    for att in atts:
        key = att.response_name()
        if key not in seen:
            seen.add(key)
            plan.append(_writer(att))
    return plan


def _writer(att: FetchAtt) -> Writer:
    """The function that writes `att` for one message: the same bytes as
    `serialise([Atom(name), value])`, built directly (this runs 10,000 times a FETCH)."""
    name, section = att.name, att.section
    if section is None:
        if name == "UID":
            return lambda m, c, s: b"UID %d" % m.uid
        if name == "FLAGS":
            return lambda m, c, s: b"FLAGS " + flag_list(m.flags)
        if name == "INTERNALDATE":
            return lambda m, c, s: b"INTERNALDATE " + serialise(internaldate(m.internaldate))
        if name == "RFC822.SIZE":
            return lambda m, c, s: b"RFC822.SIZE %d" % m.size
        if name == "MODSEQ":
            return lambda m, c, s: b"MODSEQ (%d)" % m.modseq  # RFC 7162 3.1.4.2
        if name in _STRUCTURE:
            label = name.encode() + b" "
            field = {"ENVELOPE": "envelope", "BODYSTRUCTURE": "bodystructure", "BODY": "body"}[name]
            generic = _generic(att)
            return lambda m, c, s: label + getattr(s, field) if s is not None else generic(m, c, s)
        if name == "RFC822":
            return lambda m, c, s: (b"RFC822 {%d}\r\n" % len(c.raw), c.raw)
    elif not att.binary and not section.part and section.text is None:
        # BODY[] and BODY.PEEK[]: the stored message as it is, no parsing.
        label = att.response_name().encode()
        spec = att.partial
        if spec is None:
            return lambda m, c, s: (b"%s {%d}\r\n" % (label, len(c.raw)), c.raw)

        def partial(m: MessageMeta, c: _Content | None, s: Structure | None) -> ItemBytes:
            data = mime.partial(c.raw, spec)
            return b"%s {%d}\r\n" % (label, len(data)), data

        return partial
    return _generic(att)


def _generic(att: FetchAtt) -> Writer:
    def write(m: MessageMeta, c: _Content | None, s: Structure | None) -> ItemBytes:
        if c is None:  # pragma: no cover - `fetch` loads the content whenever an item needs it
            return b""
        return b" ".join(serialise(v) for v in _content_item(att, c))

    return write


def _render(writers: list[Writer], rows: list[tuple[int, MessageMeta, _Content | None, Structure | None]]) -> Wire:
    """The FETCH responses of `rows` (sequence number, metadata, content, structure), as few
    pieces as can be: the small items of consecutive messages are joined, a literal's stored
    bytes stay a piece of their own."""
    pieces: list[bytes] = []
    small: list[bytes] = []
    for seq, meta, content, structure in rows:
        small.append(b"* %d FETCH (" % seq)
        sep = False
        for write in writers:
            item = write(meta, content, structure)
            if not item:
                continue  # pragma: no cover - an item the grammar does not produce
            if sep:
                small.append(b" ")
            sep = True
            if type(item) is tuple:
                small.append(item[0])
                pieces.append(b"".join(small))
                pieces.append(item[1])
                small = []
            else:
                small.append(item)
        small.append(b")\r\n")
    if small:
        pieces.append(b"".join(small))
    return Wire(pieces)


def _content_item(att: FetchAtt, content: _Content) -> list[Value]:
    """One item read from the stored message: BODY[section], ENVELOPE, BODYSTRUCTURE, ..."""
    name = att.name
    raw = content.raw
    section = att.section
    if section is not None and att.binary:
        decoded = mime.binary_bytes(content.part, section.part) if section.part else raw
        if name == "BINARY.SIZE":
            return [Atom(att.response_name()), len(decoded)]
        data = mime.partial(decoded, att.partial)
        # RFC 3516 4.3: literal8 only when the content has a NUL; otherwise a string.
        return [Atom(att.response_name()), Literal8(data) if b"\x00" in data else Literal(data)]
    if section is not None:
        if not section.part and section.text is None:
            data = raw  # BODY[]: the whole message, no parsing
        else:
            try:
                data = mime.section_bytes(content.part, section)
            except mime.SectionError:
                data = b""
        return [Atom(att.response_name()), Literal(mime.partial(data, att.partial))]
    if name == "RFC822":
        return [Atom("RFC822"), Literal(raw)]
    part = content.part
    if name == "ENVELOPE":
        return [Atom("ENVELOPE"), mime.envelope(part)]
    if name == "BODYSTRUCTURE":
        return [Atom("BODYSTRUCTURE"), mime.bodystructure(part, extended=True)]
    if name == "BODY":
        return [Atom("BODY"), mime.bodystructure(part, extended=False)]
    if name == "RFC822.HEADER":
        return [Atom("RFC822.HEADER"), Literal(part.header)]
    if name == "RFC822.TEXT":
        return [Atom("RFC822.TEXT"), Literal(part.body)]
    return []  # pragma: no cover - the grammar accepts no other item
