"""Import of the national directory extraction files, applied as a diff in one transaction.

Why it looks like this:

* The files are large (about 536,000 mailbox rows and 600,000 activity rows) and drift in
  layout, so rows are **streamed** and mapped **by header name**; missing columns read as
  empty, unknown ones are ignored (mailboxes) or kept in `extra` (activities).
* A re-import must cost little when little changed: every normalised row is reduced to a
  64-bit hash and compared with the stored (key, hash) pairs; only additions, changes and
  removals are written, in chunks with `executemany`, inside **one transaction** so that a
  reader sees the old directory or the new one, never half of each.
* Duplicate keys (a few hundred addresses appear twice nationally) are found in a first,
  cheap pass over the keys; their rows are merged (first non-empty value of each field wins)
  and reported with their line numbers.
* Bad rows (bad RPPS check digit, bad address, mangled field count) are counted by reason,
  with line numbers, and skipped: one bad row never stops an import.
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
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from annuaire.ids import address_ok, fold, idnat_ps_problem, normalize_address
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
MAX_REPORTED_LINES = 1000  # per report: line numbers kept for the operator, counts are exact

# Optional columns some extractions carry (never in the public file today, but a private
# extraction or a future layout may): the mailbox is then never published.
_RED_LIST_HEADERS = ("liste rouge", "listerouge", "liste rouge bal")

ProgressFn = Callable[[int], None]


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

                out.append(_Source(f"{path.name}:{info.filename}", info.file_size, opener))
        if not out:
            raise DirectoryFileError(f"{path}: the zip holds no .txt table")
        return out
    return [_Source(path.name, path.stat().st_size, lambda: open(path, "rb", buffering=1 << 20))]


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


def _truthy(v: str) -> bool:
    return v.strip().lower() in ("true", "vrai", "1", "o", "oui", "y", "yes")


class _Parser:
    """Splits a line into its *raw* values, and turns raw values into a row (or a rejection).

    The raw values are the stripped fields in canonical order (so the file's column order
    does not matter), then the red-list flag, then `header\x1evalue` for each non-empty
    unmapped column (activities), sorted by header. The row hash is computed over them, so
    an unchanged row is recognised before any validation or folding is done.
    """

    def __init__(self, layout: _Layout) -> None:
        self.l = layout
        self.kind = layout.kind
        self.cols = _MAILBOX_COLS if layout.kind == MAILBOX else _ACTIVITY_COLS
        # -1 reads the empty sentinel appended to every split line: a missing column is "".
        self.idx = [layout.index.get(f, -1) for f in self.cols]
        self.idx.append(layout.red_list_col if layout.red_list_col is not None else -1)
        self.extra = (
            sorted(((h, i) for i, h in layout.extra_cols), key=lambda t: t[0]) if layout.kind == ACTIVITY else []
        )
        self.n = len(self.cols)
        pos = {f: i for i, f in enumerate(self.cols)}
        self.addr_pos = pos.get("address", -1)
        self.key_pos = [pos[f] for f in _ACTIVITY_KEY_FIELDS] if layout.kind == ACTIVITY else []

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
        raw = [parts[i].strip() for i in self.idx]
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

    def row(self, raw: list[str], row_hash: int | None = None) -> tuple[dict | None, str, str]:
        """(row bound to the table, reason, detail): row is None when rejected."""
        r = dict(zip(self.cols, raw, strict=False))
        if not r["idnat"] and r["pp_type"] and r["pp_id"]:
            r["idnat"] = r["pp_type"] + r["pp_id"]
        problem = idnat_ps_problem(r["idnat"])
        if problem:
            return None, problem, r["idnat"]
        if self.kind == MAILBOX:
            addr = normalize_address(r["address"])
            if not address_ok(addr):
                return None, "bad_address", r["address"]
            r["address"] = addr
            r["type"] = r["type"].upper()
            r["red_list"] = _truthy(raw[self.n])
            r["dematerialisation"] = _truthy(r["dematerialisation"])
            if r["type"] == "PER" or r["last_name"]:
                r["name_key"] = fold(f"{r['last_name']} {r['first_name']}")
            else:
                r["name_key"] = fold(r["service"] or r["org_name"] or r["org_trade_name"])
        else:
            if not r["idnat"]:
                return None, "missing_idnat", ""
            extra = dict(x.split("\x1e", 1) for x in raw[self.n + 1 :])
            r["extra"] = json.dumps(extra, ensure_ascii=False, sort_keys=True) if extra else ""
            r["name_key"] = fold(f"{r['last_name']} {r['first_name']}")
            r["key"] = self.key(raw)
        r["row_hash"] = _row_hash(raw) if row_hash is None else row_hash
        return r, "", ""

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


def _bounded_lines(fh) -> Iterator[bytes]:
    """Lines of at most MAX_LINE octets; a longer one is consumed and replaced by b"\\0"."""
    while True:
        raw = fh.readline(MAX_LINE + 1)
        if not raw:
            return
        if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):
                raw = fh.readline(MAX_LINE + 1)
            yield b"\0"
            continue
        yield raw


def _raw_lines(src: _Source, progress: ProgressFn | None) -> Iterator[tuple[int, bytes]]:
    """(line number, the line's octets as read, BOM removed); line 1 is the header. An
    over-long line is given as b"\\0", for the caller to count as rejected."""
    with src.open() as fh:
        n = 0
        pending = 0
        first = True
        for raw in _bounded_lines(fh):
            n += 1
            if raw == b"\0":
                yield n, raw
                continue
            if first:
                first = False
                if raw.startswith(codecs.BOM_UTF8):
                    raw = raw[3:]
            if progress is not None:
                pending += len(raw)
                if pending >= 1 << 20:
                    progress(pending)
                    pending = 0
            yield n, raw
        if progress is not None and pending:
            progress(pending)


def _text(raw: bytes, state: dict) -> str:
    """A line read by `_raw_lines` as text without EOL/trailing pipe (LINE_TOO_LONG for b"\\0")."""
    return LINE_TOO_LONG if raw == b"\0" else _strip_line(_decode(raw, state))


def _lines(src: _Source, state: dict, progress: ProgressFn | None) -> Iterator[tuple[int, str]]:
    """(line number, text without EOL/trailing pipe); line 1 is the header. An over-long
    line is given as LINE_TOO_LONG, for the caller to count as rejected (what the import
    reads, as text; the fuzz target reads through it)."""
    for n, raw in _raw_lines(src, progress):
        yield n, _text(raw, state)


def _line_hash(raw: bytes) -> int:
    """The 64-bit digest of a line as read, its end (CR, LF) left out: what an unchanged
    row is recognised by before it is even decoded (see `_import_source`)."""
    digest = hashlib.blake2b(raw.rstrip(b"\r\n"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


# --------------------------------------------------------------------------- writing


def _table(kind: str) -> Table:
    return (NationalMailbox if kind == MAILBOX else NationalActivity).__table__  # type: ignore[return-value]


class _Writer:
    """Buffers inserts and updates and flushes them in chunks with the driver's executemany.

    Statements are compiled once for the connection's dialect and fed tuples: SQLAlchemy's
    per-row parameter processing would cost more than the database work at this size.
    """

    def __init__(self, conn: AsyncConnection, kind: str) -> None:
        self.conn = conn
        self.kind = kind
        self.t = _table(kind)
        self.pk = "address" if kind == MAILBOX else "key"
        self.ins: list[tuple] = []
        self.upd: list[tuple] = []
        cols = [c.name for c in self.t.columns]
        others = [c for c in cols if c != self.pk]
        dialect = conn.dialect
        ci = insert(self.t).compile(dialect=dialect, column_keys=cols)
        self.insert_sql, self.insert_order = str(ci), list(ci.positiontup or cols)
        cu = (
            update(self.t)
            .where(self.t.c[self.pk] == bindparam("_pk"))
            .values({c: bindparam("_v_" + c) for c in others})
            .compile(dialect=dialect)
        )
        self.update_sql = str(cu)
        self.update_order = [n[3:] if n.startswith("_v_") else self.pk for n in (cu.positiontup or [])]
        self.ins_get = operator.itemgetter(*self.insert_order)
        self.upd_get = operator.itemgetter(*self.update_order)
        # One chunk is written while the next is parsed: the driver works in its own thread
        # (aiosqlite) or on the server (asyncpg), and at most one statement is outstanding.
        self.pending: asyncio.Task | None = None

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

    async def add(self, row: dict) -> None:
        self.ins.append(self.ins_get(row))
        if len(self.ins) >= CHUNK:
            await self.flush_inserts()

    async def change(self, row: dict) -> None:
        self.upd.append(self.upd_get(row))
        if len(self.upd) >= CHUNK:
            await self.flush_updates()

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
            await self._send(self.update_sql, rows)

    async def remove(self, keys: list[str]) -> None:
        await self._wait()
        col = self.t.c[self.pk]
        for i in range(0, len(keys), 1000):
            await self.conn.execute(delete(self.t).where(col.in_(keys[i : i + 1000])))

    async def flush(self) -> None:
        await self.flush_inserts()
        await self.flush_updates()
        await self._wait()

    def cancel(self) -> None:
        if self.pending is not None:
            self.pending.cancel()


async def _stored_hashes(conn: AsyncConnection, kind: str) -> dict[str, int]:
    t = _table(kind)
    pk = t.c["address" if kind == MAILBOX else "key"]
    out: dict[str, int] = {}
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "asyncpg":
        # The driver's own cursor: no per-row Row objects for a million pairs. A statement
        # through SQLAlchemy first, so that the adapter has opened the transaction.
        await conn.exec_driver_sql("SELECT 1")
        raw = (await conn.get_raw_connection()).driver_connection
        query = f"SELECT {pk.name}, row_hash FROM {t.name}"  # noqa: S608 - names from the model
        async for rec in raw.cursor(query, prefetch=20000):  # type: ignore[union-attr]
            out[rec[0]] = rec[1]
        return out
    result = await conn.stream(select(pk, t.c.row_hash).execution_options(yield_per=20000))
    async for part in result.partitions():
        out.update(part)  # type: ignore[arg-type]
    return out


async def import_table(
    conn: AsyncConnection, path: Path | str, *, progress: ProgressFn | None = None
) -> list[ImportReport]:
    """Import one file (or each table of one zip) inside the caller's transaction."""
    path = Path(path)
    reports = []
    for src in _sources(path):
        reports.append(await _import_source(conn, src, progress))
    return reports


async def _import_source(conn: AsyncConnection, src: _Source, progress: ProgressFn | None) -> ImportReport:
    report = ImportReport(source=src.name)
    state: dict = {"encoding": "utf-8"}

    # A row stored from a line is stored with the digest of that line as read (`_line_hash`),
    # so a re-import recognises an unchanged row from its octets alone: one digest and one
    # dictionary look-up, no decoding, no splitting, no validation. Rows merged from
    # duplicate lines, and rows stored before this, carry the digest of their values
    # (`_row_hash`) and are compared by it after parsing.
    raw_lines = _raw_lines(src, None)
    try:
        _, header_raw = next(raw_lines)
    except StopIteration:
        raise DirectoryFileError(f"{src.name}: empty file") from None
    layout = _layout(_text(header_raw, state), report)
    parser = _Parser(layout)
    stored = await _stored_hashes(conn, layout.kind)
    by_hash = {h: k for k, h in stored.items()}

    # Pass 1: keys only, to find duplicates before anything is written.
    seen: dict[str, int] = {}
    dup_lines: dict[str, list[int]] = {}
    ai = layout.index.get("address") if layout.kind == MAILBOX else None
    if layout.kind == MAILBOX and ai is None:
        raise DirectoryFileError(f"{src.name}: no 'Adresse BAL' column")
    kidx = [layout.index.get(f, -1) for f in _ACTIVITY_KEY_FIELDS]
    for n, raw_line in raw_lines:
        known = by_hash.get(_line_hash(raw_line)) if by_hash else None  # a first load has none
        if known is not None:
            k = known
        elif ai is not None:
            parts = _text(raw_line, state).split("|", ai + 1)
            if len(parts) <= ai:
                continue
            k = parts[ai].strip().lower()
            if not k:
                continue
        else:
            text = _text(raw_line, state)
            parts = parser.fields(text)
            if parts is None or not text.strip():
                continue
            kv = [parts[i].strip() for i in kidx]
            k = "|".join([kv[0] or (kv[1] + kv[2])] + kv[3:])
        first = seen.setdefault(k, n)
        if first != n:
            dup_lines.setdefault(k, [first]).append(n)
    del seen

    # Pass 2: unchanged lines stop at their digest. Others are validated and written.
    writer = _Writer(conn, layout.kind)
    # First load into an empty table: build the secondary indexes once at the end (a sort)
    # instead of maintaining them row by row. Same transaction, so readers never see the
    # table without them.
    bulk = not stored
    if bulk:
        for ix in writer.t.indexes:
            await conn.run_sync(lambda c, ix=ix: ix.drop(c))
    dup_raw: dict[str, tuple[int, list[str]]] = {}

    async def apply(n: int, raw: list[str], k: str, h: int) -> None:
        old = stored.get(k)
        if old == h:
            del stored[k]
            report.unchanged += 1
            return
        if old is not None and old == _row_hash(raw):
            # Stored with the digest of its values (before line digests, or merged from
            # duplicates then): unchanged. Its digest becomes the line's, for next time.
            del stored[k]
            report.unchanged += 1
            r, _, _ = parser.row(raw, h)
            if r is not None:
                await writer.change(r)
            return
        r, reason, detail = parser.row(raw, h)
        if r is None:
            report.reject(n, reason, detail)
            return
        if old is None:
            report.added += 1
            await writer.add(r)
        else:
            del stored[k]
            report.changed += 1
            await writer.change(r)

    try:
        lines = _raw_lines(src, progress)
        next(lines)
        for n, raw_line in lines:
            h = _line_hash(raw_line)
            k = by_hash.get(h)
            if k is not None and k not in dup_lines and stored.get(k) == h:
                del stored[k]  # the very line this row was stored from
                report.rows_read += 1
                report.unchanged += 1
                continue
            text = _text(raw_line, state)
            if not text or text.isspace():
                continue
            report.rows_read += 1
            if text is LINE_TOO_LONG:
                report.reject(n, "line_too_long", f"longer than {MAX_LINE} octets")
                continue
            parts = parser.fields(text)
            if parts is None:
                report.reject(n, "field_count", f"{text.count('|') + 1} fields, header has {layout.width}")
                continue
            raw = parser.raw(parts)
            k = parser.key(raw)
            if k in dup_lines:
                r, reason, detail = parser.row(raw)
                if r is None:  # a bad copy does not spoil the good one
                    report.reject(n, reason, detail)
                    continue
                prev = dup_raw.get(k)
                dup_raw[k] = (n, raw) if prev is None else (prev[0], parser.merge(prev[1], raw))
                continue
            if layout.kind == MAILBOX and (not k or "@" not in k):
                report.reject(n, "bad_address", k)
                continue
            await apply(n, raw, k, h)
        for k, (n, raw) in dup_raw.items():
            await apply(n, raw, k, _row_hash(raw))
        report.duplicates = dup_lines
        await writer.flush()
    except BaseException:
        # Do not leave a statement running on the connection that is about to roll back.
        if writer.pending is not None:
            task = writer.pending
            writer.cancel()
            try:
                await task
            except BaseException:  # noqa: BLE001, S110 - the original error is the one to raise
                pass
        raise
    if bulk:
        for ix in sorted(writer.t.indexes, key=lambda i: i.name or ""):
            await conn.run_sync(lambda c, ix=ix: ix.create(c))
    removed = list(stored.keys())
    stored.clear()
    report.removed = len(removed)
    await writer.remove(removed)
    report.encoding = state["encoding"]
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
    return report


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
        for p in paths:
            reports.extend(await import_table(conn, p, progress=progress))
        await _analyze(conn, {r.kind for r in reports})
        return reports


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
