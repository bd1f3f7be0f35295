"""Fuzz target: the line parser of the national directory's extraction files (`annuaire.importer`).

The input is a whole file (header line, then rows; `|`-separated, UTF-8 or Latin-1, LF or
CRLF). It goes through what `_import_source` runs on every line before the database: the
bounded line reader (`_lines`), the layout found from the header (`_layout`), then per row
`_Parser.fields`, `raw`, `key`, `row` and, for duplicates, `merge`. Only the SQL is left out.
The same text with the first line replaced by the real header of each table is fuzzed too,
so rows get past the layout check. Also `annuaire.ids.fold`, `normalize_address`,
`idnat_ps_problem`.

What must hold (the module's contract, MSSANTE.md):

- only `DirectoryFileError` escapes (an unknown layout or empty file), never for a file
  with a known header; one bad row never stops the file;
- a split row has the header's width plus the empty sentinel; its raw values are stripped;
- an accepted mailbox row has a valid, normalised address equal to its key, a name key in
  the folded alphabet `[a-z0-9 ]` (single spaces, no edge spaces), a signed 64-bit hash
  that depends only on the raw values; an accepted activity row a non-empty national id
  and JSON `extra`; a rejection has a reason from the documented set;
- `merge(x, x) == x`, and merging keeps the first row's non-empty values;
- `fold` is idempotent and its output is in the folded alphabet.
"""

from __future__ import annotations

import io
import json
import re

from fuzzlib import check

from annuaire import importer
from annuaire.ids import address_ok, fold, idnat_ps_problem, normalize_address
from annuaire.national import ACTIVITY_FIELDS, MAILBOX_FIELDS

NAME = "annuaire"
MAX_LEN = 8192

_FOLDED = re.compile(r"(?:[a-z0-9]+(?: [a-z0-9]+)*)?\Z")
_REASONS = {"bad_rpps_format", "bad_rpps_check_digit", "bad_address", "missing_idnat", "value_too_long"}
_HEADERS = (
    "|".join(h for _, h in MAILBOX_FIELDS) + "|",
    "|".join(h for _, h in ACTIVITY_FIELDS) + "|",
)


def _source(data: bytes) -> importer._Source:
    return importer._Source("fuzz.txt", len(data), lambda: io.BytesIO(data))


def _check_fold(text: str) -> str:
    folded = fold(text)
    check(_FOLDED.match(folded) is not None, f"fold({text[:40]!r}) = {folded[:40]!r} is outside [a-z0-9 ]")
    check(fold(folded) == folded, f"fold is not idempotent on {text[:40]!r}")
    return folded


def _parse_file(data: bytes, *, known_header: bool) -> None:
    state: dict = {"encoding": "utf-8"}
    report = importer.ImportReport(source="fuzz.txt")
    lines = importer._lines(_source(data), state, None)
    try:
        _, header_text = next(lines)
    except StopIteration:
        check(not data, "no header line in a non-empty file")
        return
    try:
        layout = importer._layout(header_text, report)
    except importer.DirectoryFileError:
        check(not known_header, "a real header was refused")
        return
    parser = importer._Parser(layout)
    check(layout.kind in (importer.MAILBOX, importer.ACTIVITY), f"layout kind {layout.kind!r}")
    rows: dict[str, list[str]] = {}
    for n, text in lines:
        check(n >= 2, "a row numbered before the header")
        if text is importer.LINE_TOO_LONG:
            continue
        check(len(text.encode("utf-8", "surrogatepass")) <= 4 * importer.MAX_LINE, "a line over MAX_LINE")
        check(not text.endswith(("\n", "\r")), f"a line end was left on {text[-10:]!r}")
        if not text or text.isspace():
            continue
        parts = parser.fields(text)
        if parts is None:
            check(text.count("|") + 1 > layout.width, "a row of the right width was refused")
            continue
        check(len(parts) == layout.width + 1 and parts[-1] == "", "split row without the empty sentinel")
        raw = parser.raw(parts)
        check(all(v == v.strip() for v in raw[: parser.n + 1]), "raw values are not stripped")
        key = parser.key(raw)
        h = importer._row_hash(raw)
        check(-(2**63) <= h < 2**63 and h == importer._row_hash(list(raw)), "row hash not a stable int64")
        row, reason, _detail = parser.row(raw, h)
        if row is None:
            check(reason in _REASONS, f"unknown rejection reason {reason!r}")
        else:
            check(reason == "" and row["row_hash"] == h, "accepted row with a reason or another hash")
            check(all(len(row[c]) <= n for _, c, n in parser.bounded), "accepted a value longer than its column")
            check(len(row["name_key"]) <= importer.NAME_KEY_LENGTH, "name_key longer than its column")
            check(_FOLDED.match(row["name_key"]) is not None, f"name_key {row['name_key'][:40]!r} not folded")
            check(idnat_ps_problem(row["idnat"]) is None, f"accepted idnat {row['idnat']!r}")
            if layout.kind == importer.MAILBOX:
                check(address_ok(row["address"]), f"accepted address {row['address']!r}")
                check(row["address"] == key == normalize_address(row["address"]), "address is not its key")
                check(isinstance(row["red_list"], bool) and isinstance(row["dematerialisation"], bool), "flags")
            else:
                check(row["idnat"] != "", "activity row without idnat")
                check(row["key"] == key, "activity key differs")
                if row["extra"]:
                    check(isinstance(json.loads(row["extra"]), dict), "extra is not a JSON object")
        check(parser.merge(raw, raw) == raw, "merge(x, x) != x")
        prev = rows.get(key)
        if prev is not None:
            merged = parser.merge(prev, raw)
            n1 = parser.n + 1
            check(all(m == (a or b) for m, a, b in zip(merged[:n1], prev[:n1], raw[:n1], strict=False)), "merge")
            rows[key] = merged
        elif len(rows) < 50:
            rows[key] = raw


def test_one_input(data: bytes) -> None:
    _parse_file(data, known_header=False)
    first_eol = data.find(b"\n")
    body = data[first_eol + 1 :] if first_eol >= 0 else b""
    for header in _HEADERS:
        _parse_file(header.encode("utf-8") + b"\r\n" + body, known_header=True)
    text = data.decode("utf-8", "replace")
    _check_fold(text[:300])
    idnat_ps_problem(text[:20])
    normalize_address(text[:100])
