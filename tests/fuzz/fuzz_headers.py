"""Fuzz target: the header-section scanner (`crypto.rfc5322`) and `mss.message.parse_message`.

What must hold for any message bytes (RFC 5322 2.1, 2.2, 2.2.3; the module's own contract):

- the scan partitions the buffer: the fields' raw bytes, concatenated, are exactly
  `buffer[:header_end]`, the separator is an empty line or nothing, the body is the rest;
  every field starts with a valid name and its colon, every later line of a field is a
  continuation (starts with SP or HTAB); when the header ends without an empty line, the
  line that starts the body is indeed neither a field nor a continuation;
- the incremental `HeaderScanner`, fed in pieces, finds what `scan` finds (and
  `max_fields` raises `TooManyFields` exactly when there are more fields);
- `unfold` gives one line of text (no CR, LF or tab, no double or edge spaces);
  `to_crlf` is idempotent and leaves no bare line end when there was no CR;
- `parse_message` raises only `Refusal`; what it accepts has no bare CR/LF, the fields of
  `scan`, an author address, and clear outer values without line ends.
"""

from __future__ import annotations

from fuzzlib import check

from crypto import rfc5322
from mss.message import parse_message
from mss.refusals import Refusal

NAME = "headers"
MAX_LEN = 8192

_FIELD_NAME = rfc5322._FIELD_NAME
_WSP = (0x20, 0x09)


def _shape(section: rfc5322.HeaderSection) -> tuple:
    return (
        tuple((f.name, f.start, f.colon, f.end) for f in section.fields),
        section.header_end,
        section.body_offset,
    )


def _check_section(data: bytes, section: rfc5322.HeaderSection) -> None:
    fields = section.fields
    check(0 <= section.header_end <= section.body_offset <= len(data), "offsets out of order")
    check(b"".join(f.raw for f in fields) == data[: section.header_end], "fields do not tile the header section")
    check(section.separator in (b"", b"\n", b"\r\n"), f"separator {section.separator!r} is not an empty line")
    check(section.header + section.body == data, "header + body is not the message")
    for f in fields:
        raw = f.raw
        m = _FIELD_NAME.match(raw)
        check(
            m is not None and m.group(1).decode("ascii") == f.name, f"field {raw[:40]!r} does not start with its name"
        )
        check(data[f.colon : f.colon + 1] == b":", "colon offset does not point at a colon")
        lines = raw.split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        for line in lines[1:]:
            check(line[:1] in (b" ", b"\t"), f"non-continuation line {line[:40]!r} inside field {f.name!r}")
        text = f.unfolded
        check(not any(ch in text for ch in "\r\n\t"), f"unfolded value of {f.name!r} has a line end or tab")
        check(text == text.strip() and "  " not in text, f"unfolded value of {f.name!r} has stray spaces")
        check(f.terminated.endswith(b"\n"), "terminated field without a line end")
    if section.separator == b"" and section.body_offset < len(data):
        start = section.body_offset
        line_end = data.find(b"\n", start)
        line = data[start : len(data) if line_end < 0 else line_end + 1]
        is_continuation = line[:1] in (b" ", b"\t") and bool(fields)
        check(not is_continuation, "the header section ended at a continuation line")
        check(_FIELD_NAME.match(line) is None, f"the header section ended at a field line {line[:40]!r}")


def _incremental(data: bytes, size: int, max_fields: int | None = None) -> rfc5322.HeaderSection:
    scanner = rfc5322.HeaderScanner(max_fields=max_fields)
    for i in range(0, len(data), size):
        scanner.feed(data[i : i + size])
    return scanner.finish()


def _check_message(raw: bytes) -> None:
    try:
        parsed = parse_message(raw, max_size=4096, max_fields=40)
    except Refusal as exc:
        check(exc.public and "\n" not in exc.public and "\r" not in exc.public, f"refusal text {exc.public!r}")
        return
    check(not rfc5322.has_bare_cr_or_lf(parsed.raw), "accepted a message with a bare CR or LF")
    check(len(raw) <= 4096, "accepted a message over max_size")
    check(len(parsed.fields) <= 40, "accepted more fields than max_fields")
    section = rfc5322.scan(raw)
    check(
        tuple((f.name, f.start, f.end) for f in parsed.fields)
        == tuple((f.name, f.start, f.end) for f in section.fields),
        "parse_message saw other fields than scan",
    )
    check(parsed.body == section.body, "parse_message saw another body than scan")
    check(parsed.from_addresses, "accepted a message without a From address")
    for value in vars(parsed.outer).values():
        if isinstance(value, str):
            check("\r" not in value and "\n" not in value, f"outer header value {value!r} has a line end")
    check(isinstance(parsed.encrypted, bool), "encrypted is not a bool")


def test_one_input(data: bytes) -> None:
    section = rfc5322.scan(data)
    _check_section(data, section)
    shape = _shape(section)
    for size in (1, 2 + len(data) % 37):
        check(_shape(_incremental(data, size)) == shape, f"incremental scan in {size}-octet pieces differs")
    n = len(section.fields)
    limit = len(data) % 7
    try:
        bounded = rfc5322.scan(data, max_fields=limit)
    except rfc5322.TooManyFields as exc:
        check(n > limit and exc.limit == limit, f"TooManyFields with {n} fields, limit {limit}")
    else:
        check(n <= limit and _shape(bounded) == shape, f"{n} fields passed max_fields={limit}")
    try:
        _incremental(data, 3, max_fields=limit)
    except rfc5322.TooManyFields:
        check(n > limit, "incremental TooManyFields below the limit")
    else:
        check(n <= limit, "incremental scan let too many fields through")

    crlf = rfc5322.to_crlf(data)
    check(rfc5322.to_crlf(crlf) == crlf, "to_crlf is not idempotent")
    if b"\r" not in data:
        check(not rfc5322.has_bare_cr_or_lf(crlf), "to_crlf left a bare line end")

    _check_message(data)
    if crlf != data:
        _check_message(crlf)
