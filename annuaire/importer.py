"""Import of the national directory extraction files, applied as a diff in one transaction.

Why it looks like this:

* The files are large (about 536,000 mailbox rows and 600,000 activity rows) and drift in
  layout, so rows are **streamed** and mapped **by header name**; missing columns read as
  empty, unknown ones are ignored (mailboxes) or kept in `extra` (activities).
* A re-import must cost little when little changed: a row is stored with the 64-bit digest
  of the line it came from, and a line whose digest is a stored one is that row unchanged,
  recognised without being decoded (see `_import_source`). Only the other lines are parsed;
  only additions, changes (the changed columns) and removals are written, in chunks with
  `executemany` (`COPY` on PostgreSQL), inside **one transaction** so that a reader sees the
  old directory or the new one, never half of each. docs/annuaire.md has the whole story.
* Duplicate keys (a few hundred addresses appear twice nationally) are found in the first
  pass, before anything is written; their rows are merged (first non-empty value of each
  field wins) and reported with their line numbers.
* Bad rows (bad RPPS check digit, bad address, mangled field count, a value longer than its
  column) are counted by reason, with line numbers, and skipped: one bad row never stops an
  import.
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import io
import json
import operator
import unicodedata
import zipfile
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import String, Table, bindparam, delete, insert, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from annuaire.ids import address_ok, fold, idnat_ps_problem, normalize_address
from annuaire.load_worker import LoadWorker
from annuaire.national import (
    ACTIVITY_FIELDS,
    MAILBOX_FIELDS,
    DirectoryImport,
    NationalActivity,
    NationalMailbox,
)

MAILBOX = "mailbox"
ACTIVITY = "activity"

CHUNK = 5000
#: A first load of a table at least this large (octets) is parsed in a worker process
#: (`annuaire.load_worker`) while this one writes; a smaller one here (a process start costs
#: more than it saves).
PARALLEL_MIN = 8 << 20
#: Lines of a re-import not recognised by their digest are kept in memory (their octets) for
#: the second pass up to this many octets; beyond, the second pass reads the file again.
TODO_BUFFER = 32 << 20
#: Above this many keys to look up, one scan of every (key, digest) beats look-ups by key.
LOOKUP_SCAN = 100_000
#: Up to this many rows removed by digest in one statement (one scan: no index on row_hash).
REMOVE_BY_DIGEST = 20_000
MAX_REPORTED_LINES = 1000  # per report: line numbers kept for the operator, counts are exact

# Optional columns some extractions carry (never in the public file today, but a private
# extraction or a future layout may): the mailbox is then never published.
_RED_LIST_HEADERS = ("liste rouge", "listerouge", "liste rouge bal")

ProgressFn = Callable[[int], None]
NAME_KEY_LENGTH = 200  # national.NAME_KEY


def _norm_header(h: str) -> str:
    h = unicodedata.normalize("NFKD", h.strip().casefold().replace("’", "'"))
    h = "".join(c for c in h if not unicodedata.combining(c))
    return " ".join(h.split())


_MAILBOX_HEADERS = {_norm_header(h): f for f, h in MAILBOX_FIELDS}
_ACTIVITY_HEADERS = {_norm_header(h): f for f, h in ACTIVITY_FIELDS}
# What names one activity: who, where (the technical structure id is not enough: one id may
# cover several sites), as what. Anything else that differs is a change of that activity.
_ACTIVITY_KEY_FIELDS = (
    "idnat",
    "pp_type",
    "pp_id",
    "structure_tech_id",
    "siret",
    "finess",
    "postcode",
    "commune_code",
    "profession_code",
    "specialty_code",
    "mode_code",
)
_MAILBOX_COLS = [f for f, _ in MAILBOX_FIELDS]
_ACTIVITY_COLS = [f for f, _ in ACTIVITY_FIELDS]


class DirectoryFileError(ValueError):
    """A file that cannot be imported at all (no header, unknown layout): nothing is applied."""


ImportError_ = DirectoryFileError  # older name


@dataclass
class ImportReport:
    """What one file did to the directory."""

    source: str
    kind: str = ""
    encoding: str = "utf-8"
    rows_read: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    rejected: Counter = field(default_factory=Counter)
    rejected_lines: list[tuple[int, str, str]] = field(default_factory=list)  # (line, reason, detail)
    duplicates: dict[str, list[int]] = field(default_factory=dict)  # key -> line numbers
    missing_columns: list[str] = field(default_factory=list)
    unknown_columns: list[str] = field(default_factory=list)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def reject(self, line: int, reason: str, detail: str = "") -> None:
        self.rejected[reason] += 1
        if len(self.rejected_lines) < MAX_REPORTED_LINES:
            self.rejected_lines.append((line, reason, detail))

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "kind": self.kind,
            "encoding": self.encoding,
            "rows_read": self.rows_read,
            "added": self.added,
            "changed": self.changed,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "rejected": dict(self.rejected),
            "rejected_total": self.rejected_total,
            "rejected_lines": [{"line": n, "reason": r, "detail": d} for n, r, d in self.rejected_lines],
            "duplicates": [{"key": k, "lines": v} for k, v in self.duplicates.items()],
            "missing_columns": self.missing_columns,
            "unknown_columns": self.unknown_columns,
        }


# --------------------------------------------------------------------------- reading


@dataclass
class _Source:
    name: str
    size: int
    open: Callable[[], io.BufferedIOBase]
    #: Where it comes from (the file, and the zip member): what a parse worker process opens
    #: again on its side. None for a stream of octets (tests): parsed in this process.
    path: Path | None = None
    member: str | None = None


class _ZipMember(io.BufferedReader):
    """A member stream that also closes its archive (one pass = one open archive)."""

    def __init__(self, raw: io.RawIOBase, archive: zipfile.ZipFile) -> None:
        super().__init__(raw, 1 << 20)  # type: ignore[arg-type]
        self._archive = archive

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._archive.close()


def _sources(path: Path) -> list[_Source]:
    """The text tables in `path`: the file itself, or every .txt/.csv member of a zip."""
    if zipfile.is_zipfile(path):
        out = []
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.is_dir() or not info.filename.lower().endswith((".txt", ".csv")):
                    continue

                def opener(member: str = info.filename) -> io.BufferedIOBase:
                    zf2 = zipfile.ZipFile(path)
                    return _ZipMember(zf2.open(member), zf2)

                out.append(_Source(f"{path.name}:{info.filename}", info.file_size, opener, path, info.filename))
        if not out:
            raise DirectoryFileError(f"{path}: the zip holds no .txt table")
        return out
    return [_Source(path.name, path.stat().st_size, lambda: open(path, "rb", buffering=1 << 20), path)]


def _source(path: Path, member: str | None) -> _Source:
    """The source `_sources(path)` gives for `member` (None: the file itself), in a worker."""
    for src in _sources(path):
        if src.member == member:
            return src
    raise DirectoryFileError(f"{path}: no table {member!r}")


def _decode(raw: bytes, state: dict) -> str:
    """UTF-8 when it is, Latin-1 otherwise (older extractions), decided line by line."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        state["encoding"] = "latin-1"
        return raw.decode("latin-1")


def _strip_line(text: str) -> str:
    """The line without its end (LF or CRLF) and its trailing `|`. A CR left before that
    pipe (`...value\r|\n`, found by tests/fuzz/fuzz_annuaire.py) goes too: no field of the
    extraction ends in a CR, and it must not reach the last value."""
    if text.endswith("\n"):
        text = text[:-1]
    if text.endswith("\r"):
        text = text[:-1]
    if text.endswith("|"):
        text = text[:-1]
    return text.rstrip("\r")


@dataclass
class _Layout:
    kind: str
    header: list[str]
    index: dict[str, int]  # our field -> column index
    width: int
    extra_cols: list[tuple[int, str]]  # (index, header) of columns we do not map
    red_list_col: int | None


def _layout(header_line: str, report: ImportReport) -> _Layout:
    header = header_line.split("|")
    normed = [_norm_header(h) for h in header]
    if "adresse bal" in normed:
        kind, table = MAILBOX, _MAILBOX_HEADERS
    elif "identification nationale pp" in normed or "identifiant pp" in normed:
        kind, table = ACTIVITY, _ACTIVITY_HEADERS
    else:
        raise DirectoryFileError(
            f"{report.source}: unknown layout (no 'Adresse BAL' nor 'Identification nationale PP' column)"
        )
    index: dict[str, int] = {}
    extra: list[tuple[int, str]] = []
    red = None
    for i, h in enumerate(normed):
        f = table.get(h)
        if f is not None and f not in index:
            index[f] = i
        elif h in _RED_LIST_HEADERS:
            red = i
        elif h:
            extra.append((i, header[i].strip()))
    report.kind = kind
    report.missing_columns = [
        h
        for h_n, h in ((_norm_header(h), h) for _, h in (MAILBOX_FIELDS if kind == MAILBOX else ACTIVITY_FIELDS))
        if table[h_n] not in index
    ]
    report.unknown_columns = [h for _, h in extra] if kind == MAILBOX else []
    return _Layout(kind, header, index, len(header), extra, red)


def _row_hash(raw: Sequence[str]) -> int:
    digest = hashlib.blake2b("\x1f".join(raw).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


_TRUE = frozenset(("true", "vrai", "1", "o", "oui", "y", "yes"))


def _truthy(v: str) -> bool:
    return v in _TRUE or (bool(v) and v.strip().lower() in _TRUE)


def _length(table: Table, col: str) -> int | None:
    """The length bound of a text column (`String(n)`), None for `Text` and non-text ones."""
    t = table.c[col].type
    return getattr(t, "length", None) if isinstance(t, String) else None


class _Parser:
    """Splits a line into its *raw* values, and turns raw values into a row (or a rejection).

    The raw values are the stripped fields in canonical order (so the file's column order
    does not matter), then the red-list flag, then `header\x1evalue` for each non-empty
    unmapped column (activities), sorted by header. The row hash is computed over them, so
    an unchanged row is recognised before any validation or folding is done.

    A row is a list of values in `out_cols` order (what the writer takes, no dict per row);
    `row` gives the same as a dict.
    """

    def __init__(self, layout: _Layout) -> None:
        self.l = layout
        self.kind = layout.kind
        self.cols = _MAILBOX_COLS if layout.kind == MAILBOX else _ACTIVITY_COLS
        # -1 reads the empty sentinel appended to every split line: a missing column is "".
        self.idx = [layout.index.get(f, -1) for f in self.cols]
        self.idx.append(layout.red_list_col if layout.red_list_col is not None else -1)
        self.get = operator.itemgetter(*self.idx)  # at least two indexes: a tuple
        self.extra = (
            sorted(((h, i) for i, h in layout.extra_cols), key=lambda t: t[0]) if layout.kind == ACTIVITY else []
        )
        self.n = len(self.cols)
        pos = {f: i for i, f in enumerate(self.cols)}
        self.addr_pos = pos.get("address", -1)
        self.key_pos = [pos[f] for f in _ACTIVITY_KEY_FIELDS] if layout.kind == ACTIVITY else []
        tail = (
            ["red_list", "name_key", "row_hash"] if layout.kind == MAILBOX else ["extra", "name_key", "key", "row_hash"]
        )
        self.out_cols = self.cols + tail
        # Columns of bounded length: PostgreSQL refuses a longer value, and one such value
        # would fail the whole import. Such a row is rejected instead, on both databases.
        # (name_key is cut to its length instead: it is ours, a search key.)
        table = _table(layout.kind)
        self.bounded = [
            (i, c, n) for i, c in enumerate(self.out_cols) if c != "name_key" and (n := _length(table, c)) is not None
        ]
        self.bounded_get = operator.itemgetter(*(i for i, _, _ in self.bounded))
        self.bounded_max = [n for _, _, n in self.bounded]
        self.p_idnat, self.p_pp_type, self.p_pp_id = pos["idnat"], pos["pp_type"], pos["pp_id"]
        self.p_last, self.p_first = pos["last_name"], pos["first_name"]
        if layout.kind == MAILBOX:
            self.p_type, self.p_demat = pos["type"], pos["dematerialisation"]
            self.p_names = (pos["service"], pos["org_name"], pos["org_trade_name"])

    def fields(self, text: str) -> list[str] | None:
        parts = text.split("|")
        w = self.l.width
        if len(parts) < w:
            parts.extend([""] * (w - len(parts)))
        elif len(parts) > w:
            if any(p.strip() for p in parts[w:]):
                return None
            del parts[w:]
        parts.append("")
        return parts

    def raw(self, parts: list[str]) -> list[str]:
        raw = list(map(str.strip, self.get(parts)))
        if self.extra:
            for h, i in self.extra:
                v = parts[i]
                if v and not v.isspace():
                    raw.append(h + "\x1e" + v.strip())
        return raw

    def key(self, raw: list[str]) -> str:
        if self.kind == MAILBOX:
            return normalize_address(raw[self.addr_pos])
        kp = self.key_pos
        idnat = raw[kp[0]] or (raw[kp[1]] + raw[kp[2]])
        return "|".join([idnat] + [raw[i] for i in kp[3:]])

    def values(self, raw: list[str], row_hash: int, key: str | None = None) -> tuple[list | None, str, str]:
        """(values in `out_cols` order, reason, detail): values is None when rejected."""
        v = raw[: self.n]
        idnat = v[self.p_idnat]
        if not idnat and v[self.p_pp_type] and v[self.p_pp_id]:
            idnat = v[self.p_idnat] = v[self.p_pp_type] + v[self.p_pp_id]
        problem = idnat_ps_problem(idnat)
        if problem:
            return None, problem, idnat
        if self.kind == MAILBOX:
            a = self.addr_pos
            addr = normalize_address(v[a]) if key is None else key
            if not address_ok(addr):
                return None, "bad_address", v[a]
            v[a] = addr
            t = v[self.p_type] = v[self.p_type].upper()
            v[self.p_demat] = _truthy(v[self.p_demat])
            last = v[self.p_last]
            if t == "PER" or last:
                name_key = fold(f"{last} {v[self.p_first]}")
            else:
                s, o, tr = self.p_names
                name_key = fold(v[s] or v[o] or v[tr])
            v += (_truthy(raw[self.n]), name_key[:NAME_KEY_LENGTH], row_hash)
            return self._bounded(v)
        if not idnat:
            return None, "missing_idnat", ""
        extra = dict(x.split("\x1e", 1) for x in raw[self.n + 1 :])
        v += (
            json.dumps(extra, ensure_ascii=False, sort_keys=True) if extra else "",
            fold(f"{v[self.p_last]} {v[self.p_first]}")[:NAME_KEY_LENGTH],
            self.key(raw) if key is None else key,
            row_hash,
        )
        return self._bounded(v)

    def _bounded(self, v: list) -> tuple[list | None, str, str]:
        if any(map(operator.gt, map(len, self.bounded_get(v)), self.bounded_max)):
            for i, c, n in self.bounded:
                if len(v[i]) > n:
                    return None, "value_too_long", f"{c}: {len(v[i])} characters, at most {n}"
        return v, "", ""

    def row(self, raw: list[str], row_hash: int | None = None) -> tuple[dict | None, str, str]:
        """(row bound to the table, reason, detail): row is None when rejected."""
        v, reason, detail = self.values(raw, _row_hash(raw) if row_hash is None else row_hash)
        return (dict(zip(self.out_cols, v, strict=True)) if v is not None else None), reason, detail

    def merge(self, first: list[str], other: list[str]) -> list[str]:
        """Duplicate rows: keep the first, fill its empty fields from the later one."""
        n = self.n + 1
        out = [a or b for a, b in zip(first[:n], other[:n], strict=False)]
        return out + (first[n:] or other[n:])


#: National rows are a few hundred octets; anything far longer is not a row (a file with
#: no line ends must not be read into memory whole).
MAX_LINE = 64 * 1024
#: Stands for an over-long line in the stream of lines (no real line contains a NUL).
LINE_TOO_LONG = "\x00line too long"
#: The same in the stream of octets: compared by identity, so no line read can be taken for it.
_LONG = b"\x00line too long"
#: Octets read at a time.
BLOCK = 1 << 20


def _line_blocks(src: _Source, progress: ProgressFn | None) -> Iterator[tuple[int, list[bytes]]]:
    """(number of the first line, lines) for each block of about BLOCK octets read: the
    lines as read without their LF (a CR stays), BOM removed from line 1, a line longer than
    MAX_LINE octets given as `_LONG` (and never held whole). Split by the C code of
    bytes.split: a Python step per line would cost more than the lines' digests."""
    with src.open() as fh:
        n = 1
        carry = b""
        skipping = False  # inside an over-long line
        first = True
        while True:
            data = fh.read(BLOCK)
            if not data:
                break
            if progress is not None:
                progress(len(data))
            pieces = data.split(b"\n")
            tail = pieces.pop()
            if skipping:
                if not pieces:
                    continue
                pieces[0] = _LONG
                skipping = False
            elif carry:
                if pieces:
                    pieces[0] = carry + pieces[0]
                else:
                    tail = carry + tail
            carry = tail
            if len(carry) > MAX_LINE:
                skipping, carry = True, b""
            if not pieces:
                continue
            if max(map(len, pieces)) > MAX_LINE:
                pieces = [_LONG if len(p) > MAX_LINE else p for p in pieces]
            if first:
                first = False
                if pieces[0].startswith(codecs.BOM_UTF8):
                    pieces[0] = pieces[0][3:]
            yield n, pieces
            n += len(pieces)
        if skipping:
            yield n, [_LONG]
        elif carry:
            yield n, [carry[3:] if first and carry.startswith(codecs.BOM_UTF8) else carry]


def _raw_lines(src: _Source, progress: ProgressFn | None) -> Iterator[tuple[int, bytes]]:
    """(line number, the line's octets as read, BOM removed, LF left out); line 1 is the
    header. An over-long line is given as `_LONG`, for the caller to count as rejected."""
    for n, block in _line_blocks(src, progress):
        yield from enumerate(block, n)


def _text(raw: bytes, state: dict) -> str:
    """A line read by `_raw_lines` as text without EOL/trailing pipe (LINE_TOO_LONG for `_LONG`)."""
    return LINE_TOO_LONG if raw is _LONG else _strip_line(_decode(raw, state))


def _usual_split(raw: bytes, state: dict, width: int) -> list[str] | None:
    """The usual line, split in one step: all `width` fields then the trailing `|` (and a CR
    for CRLF), as the national files write them. Its first `width` pieces are those `_text`
    then `_Parser.fields` give, but for a CR left at the end of the last one, which every
    reader strips with the blanks. None for any other line (the caller takes the slow path):
    a narrower or wider one, an over-long one, a header of one column."""
    if raw is _LONG or width < 2:
        return None
    parts = _decode(raw, state).split("|")
    if len(parts) == width + 1 and (parts[-1] == "" or parts[-1] == "\r"):
        return parts
    return None


def _lines(src: _Source, state: dict, progress: ProgressFn | None) -> Iterator[tuple[int, str]]:
    """(line number, text without EOL/trailing pipe); line 1 is the header. An over-long
    line is given as LINE_TOO_LONG, for the caller to count as rejected (what the import
    reads, as text; the fuzz target reads through it)."""
    for n, raw in _raw_lines(src, progress):
        yield n, _text(raw, state)


def _line_hash(raw: bytes, _blake2b=hashlib.blake2b, _from_bytes=int.from_bytes) -> int:
    """The 64-bit digest of a line as read, its end (CR, LF) left out: what an unchanged
    row is recognised by before it is even decoded (see `_import_source`)."""
    return _from_bytes(_blake2b(raw.rstrip(b"\r\n"), digest_size=8).digest(), "big", signed=True)


# --------------------------------------------------------------------------- writing


def _table(kind: str) -> Table:
    return (NationalMailbox if kind == MAILBOX else NationalActivity).__table__  # type: ignore[return-value]


def _insert_statement(dialect: Dialect, t: Table) -> tuple[str, list[str]]:
    """The INSERT of every column of `t` for `dialect`, and the columns in parameter order."""
    cols = [c.name for c in t.columns]
    ci = insert(t).compile(dialect=dialect, column_keys=cols)
    return str(ci), list(ci.positiontup or cols)


class _Writer:
    """Buffers inserts and updates and flushes them in chunks with the driver's executemany.

    Statements are compiled once for the connection's dialect and fed tuples: SQLAlchemy's
    per-row parameter processing would cost more than the database work at this size.
    """

    def __init__(self, conn: AsyncConnection, kind: str, value_cols: Sequence[str]) -> None:
        self.conn = conn
        self.kind = kind
        self.t = _table(kind)
        self.pk = "address" if kind == MAILBOX else "key"
        self.ins: list[tuple] = []
        self.upd: list[list] = []
        cols = [c.name for c in self.t.columns]
        others = [c for c in cols if c != self.pk]
        dialect = conn.dialect
        self.insert_sql, self.insert_order = _insert_statement(dialect, self.t)
        # Rows come as lists in `value_cols` order (`_Parser.out_cols`): one C call reorders them.
        pos = {c: i for i, c in enumerate(value_cols)}
        self.ins_get = operator.itemgetter(*(pos[c] for c in self.insert_order))
        self.pos = pos
        self.others = others
        self.old_cols = [self.t.c[c] for c in others]  # what a changed row is compared with
        self.updates: dict[tuple[str, ...], tuple[str, operator.itemgetter]] = {}
        # One chunk is written while the next is parsed: the driver works in its own thread
        # (aiosqlite) or on the server (asyncpg), and at most one statement is outstanding.
        self.pending: asyncio.Task | None = None

    async def drain(self) -> None:
        """Until the statement in flight, if any, is done."""
        await self._wait()

    async def _wait(self) -> None:
        if self.pending is not None:
            task, self.pending = self.pending, None
            await task

    async def _send(self, sql: str, rows: list[tuple]) -> None:
        await self._wait()
        self.pending = asyncio.ensure_future(self.conn.exec_driver_sql(sql, rows))

    async def _copy(self, rows: list[tuple]) -> None:
        """PostgreSQL: COPY is several times faster than INSERT for bulk rows."""
        raw = await self.conn.get_raw_connection()
        await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
            self.t.name, records=rows, columns=self.insert_order
        )

    async def add(self, row: list) -> None:
        self.ins.append(self.ins_get(row))
        if len(self.ins) >= CHUNK:
            await self.flush_inserts()

    async def change(self, row: list) -> None:
        self.upd.append(row)
        if len(self.upd) >= CHUNK:
            await self.flush_updates()

    def _update(self, changed: tuple[str, ...]) -> tuple[str, operator.itemgetter]:
        """UPDATE of these columns only, compiled once, and what picks its parameters."""
        got = self.updates.get(changed)
        if got is None:
            cu = (
                update(self.t)
                .where(self.t.c[self.pk] == bindparam("_pk"))
                .values({c: bindparam("_v_" + c) for c in changed})
                .compile(dialect=self.conn.dialect)
            )
            order = [n[3:] if n.startswith("_v_") else self.pk for n in (cu.positiontup or [])]
            got = self.updates[changed] = (str(cu), operator.itemgetter(*(self.pos[c] for c in order)))
        return got

    async def _write_changes(self, rows: list[list]) -> None:
        """Set only the columns whose value changed, compared with the stored row: a column
        left out of the SET leaves its indexes alone, so a new service name rewrites one
        table page instead of that page and a leaf of each of the eight indexes (nine times
        the WAL and checkpoint traffic on SQLite; and PostgreSQL can update in place, HOT)."""
        pk = self.t.c[self.pk]
        p = self.pos[self.pk]
        keys = [r[p] for r in rows]
        old: dict[str, tuple] = {}
        for i in range(0, len(keys), 1000):
            res = await self.conn.execute(select(pk, *self.old_cols).where(pk.in_(keys[i : i + 1000])))
            old.update((rec[0], tuple(rec[1:])) for rec in res)
        cmp = [(j, self.pos[c]) for j, c in enumerate(self.others)]
        groups: dict[tuple[str, ...], list[list]] = {}
        for r in rows:
            o = old.get(r[p])
            changed = tuple(self.others[j] for j, i in cmp if o is None or o[j] != r[i])
            if changed:
                groups.setdefault(changed, []).append(r)
        for changed, group in groups.items():
            sql, get = self._update(changed)
            await self.conn.exec_driver_sql(sql, [get(r) for r in group])

    async def flush_inserts(self) -> None:
        if self.ins:
            rows, self.ins = self.ins, []
            if self.conn.dialect.name == "postgresql" and self.conn.dialect.driver == "asyncpg":
                await self._wait()
                self.pending = asyncio.ensure_future(self._copy(rows))
            else:
                await self._send(self.insert_sql, rows)

    async def flush_updates(self) -> None:
        if self.upd:
            rows, self.upd = self.upd, []
            await self._wait()
            self.pending = asyncio.ensure_future(self._write_changes(rows))

    async def remove(self, keys: list[str]) -> None:
        await self._wait()
        col = self.t.c[self.pk]
        for i in range(0, len(keys), 1000):
            await self.conn.execute(delete(self.t).where(col.in_(keys[i : i + 1000])))

    async def remove_digests(self, digests: set[int]) -> None:
        """Delete the rows with these digests (each names one row, see `_Stored`)."""
        await self._wait()
        if not digests:
            return
        if len(digests) <= REMOVE_BY_DIGEST:
            await self.conn.execute(delete(self.t).where(self.t.c.row_hash.in_(list(digests))))
            return
        # Many: their keys from one scan, then by primary key.
        keys = [k for k, h in (await _stored_hashes(self.conn, self.kind)).items() if h in digests]
        await self.remove(keys)

    async def flush(self) -> None:
        await self.flush_inserts()
        await self.flush_updates()
        await self._wait()

    def cancel(self) -> None:
        if self.pending is not None:
            self.pending.cancel()

    async def abandon(self) -> None:
        """On an error: do not leave a statement running on the connection that is about to
        roll back."""
        if self.pending is not None:
            task = self.pending
            self.cancel()
            try:
                await task
            except BaseException:  # noqa: BLE001, S110 - the original error is the one to raise
                pass


def _is_asyncpg(conn: AsyncConnection) -> bool:
    return conn.dialect.name == "postgresql" and conn.dialect.driver == "asyncpg"


async def _first_column(conn: AsyncConnection, sql: str) -> list:
    """Every value of a one-column query, through the driver's own cursor: a million
    SQLAlchemy rows would cost more than the query."""
    # A statement through SQLAlchemy first, so that the adapter has opened its transaction.
    await conn.exec_driver_sql("SELECT 1")
    drv = (await conn.get_raw_connection()).driver_connection
    if _is_asyncpg(conn):
        return [r[0] for r in await drv.fetch(sql)]  # type: ignore[union-attr]
    if conn.dialect.name == "sqlite" and conn.dialect.driver == "aiosqlite":
        async with drv.execute(sql) as cur:  # type: ignore[union-attr]
            return [r[0] for r in await cur.fetchall()]
    return list((await conn.exec_driver_sql(sql)).scalars())


@dataclass
class _Stored:
    """The table as a re-import compares with it: the digests that name exactly one row, and
    (key, digest) of the rows whose digest another row shares. The importer never writes
    two rows with one digest (same line, same key), but a table edited by hand, or a 64-bit
    collision, would: those rows are compared by key, the slow and sure way."""

    digests: set[int]
    shared: dict[str, int]
    rows: int


async def _stored_digests(conn: AsyncConnection, kind: str) -> _Stored:
    t = _table(kind)
    hashes = await _first_column(conn, f"SELECT row_hash FROM {t.name}")  # noqa: S608 - names from the model
    digests = set(hashes)
    shared: dict[str, int] = {}
    if len(digests) != len(hashes):
        twice = [h for h, c in Counter(hashes).items() if c > 1]
        digests.difference_update(twice)
        pk = t.c[_pk(kind)]
        for i in range(0, len(twice), 1000):
            rows = await conn.execute(select(pk, t.c.row_hash).where(t.c.row_hash.in_(twice[i : i + 1000])))
            shared.update(rows.all())
    return _Stored(digests, shared, len(hashes))


def _pk(kind: str) -> str:
    return "address" if kind == MAILBOX else "key"


async def _stored_hashes(conn: AsyncConnection, kind: str, want: Collection[str] | None = None) -> dict[str, int]:
    """(key -> digest) of the stored rows, of those whose key is in `want` when given."""
    t = _table(kind)
    pk = t.c[_pk(kind)]
    out: dict[str, int] = {}
    if want is not None and len(want) <= LOOKUP_SCAN:
        keys = list(want)
        for i in range(0, len(keys), 1000):
            rows = await conn.execute(select(pk, t.c.row_hash).where(pk.in_(keys[i : i + 1000])))
            out.update(rows.all())
        return out
    query = f"SELECT {pk.name}, row_hash FROM {t.name}"  # noqa: S608 - names from the model
    if _is_asyncpg(conn):
        # The driver's own cursor: no per-row Row objects for a million pairs.
        await conn.exec_driver_sql("SELECT 1")
        raw = (await conn.get_raw_connection()).driver_connection
        async for rec in raw.cursor(query, prefetch=20000):  # type: ignore[union-attr]
            if want is None or rec[0] in want:
                out[rec[0]] = rec[1]
        return out
    result = await conn.stream(select(pk, t.c.row_hash).execution_options(yield_per=20000))
    async for part in result.partitions():
        out.update(kv for kv in part if want is None or kv[0] in want)  # type: ignore[misc]
    return out


async def import_table(
    conn: AsyncConnection,
    path: Path | str,
    *,
    progress: ProgressFn | None = None,
    worker: LoadWorker | None = None,
) -> list[ImportReport]:
    """Import one file (or each table of one zip) inside the caller's transaction.

    `worker` parses a large first load in a process of its own (`annuaire.load_worker`); the
    caller closes it. Without one, everything runs in this process."""
    path = Path(path)
    reports = []
    for src in _sources(path):
        reports.append(await _import_source(conn, src, progress, worker))
    return reports


def _key_reader(layout: _Layout, parser: _Parser, state: dict) -> Callable[[bytes], str]:
    """The key of a line, read cheaply (no validation): what duplicates are found by."""
    if layout.kind == MAILBOX:
        ai = layout.index["address"]

        def mailbox_key(raw_line: bytes) -> str:
            # The address field alone, from the octets, when it is ASCII (as it is): what
            # decoding and stripping the whole line first would give, at a third of the cost.
            parts = raw_line.split(b"|", ai + 1)
            if len(parts) > ai and (piece := parts[ai]).isascii():
                return piece.decode("ascii").strip().lower()
            parts = _text(raw_line, state).split("|", ai + 1)
            return parts[ai].strip().lower() if len(parts) > ai else ""

        return mailbox_key
    kidx = [layout.index.get(f, -1) for f in _ACTIVITY_KEY_FIELDS]

    w = layout.width
    kfast = [w if i < 0 else i for i in kidx]  # a missing column: the empty piece after the last `|`

    def activity_key(raw_line: bytes) -> str:
        parts = _usual_split(raw_line, state, w)
        if parts is not None:
            kv = [parts[i].strip() for i in kfast]
            return "|".join([kv[0] or (kv[1] + kv[2])] + kv[3:])
        text = _text(raw_line, state)
        parts = parser.fields(text)
        if parts is None or not text.strip():
            return ""
        kv = [parts[i].strip() for i in kidx]
        return "|".join([kv[0] or (kv[1] + kv[2])] + kv[3:])

    return activity_key


def _checked_fields(
    n: int, raw_line: bytes, state: dict, parser: _Parser, layout: _Layout, report: ImportReport
) -> list[str] | None:
    """The fields of line `n`, counted as read; None for a blank line, and for a line too long
    or with the wrong number of fields (rejected in `report`). One definition for the re-import
    and the first load, so that both reject the same lines the same way."""
    text = _text(raw_line, state)
    if not text or text.isspace():
        return None
    report.rows_read += 1
    if text is LINE_TOO_LONG:
        report.reject(n, "line_too_long", f"longer than {MAX_LINE} octets")
        return None
    parts = parser.fields(text)
    if parts is None:
        report.reject(n, "field_count", f"{text.count('|') + 1} fields, header has {layout.width}")
    return parts


def _set_aside(
    n: int,
    raw: list[str],
    k: str,
    parser: _Parser,
    report: ImportReport,
    dup_lines: dict[str, list[int]],
    dup_raw: dict[str, tuple[int, list[str]]],
    mailbox: bool,
) -> bool:
    """True when line `n` is not a row of its own: a copy of a duplicated key (merged into
    `dup_raw`, or rejected alone: a bad copy does not spoil the good one), or a mailbox line
    without an address (rejected)."""
    if k in dup_lines:
        r, reason, detail = parser.values(raw, 0, k)
        if r is None:
            report.reject(n, reason, detail)
            return True
        prev = dup_raw.get(k)
        dup_raw[k] = (n, raw) if prev is None else (prev[0], parser.merge(prev[1], raw))
        return True
    if mailbox and (not k or "@" not in k):
        report.reject(n, "bad_address", k)
        return True
    return False


async def _import_source(
    conn: AsyncConnection, src: _Source, progress: ProgressFn | None, worker: LoadWorker | None = None
) -> ImportReport:
    """One table, in two passes over its lines (a first load: `_first_load`).

    Pass 1 reads every line. On a re-import, a line whose digest (`_line_hash`, over its
    octets as read) is the digest of a stored row is that row unchanged: it costs one
    blake2b and one set look-up, and is neither decoded nor split. The other lines (all of
    them on a first load) have their key read, to find duplicates before anything is
    written, and are kept for pass 2 (their octets in memory up to TODO_BUFFER, else their
    line numbers, and pass 2 reads the file again).

    Pass 2 parses and validates only those lines, compares them by key with the stored rows
    (looked up by key, or one scan when they are many) and writes additions and changes.
    Stored rows neither recognised nor named by a key are removed, by digest.

    Rows merged from duplicate lines, and rows stored before line digests, carry the digest
    of their values (`_row_hash`): never recognised in pass 1, they are compared by it in
    pass 2 (unchanged rows of the second kind then get their line's digest, for next time).
    """
    report = ImportReport(source=src.name)
    state: dict = {"encoding": "utf-8"}

    head = _raw_lines(src, None)
    try:
        _, header_raw = next(head)
    except StopIteration:
        raise DirectoryFileError(f"{src.name}: empty file") from None
    finally:
        head.close()
    layout = _layout(_text(header_raw, state), report)
    parser = _Parser(layout)
    if layout.kind == MAILBOX and layout.index.get("address") is None:
        raise DirectoryFileError(f"{src.name}: no 'Adresse BAL' column")
    stored = await _stored_digests(conn, layout.kind)
    if stored.rows == 0:
        report = await _first_load(conn, src, report, parser.out_cols, progress, worker)
        await _record(conn, report)
        return report
    if worker is not None and src.path is not None and worker.planned(src.path, src.member):
        await worker.aclose()  # planned as a first load, wrongly: no worker for the rest
    digests = stored.digests

    # Pass 1 (progress is reported here: pass 2 reads few lines).
    todo: list[tuple[int, bytes]] | None = []
    todo_lines = array("q")
    buffered = 0
    matched = 0
    seen: dict[str, int] = {}
    dup_lines: dict[str, list[int]] = {}
    key_of = _key_reader(layout, parser, state)
    blake2b, from_bytes = hashlib.blake2b, int.from_bytes  # the loop below runs a million times
    for n0, block in _line_blocks(src, progress):
        numbered = enumerate(block, n0)
        if n0 == 1:
            next(numbered)  # the header
        for n, raw_line in numbered:
            if digests:
                h = from_bytes(blake2b(raw_line.rstrip(b"\r\n"), digest_size=8).digest(), "big", signed=True)
                if h in digests:  # the very line this row was stored from (`_line_hash`)
                    digests.remove(h)
                    matched += 1
                    continue
            if todo is not None:
                todo_lines.append(n)
                todo.append((n, raw_line))
                buffered += len(raw_line)
                if buffered > TODO_BUFFER:
                    todo = None  # pass 2 reads the file again
            else:
                todo_lines.append(n)
            k = key_of(raw_line) if raw_line is not _LONG else ""
            if k:
                first = seen.setdefault(k, n)
                if first != n:
                    dup_lines.setdefault(k, [first]).append(n)

    # The stored rows the other lines name: by key.
    stored_for: dict[str, int] = dict(stored.shared)
    if seen:
        stored_for.update(await _stored_hashes(conn, layout.kind, seen))
    # A key read in pass 2 whose row was recognised in pass 1 by another line is a duplicate
    # (the line was alone in the last file): that line joins the others of its key.
    again = {h: k for k, h in stored_for.items() if k in seen and h not in digests and k not in stored.shared}
    if again:
        for n, raw_line in _raw_lines(src, None):
            k = again.pop(_line_hash(raw_line), None) if n > 1 else None
            if k is None:
                continue
            digests.add(stored_for[k])  # compared again, by key, with the merged row
            matched -= 1
            todo_lines.append(n)
            if todo is not None:
                todo.append((n, raw_line))
            dup_lines[k] = sorted({n, *dup_lines.get(k, [seen[k]])})
            if not again:
                break
        todo_lines = array("q", sorted(todo_lines))
        if todo is not None:
            todo.sort()
    del seen
    report.rows_read = report.unchanged = matched

    # Pass 2: the lines not recognised are parsed, validated, compared by key and written.
    writer = _Writer(conn, layout.kind, parser.out_cols)
    dup_raw: dict[str, tuple[int, list[str]]] = {}
    shared = stored.shared

    def consume(k: str, old: int) -> None:
        """The stored row of `k` is accounted for (unchanged or changed): not removed."""
        del stored_for[k]
        if shared.pop(k, None) is None:
            digests.discard(old)

    async def apply(n: int, raw: list[str], k: str, h: int) -> None:
        old = stored_for.get(k)
        if old is not None and (old == h or old == _row_hash(raw)):
            # Unchanged. Stored with the digest of its values (before line digests, or merged
            # from duplicates then): its digest becomes the line's, for next time.
            consume(k, old)
            report.unchanged += 1
            if old != h:
                r, _, _ = parser.values(raw, h, k)
                if r is not None:
                    await writer.change(r)
            return
        r, reason, detail = parser.values(raw, h, k)
        if r is None:
            report.reject(n, reason, detail)  # a stored row of this key is removed
            return
        if old is None:
            report.added += 1
            await writer.add(r)
        else:
            consume(k, old)
            report.changed += 1
            await writer.change(r)

    try:
        mailbox = layout.kind == MAILBOX
        for n, raw_line in _todo_lines(src, todo, todo_lines):
            parts = _checked_fields(n, raw_line, state, parser, layout, report)
            if parts is None:
                continue
            raw = parser.raw(parts)
            k = parser.key(raw)
            if _set_aside(n, raw, k, parser, report, dup_lines, dup_raw, mailbox):
                continue
            await apply(n, raw, k, _line_hash(raw_line))
        for k, (n, raw) in dup_raw.items():
            await apply(n, raw, k, _row_hash(raw))
        report.duplicates = dup_lines
        await writer.flush()
    except BaseException:
        await writer.abandon()
        raise
    # Left: rows whose line is gone (or no longer valid). Rows with a digest of their own
    # go by digest, those that share one by key.
    report.removed = len(digests) + len(shared)
    await writer.remove(list(shared))
    await writer.remove_digests(digests)
    digests.clear()
    report.encoding = state["encoding"]
    await _record(conn, report)
    return report


async def _record(conn: AsyncConnection, report: ImportReport) -> None:
    """The run's line in `directory_import`, for operators and audits."""
    await conn.execute(
        insert(DirectoryImport.__table__),
        [
            {
                "kind": report.kind,
                "source": report.source,
                "finished_at": datetime.now(UTC),
                "rows_read": report.rows_read,
                "added": report.added,
                "changed": report.changed,
                "removed": report.removed,
                "rejected": report.rejected_total,
            }
        ],
    )


async def _first_load(
    conn: AsyncConnection,
    src: _Source,
    report: ImportReport,
    value_cols: Sequence[str],
    progress: ProgressFn | None,
    worker: LoadWorker | None,
) -> ImportReport:
    """A table with no stored row: nothing to compare with, every valid line is an addition.

    The lines are parsed by `_first_load_rows`, in the worker process for a large file (this
    process only writes, on its own core), here otherwise. On SQLite the secondary indexes
    are dropped and built once at the end (a sort each) instead of being maintained row by
    row; all in the caller's transaction, so readers never see the table without them (nor
    wait: WAL readers take no lock). PostgreSQL keeps them: COPY maintains them for about
    the same wall time (bench, 27 s either way), and its DROP INDEX would block readers."""
    writer = _Writer(conn, report.kind, value_cols)
    await _begin_write(conn)
    # Only on SQLite: on PostgreSQL a DROP INDEX locks the table (ACCESS EXCLUSIVE) until the
    # commit, and every look-up (mail routing) would wait for the whole import.
    rebuild = conn.dialect.name == "sqlite"
    for ix in writer.t.indexes if rebuild else ():
        await conn.run_sync(lambda c, ix=ix: ix.drop(c))
    parallel = worker is not None and src.path is not None and worker.planned(src.path, src.member)
    if parallel:
        assert worker is not None and src.path is not None
        chunks = worker.rows(src.path, src.member)
    else:
        if worker is not None:
            await worker.aclose()  # it was parsing another file (planned wrong): none for the rest
        chunks = _here(src, report, writer.insert_order, progress)
    try:
        async for rows, read, done in chunks:
            if progress is not None and read:
                progress(read)
            if rows:
                writer.ins = rows
                await writer.flush_inserts()
                if parallel:
                    # Written before the next chunk is decoded: the two would fight for the
                    # GIL (the driver's thread gives it up and takes it back at every row).
                    # Parsed here, a chunk is parsed while the last one is written.
                    await writer.drain()
            if done is not None:
                report = done
        await writer.flush()
    except BaseException:
        await writer.abandon()
        raise
    for ix in sorted(writer.t.indexes, key=lambda i: i.name or "") if rebuild else ():
        await conn.run_sync(lambda c, ix=ix: ix.create(c))
    return report


async def _begin_write(conn: AsyncConnection) -> None:
    """Open the write transaction now, on SQLite, if no statement has yet.

    The sqlite3 module begins a transaction only before an INSERT, UPDATE or DELETE: a DROP
    INDEX before any would run, and commit, on its own, and a failed first load would leave
    the table without its indexes (and the next import failing on them). The reads before
    (the stored digests) stay outside, without the write lock (see `_import_source`)."""
    if conn.dialect.name != "sqlite":
        return  # PostgreSQL: the transaction is open, DDL included
    drv = (await conn.get_raw_connection()).driver_connection
    if not drv.in_transaction:  # type: ignore[union-attr]
        await conn.exec_driver_sql("BEGIN IMMEDIATE")


async def _here(
    src: _Source, report: ImportReport, insert_order: Sequence[str], progress: ProgressFn | None
) -> AsyncIterator[tuple[list[tuple], int, ImportReport | None]]:
    """`_first_load_rows` in this process, as the worker's chunks come (progress is told directly)."""
    for rows in _first_load_rows(src, report, insert_order, progress, CHUNK):
        yield rows, 0, None
        await asyncio.sleep(0)  # the event loop runs between chunks
    yield [], 0, report


def _first_load_rows(
    src: _Source,
    report: ImportReport,
    insert_order: Sequence[str],
    progress: ProgressFn | None,
    chunk: int = CHUNK,
) -> Iterator[list[tuple]]:
    """The rows of a first load, in chunks of `chunk` tuples in `insert_order`; once exhausted,
    `report` says what they did (rows read, added, rejected, duplicates, encoding).

    Pure parsing, no database: it runs in the worker process for a large file
    (`annuaire.load_worker`) and in the importer's otherwise, the same code either way. Pass 1
    reads every line's key, to find duplicates before a row is given; pass 2 reads the file
    again (progress is told here), parses and validates each line and gives its row; the
    rows merged from duplicate lines come last."""
    state: dict = {"encoding": "utf-8"}
    head = _raw_lines(src, None)
    try:
        _, header_raw = next(head)
    except StopIteration:
        raise DirectoryFileError(f"{src.name}: empty file") from None
    finally:
        head.close()
    layout = _layout(_text(header_raw, state), report)
    parser = _Parser(layout)
    pos = {c: i for i, c in enumerate(parser.out_cols)}
    get = operator.itemgetter(*(pos[c] for c in insert_order))

    seen: dict[str, int] = {}
    dup_lines: dict[str, list[int]] = {}
    key_of = _key_reader(layout, parser, state)
    for n0, block in _line_blocks(src, None):
        numbered = enumerate(block, n0)
        if n0 == 1:
            next(numbered)  # the header
        for n, raw_line in numbered:
            k = key_of(raw_line) if raw_line is not _LONG else ""
            if k:
                first = seen.setdefault(k, n)
                if first != n:
                    dup_lines.setdefault(k, [first]).append(n)
    del seen

    dup_raw: dict[str, tuple[int, list[str]]] = {}
    rows: list[tuple] = []
    lines = _raw_lines(src, progress)
    next(lines, None)
    mailbox = layout.kind == MAILBOX
    width = layout.width
    for n, raw_line in lines:
        parts = _usual_split(raw_line, state, width)
        if parts is not None:
            parts[-1] = ""  # what `fields` appends: the value of a missing column
            report.rows_read += 1
        else:
            parts = _checked_fields(n, raw_line, state, parser, layout, report)
            if parts is None:
                continue
        raw = parser.raw(parts)
        k = parser.key(raw)
        if _set_aside(n, raw, k, parser, report, dup_lines, dup_raw, mailbox):
            continue
        r, reason, detail = parser.values(raw, _line_hash(raw_line), k)
        if r is None:
            report.reject(n, reason, detail)
            continue
        report.added += 1
        rows.append(get(r))
        if len(rows) >= chunk:
            yield rows
            rows = []
    for k, (n, raw) in dup_raw.items():
        r, reason, detail = parser.values(raw, _row_hash(raw), k)
        if r is None:
            report.reject(n, reason, detail)
            continue
        report.added += 1
        rows.append(get(r))
    if rows:
        yield rows
    report.duplicates = dup_lines
    report.encoding = state["encoding"]


def _todo_lines(src: _Source, todo: list[tuple[int, bytes]] | None, todo_lines: array) -> Iterator[tuple[int, bytes]]:
    """The lines pass 2 parses: the lines pass 1 kept, or those it named by number (read again)."""
    if todo is not None:
        yield from todo
        return
    lines = _raw_lines(src, None)
    next(lines, None)
    wanted = iter(todo_lines)
    nxt = next(wanted, None)
    for n, raw_line in lines:
        if n == nxt:
            yield n, raw_line
            nxt = next(wanted, None)
            if nxt is None:
                return


async def import_files(
    engine: AsyncEngine,
    paths: Sequence[Path | str],
    *,
    progress: ProgressFn | None = None,
) -> list[ImportReport]:
    """Import national files in **one** transaction: all of them apply, or none does.

    A file that cannot be read at all (unknown layout) raises `DirectoryFileError` and rolls back.
    """
    async with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            # A bigger page cache for the bulk writes of this one connection (about 64 MB).
            await conn.exec_driver_sql("PRAGMA cache_size=-65536")
        reports: list[ImportReport] = []
        worker = LoadWorker()
        try:
            await _plan(conn, paths, worker)
            for p in paths:
                reports.extend(await import_table(conn, p, progress=progress, worker=worker))
        finally:
            await worker.aclose()
        await _analyze(conn, {r.kind for r in reports})
        return reports


async def _plan(conn: AsyncConnection, paths: Sequence[Path | str], worker: LoadWorker) -> None:
    """Give the worker the large first loads of this import, in order, so that it parses the
    next file while this process still writes (and indexes) the last one.

    A first load is a table empty now and not filled by an earlier file of this import. A
    file that cannot be read stops the plan there (its import reports the error). Should a
    plan be wrong all the same, the import notices (`worker.planned`) and parses the rest in
    this process: it is a matter of speed, never of what is written."""
    empty: dict[str, bool] = {}
    for p in paths:
        try:
            sources = _sources(Path(p))
        except (OSError, ValueError, zipfile.BadZipFile):
            return
        for src in sources:
            kind = _kind_of(src)
            if kind is None:
                return
            if kind not in empty:
                t = _table(kind)
                empty[kind] = (await conn.execute(select(t.c.row_hash).limit(1))).first() is None
            if empty[kind] and src.path is not None and src.size >= PARALLEL_MIN:
                try:
                    worker.plan(src.path, src.member, _insert_statement(conn.dialect, _table(kind))[1], CHUNK)
                except OSError:  # no process to be had: all of it here, as for small files
                    await worker.aclose()
                    return
            empty[kind] = False


def _kind_of(src: _Source) -> str | None:
    """MAILBOX or ACTIVITY by the header of `src`; None when it cannot be imported."""
    try:
        head = _raw_lines(src, None)
        try:
            _, raw = next(head, (0, b""))
        finally:
            head.close()
        layout = _layout(_text(raw, {"encoding": "utf-8"}), ImportReport(source=src.name))
    except (OSError, ValueError, zipfile.BadZipFile):
        return None
    if layout.kind == MAILBOX and "address" not in layout.index:
        return None
    return layout.kind


async def _analyze(conn: AsyncConnection, kinds: set[str]) -> None:
    """Refresh planner statistics: with them a search by name + profession + department
    walks the name index instead of every row of a profession (10 ms instead of 100+)."""
    tables = [_table(k).name for k in sorted(kinds)]
    if conn.dialect.name == "sqlite":
        await conn.exec_driver_sql("PRAGMA analysis_limit=1000")
    for t in tables:
        await conn.exec_driver_sql(f"ANALYZE {t}")


def total_size(paths: Sequence[Path | str]) -> int:
    """Bytes the progress callback will report for `paths` (uncompressed)."""
    return sum(s.size for p in paths for s in _sources(Path(p)))
