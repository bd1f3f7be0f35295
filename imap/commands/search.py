"""SEARCH and UID SEARCH (RFC 9051 6.4.4), with ESEARCH (RFC 4731) and SEARCHRES (RFC 5182:
SAVE keeps the result as the selected folder's `$`, which later commands name).

Messages are stored encrypted, so only what is clear can be searched: flags, sizes,
dates, and the outer header fields kept beside the ciphertext (From, To, Cc, Subject,
Date, Message-ID; Subject is the placeholder unless the operator keeps it). Other header
fields are read from the stored outer header block. `BODY` never matches (the body is
ciphertext) and `TEXT` matches the outer header fields only: clients that need full-text
search do it on their side after decryption.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, date
from email.header import decode_header, make_header
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from imap import mime
from imap.protocol.commands import Search, SearchKey, SequenceSet
from imap.protocol.response import Atom, Data, Response, Serialised, Value, bad, no, ok
from mss.records import FolderInfo, MessageMeta, OuterHeaders

if TYPE_CHECKING:
    from imap.session import Session
    from mss.services import MailboxHandle

_OUTER = {"FROM": "from_", "TO": "to", "CC": "cc", "SUBJECT": "subject", "DATE": "date", "MESSAGE-ID": "message_id"}


def _walk(key: SearchKey) -> Iterator[SearchKey]:
    yield key
    if key[0] == "AND":
        for k in key[1]:
            yield from _walk(k)
    elif key[0] == "OR":
        yield from _walk(key[1])
        yield from _walk(key[2])
    elif key[0] == "NOT":
        yield from _walk(key[1])


def decoded(value: str) -> str:
    """A header value as a person reads it: raw UTF-8 (RFC 6532) and RFC 2047 words decoded,
    so that SEARCH SUBJECT "résultats" finds it whichever way it was written."""
    if any("\udc80" <= ch <= "\udcff" for ch in value):
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if "=?" in value:
        try:
            value = str(make_header(decode_header(value)))
        except (ValueError, LookupError, UnicodeError):
            pass
    return value


#: Fields holding addresses: searched with their comments removed (RFC 5322 3.2.2, CFWS may
#: sit between the tokens of an addr-spec: `<user (c)@ (c) domain>` is user@domain).
_ADDRESS_FIELDS = frozenset({"FROM", "TO", "CC", "BCC", "SENDER", "REPLY-TO"})


def without_comments(value: str) -> str:
    """`value` with its RFC 5322 comments removed (nested, with quoted-pairs), quoted strings
    kept as they are; one pass, linear in the length."""
    out: list[str] = []
    depth = 0
    quoted = False
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if ch == "\\" and (quoted or depth) and i + 1 < n:
            if not depth:
                out.append(value[i : i + 2])
            i += 2
            continue
        if quoted:
            out.append(ch)
            quoted = ch != '"'
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif not depth:
            out.append(ch)
            quoted = ch == '"'
        i += 1
    return "".join(out)


def _address_match(needle: str, value: str) -> bool:
    """SEARCH FROM/TO/CC/BCC: a substring of the field as written, or of the field without
    comments, with its folding whitespace removed when the needle has none (an address)."""
    if needle in value:
        return True
    bare = without_comments(value)
    if needle in " ".join(bare.split()):
        return True
    return not any(ch.isspace() for ch in needle) and needle in "".join(bare.split())


def _sent_date(value: str) -> date | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).date()
    except (TypeError, ValueError, IndexError):
        return None


class Candidate:
    """One message of the selected folder as SEARCH sees it: its sequence number, its
    metadata, its clear outer header fields, and the other fields of its stored outer header
    section, read on demand."""

    __slots__ = ("_load", "_part", "headers", "meta", "seq")

    def __init__(self, seq: int, meta: MessageMeta, headers: OuterHeaders | None, content_loader) -> None:
        self.seq = seq
        self.meta = meta
        self.headers = headers
        self._load = content_loader
        self._part = None

    @property
    def uid(self) -> int:
        return self.meta.uid

    def header(self, name: str) -> str:
        """Field `name` (upper-case) as one line, "" when absent; several fields of that name
        are joined by a space."""
        attr = _OUTER.get(name)
        if attr is not None and self.headers is not None:
            return getattr(self.headers, attr) or ""
        if self._part is None:
            self._part = self._load(self.meta.uid)
        if self._part is None:
            return ""
        values = self._part.field_all(name)
        return " ".join(" ".join(str(v).split()) for v in values)

    def has_header(self, name: str) -> bool:
        """Whether the message has field `name` (the outer fields kept in clear count as
        present when not empty: the store keeps "" for an absent one)."""
        if name in _OUTER and self.headers is not None:
            return bool(self.header(name))
        if self._part is None:
            self._part = self._load(self.meta.uid)
        return self._part is not None and bool(self._part.field_all(name))


def _match(key: tuple, c: Candidate, n: int, max_uid: int, saved: frozenset[int]) -> bool:
    op = key[0]
    m = c.meta
    if op == "ALL":
        return True
    if op == "NONE":
        return False
    if op == "AND":
        return all(_match(k, c, n, max_uid, saved) for k in key[1])
    if op == "OR":
        return _match(key[1], c, n, max_uid, saved) or _match(key[2], c, n, max_uid, saved)
    if op == "NOT":
        return not _match(key[1], c, n, max_uid, saved)
    if op == "FLAG":
        return (key[1] in m.flags) == key[2]
    if op in ("SEQ", "UID") and key[1].saved:
        return m.uid in saved  # `$` and `UID $` (RFC 5182 2.1): the saved result
    if op == "SEQ":
        return key[1].contains(c.seq, n)
    if op == "UID":
        return key[1].contains(m.uid, max_uid)
    if op == "LARGER":
        return m.size > key[1]
    if op == "SMALLER":
        return m.size < key[1]
    if op == "MODSEQ":
        return m.modseq >= key[1]  # RFC 7162 3.1.5: "greater than or equal to"
    if op in ("BEFORE", "ON", "SINCE"):
        d = m.internaldate.astimezone(UTC).date() if m.internaldate.tzinfo else m.internaldate.date()
        return _cmp(op, d, key[1])
    if op in ("SENTBEFORE", "SENTON", "SENTSINCE"):
        d = _sent_date(c.header("DATE"))
        return d is not None and _cmp(op[4:], d, key[1])
    if op == "HEADER":
        needle = key[2].casefold()
        if not needle:
            # RFC 3501 6.4.4: an empty string matches every message that has the field.
            return c.has_header(key[1])
        value = decoded(c.header(key[1])).casefold()
        if key[1] in _ADDRESS_FIELDS:
            return _address_match(needle, value)
        return needle in value
    if op == "TEXT":
        needle = key[1].casefold()
        return any(needle in decoded(c.header(h)).casefold() for h in _OUTER)
    if op == "BODY":
        return False  # the body is ciphertext
    raise ValueError(f"unknown search key {op}")  # pragma: no cover


def _cmp(op: str, d: date, ref: date) -> bool:
    return d < ref if op == "BEFORE" else d == ref if op == "ON" else d >= ref


#: Stored messages whose outer header section is read at a time (their ciphertext is dropped
#: once its header section is cut out).
_CONTENT_CHUNK = 200


async def _header_sections(box: MailboxHandle, info: FolderInfo, uids: Sequence[int], into: dict[int, bytes]) -> None:
    """The outer header section of each stored message in `uids`, into `into`: the fields
    not kept in columns (In-Reply-To, References, ...) are read from there."""
    for i in range(0, len(uids), _CONTENT_CHUNK):
        contents = await box.content(info, uids[i : i + _CONTENT_CHUNK])
        into.update((uid, mime.split_header(raw)[0]) for uid, raw in contents.items())


async def matching(session: Session, key: SearchKey, *, fields: Iterable[str] = ()) -> list[Candidate]:
    """The messages of the selected folder that `key` matches, in sequence order.

    SEARCH, SORT and THREAD (RFC 5256 3: their search criteria are SEARCH's) all select with
    this. `fields` names (upper-case) the header fields the caller reads from the result
    besides those the key needed: they are loaded for the matching messages only, the clear
    columns when they hold them, the stored outer header section otherwise."""
    view = session.folder
    box = session.box
    metas = {m.uid: m for m in await session.read_folder()}
    for uid in view.recent & metas.keys():
        metas[uid] = view.shown(metas[uid])  # \Recent included
    pairs = [(i, u) for i, u in enumerate(view.uids, 1) if u in metas]
    ops = list(_walk(key))
    needs_headers = any(k[0] in ("HEADER", "TEXT", "SENTBEFORE", "SENTON", "SENTSINCE") for k in ops)
    headers = await box.headers(view.info, [u for _, u in pairs]) if needs_headers else {}
    uncommon = any(k[0] == "HEADER" and k[1] not in _OUTER for k in ops)
    sections: dict[int, bytes] = {}
    if uncommon:
        await _header_sections(box, view.info, [u for _, u in pairs], sections)

    def load(uid: int) -> mime.Part | None:
        raw = sections.get(uid)
        return mime.parse(raw) if raw is not None else None

    n = len(view.uids)
    max_uid = view.uids[-1] if view.uids else 0
    found: list[Candidate]
    if key == ("ALL",):  # what most clients ask first: no test per message
        found = [Candidate(seq, metas[uid], None, load) for seq, uid in pairs]
    else:
        found = []
        for seq, uid in pairs:
            c = Candidate(seq, metas[uid], headers.get(uid), load)
            if _match(key, c, n, max_uid, view.saved):
                found.append(c)
    wanted = set(fields)
    if found and not needs_headers and wanted & _OUTER.keys():
        more = await box.headers(view.info, [c.uid for c in found])
        for c in found:
            c.headers = more.get(c.uid)
    if found and not uncommon and wanted - _OUTER.keys():
        await _header_sections(box, view.info, [c.uid for c in found], sections)
    return found


async def search(session: Session, cmd: Search) -> list[Response]:
    charset = cmd.charset
    if charset is not None and session.utf8_accept:
        # RFC 6855 3: once UTF8=ACCEPT is enabled every string is UTF-8; a charset conflicts.
        return [bad(cmd.tag, "No CHARSET after ENABLE UTF8=ACCEPT: strings are UTF-8 (RFC 6855 3)")]
    if charset not in (None, "UTF-8", "US-ASCII"):
        if cmd.save:
            session.folder.saved = frozenset()  # RFC 5182 2.1: a SAVE answered NO empties `$`
        return [no(cmd.tag, f"Unsupported charset {charset}", "BADCHARSET (UTF-8 US-ASCII)")]
    # RFC 7162 3.1.5: SEARCH MODSEQ is a CONDSTORE enabling command, and its answer ends
    # with the highest MODSEQ of the messages found.
    with_modseq = any(k[0] == "MODSEQ" for k in _walk(cmd.key))
    modseq = None
    if cmd.key == ("ALL",):
        seqs, uids = await every_message(session)
        found = uids if cmd.uid else seqs
    else:
        matched = await matching(session, cmd.key)  # `$` in the key is the result saved before
        uids = [c.uid for c in matched]
        found = uids if cmd.uid else [c.seq for c in matched]
        modseq = max(c.meta.modseq for c in matched) if with_modseq and matched else None
    if cmd.save:
        session.folder.saved = saved_result(cmd.return_ or (), uids)
    done = ok(cmd.tag, f"{cmd.full_name} completed")
    enabled = session.enable_condstore() if with_modseq else []
    returns = cmd.return_
    if returns is None and session.imap4rev2:
        returns = ("ALL",)  # RFC 9051 7.3.4: rev2 answers SEARCH with ESEARCH
    if returns is None:
        tail: list[Value] = [[Atom("MODSEQ"), modseq]] if modseq is not None else []
        numbers = [Serialised(number_list(found))] if found else []  # one value, not 10,000
        return [*enabled, Data(Atom("SEARCH"), *numbers, *tail), done]
    if not returns:
        return [*enabled, done]  # RFC 5182 2.1: SAVE alone suppresses the ESEARCH response
    return [*enabled, esearch(cmd.tag, cmd.uid, returns, found, modseq), done]


async def every_message(session: Session) -> tuple[list[int], list[int]]:
    """SEARCH ALL: the sequence numbers and UIDs of the selected folder's messages that are
    still stored (one set test each, no `Candidate`: most clients ask this first)."""
    view = session.folder
    now = [m.uid for m in await session.read_folder()]
    uids = view.uids
    if now == uids:  # nothing expunged that the client was not told of
        return list(range(1, len(uids) + 1)), now
    stored = set(now)
    pairs = [(i, u) for i, u in enumerate(uids, 1) if u in stored]
    return [i for i, _ in pairs], [u for _, u in pairs]


def number_list(numbers: list[int]) -> bytes:
    """`1 2 3 ...` in wire form; the last long list is kept (a client asking `SEARCH ALL`
    again and again, or after each new message, gets the same 10,000 numbers)."""
    global _last_list
    key = (len(numbers), numbers[0], numbers[-1]) if numbers else (0, 0, 0)
    if _last_list is not None and _last_list[0] == key and _last_list[1] == numbers:
        return _last_list[2]
    wire = " ".join(map(str, numbers)).encode()
    if len(numbers) > 1000:
        _last_list = (key, list(numbers), wire)
    return wire


_last_list: tuple[tuple[int, int, int], list[int], bytes] | None = None


def saved_result(returns: tuple[str, ...], uids: Sequence[int]) -> frozenset[int]:
    """What SAVE keeps as `$` (RFC 5182 2.4), as UIDs (`uids`: those found, in order): with
    MIN and/or MAX and neither ALL nor COUNT, only the message(s) those name; otherwise
    every message found."""
    if not uids or "ALL" in returns or "COUNT" in returns or not {"MIN", "MAX"} & set(returns):
        return frozenset(uids)
    # Sequence order is UID order, so the lowest (highest) number is the lowest (highest) UID.
    kept: set[int] = set()
    if "MIN" in returns:
        kept.add(uids[0])
    if "MAX" in returns:
        kept.add(uids[-1])
    return frozenset(kept)


def esearch(tag: str, uid: bool, returns: tuple[str, ...], found: list[int], modseq: int | None = None) -> Data:
    """RFC 4731 3.1 `* ESEARCH (TAG "t") [UID] ...`: MIN, MAX and ALL only when something
    matched (ALL as a compact sequence set), COUNT always; `MODSEQ n` last when the search
    had a MODSEQ key and found something (RFC 7162 3.1.5)."""
    items: list[Value] = [[Atom("TAG"), tag]]
    if uid:
        items.append(Atom("UID"))
    for opt in returns:
        if opt == "COUNT":
            items += [Atom("COUNT"), len(found)]
        elif found and opt == "MIN":
            items += [Atom("MIN"), min(found)]
        elif found and opt == "MAX":
            items += [Atom("MAX"), max(found)]
        elif found and opt == "ALL":
            items += [Atom("ALL"), Atom(SequenceSet.compact(found))]
    if modseq is not None:
        items += [Atom("MODSEQ"), modseq]
    return Data(Atom("ESEARCH"), *items)
