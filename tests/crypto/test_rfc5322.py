"""The one header scanner (crypto.rfc5322): faithful to the byte, the same however the bytes
arrive, and linear however hostile the folding."""

from __future__ import annotations

import re
import time

import pytest
from frozen import smime_v0
from hypothesis import example, given
from hypothesis import strategies as st
from message_strategies import messages, values

from crypto.rfc5322 import (
    HeaderScanner,
    HeaderSection,
    TooManyFields,
    get,
    get_all,
    has_bare_cr_or_lf,
    scan,
    to_crlf,
    unfold,
)


def _reference(raw: bytes) -> tuple[list[tuple[str, bytes]], bytes, bytes]:
    """A deliberately naive scanner (lines first, then a classification), to check the real one
    against: (name, raw field) pairs, the separator and the body."""
    lines = re.findall(rb"[^\n]*\n|[^\n]+\Z", raw)
    fields: list[tuple[str, list[bytes]]] = []
    pos = 0
    for line in lines:
        if line in (b"\r\n", b"\n"):
            return [(n, b"".join(ls)) for n, ls in fields], line, raw[pos + len(line) :]
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1][1].append(line)
        else:
            m = re.match(rb"([!-9;-~]+)[ \t]*:", line)
            if m is None:
                break
            fields.append((m.group(1).decode(), [line]))
        pos += len(line)
    return [(n, b"".join(ls)) for n, ls in fields], b"", raw[pos:]


def _shape(section: HeaderSection) -> tuple:
    return tuple((f.name, f.start, f.colon, f.end) for f in section.fields), section.header_end, section.body_offset


@given(messages())
@example(b"")
@example(b"\r\n")
@example(b" continued first\r\nFrom: a\r\n\r\nbody")
@example(b"From: a\r\nnot a field\r\nTo: b\r\n\r\n")
@example(b"From: a\r\n folded")
@example(b"Subject : obsolete space before the colon\r\n\r\n")
def test_fields_separator_and_body_give_back_the_input(raw: bytes) -> None:
    section = scan(raw)
    assert b"".join(f.raw for f in section.fields) + section.separator + section.body == raw
    assert b"".join(f.raw for f in section.fields) == raw[: section.header_end]
    assert section.header == raw[: section.body_offset]
    ref_fields, ref_sep, ref_body = _reference(raw)
    assert [(f.name, f.raw) for f in section.fields] == ref_fields
    assert (section.separator, section.body) == (ref_sep, ref_body)
    for f in section.fields:
        assert f.raw.startswith(f.name.encode()) and raw[f.colon : f.colon + 1] == b":"


@given(messages())
def test_same_split_as_the_old_splitter_on_crlf_messages(raw: bytes) -> None:
    """The rules of crypto.smime._split_message are kept: same fields, same body."""
    old_fields, old_body = smime_v0._split_message(raw)
    section = scan(raw)
    assert [(f.name, f.terminated) for f in section.fields] == [(f.name, f.raw) for f in old_fields]
    assert section.body == old_body
    assert [f.value for f in section.fields] == [f.value for f in old_fields]


@given(messages(), st.lists(st.integers(min_value=0), max_size=6))
@example(b"From: a\r\n\r\nbody", [8])  # cut between the CR and the LF of a line end
@example(b"From: a\r\n b\r\n\r\n", [9, 10, 11])
def test_the_split_does_not_depend_on_where_the_bytes_were_cut(raw: bytes, cuts: list[int]) -> None:
    """Feeding a + b (any cut points, even inside a CRLF) equals scanning a + b at once."""
    points = sorted({c % (len(raw) + 1) for c in cuts})
    scanner = HeaderScanner()
    prev = 0
    for p in points + [len(raw)]:
        scanner.feed(raw[prev:p])
        prev = p
    fed = scanner.finish()
    whole = scan(raw)
    assert _shape(fed) == _shape(whole)
    assert [f.raw for f in fed.fields] == [f.raw for f in whole.fields] and fed.body == whole.body


def test_done_as_soon_as_the_empty_line_arrives() -> None:
    scanner = HeaderScanner()
    scanner.feed(b"From: a\r\nSubject: b\r")
    assert not scanner.done
    scanner.feed(b"\n\r")
    assert not scanner.done
    scanner.feed(b"\nbody that is never examined: \x00\xff")
    assert scanner.done
    section = scanner.finish()
    assert [f.name for f in section.fields] == ["From", "Subject"] and section.body.startswith(b"body")


def _reference_unfold(value: bytes) -> str:
    # RFC 5322 §2.2.3: unfolding removes each CRLF immediately followed by WSP; then runs of
    # white space collapse (what mss stores beside the ciphertext).
    text = re.sub(r"\r\n(?=[ \t])", "", value.decode("utf-8", errors="replace"))
    return re.sub(r"\s+", " ", text, flags=re.UNICODE).strip()


@given(values, st.lists(st.tuples(st.sampled_from([" ", "\t", "   "]), values), max_size=5))
def test_unfolded_value_matches_the_rfc_unfolding(first: bytes, rest: list[tuple[str, bytes]]) -> None:
    raw = b"X-Test: " + first + b"".join(b"\r\n" + ws.encode() + v for ws, v in rest) + b"\r\n\r\n"
    (field,) = scan(raw).fields
    assert field.value == raw[len(b"X-Test: ") : -4].lstrip(b" \t")
    assert field.unfolded == _reference_unfold(field.value)
    assert "\r" not in field.unfolded and "\n" not in field.unfolded


def test_value_helpers() -> None:
    section = scan(b"Subject:\t =?utf-8?q?x?=\r\n  r\xc3\xa9sum\xc3\xa9 \xff\r\nsubject: second\r\nTo:\r\n\r\n")
    first = section.get("SUBJECT")
    assert first is not None and first.name == "Subject" and first.key == "subject"
    assert first.value == b"=?utf-8?q?x?=\r\n  r\xc3\xa9sum\xc3\xa9 \xff"
    assert first.unfolded == "=?utf-8?q?x?= résumé \ufffd"
    assert [f.unfolded for f in section.get_all("subject")] == ["=?utf-8?q?x?= résumé \ufffd", "second"]
    assert get(section.fields, "to").value == b"" and get(section.fields, "cc") is None  # type: ignore[union-attr]
    assert get_all(section.fields, "Cc") == ()
    assert unfold(b"  a \r\n\t b  ") == "a b"


def test_a_last_field_without_line_end_is_kept_exact_and_terminated_on_demand() -> None:
    section = scan(b"From: a\r\nSubject: b")
    assert section.fields[-1].raw == b"Subject: b" and section.fields[-1].terminated == b"Subject: b\r\n"
    assert section.body == b"" and section.separator == b""


def test_lf_line_ends_are_lines_too() -> None:
    """Stored messages that came with LF line ends still parse (IMAP APPEND)."""
    section = scan(b"From: a\nTo: b,\n c\n\nbody\n")
    assert [f.raw for f in section.fields] == [b"From: a\n", b"To: b,\n c\n"]
    assert section.fields[1].value == b"b,\n c" and section.body == b"body\n"


def test_the_field_bound() -> None:
    raw = b"".join(b"X-%d: v\r\n" % i for i in range(10)) + b"\r\n"
    assert len(scan(raw, max_fields=10).fields) == 10
    with pytest.raises(TooManyFields) as err:
        scan(raw, max_fields=9)
    assert err.value.limit == 9
    with pytest.raises(TooManyFields):
        HeaderScanner(max_fields=9).feed(raw)


@given(
    st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.lists(st.tuples(st.integers(min_value=0), st.sampled_from([b"\r", b"\n", b"\r\n"])), max_size=4),
)
def test_bare_cr_or_lf_detection_is_exact(text: bytes, inserts: list[tuple[int, bytes]]) -> None:
    raw = text
    for at, what in inserts:
        at %= len(raw) + 1
        raw = raw[:at] + what + raw[at:]
    assert has_bare_cr_or_lf(raw) == bool(re.search(rb"(?<!\r)\n|\r(?!\n)", raw))


def test_to_crlf() -> None:
    assert to_crlf(b"a\nb\r\nc\rd\n") == b"a\r\nb\r\nc\rd\r\n"


# -- linear time ----------------------------------------------------------------------------


def folded(lines: int) -> bytes:
    """One field folded over ``lines`` continuation lines (200,000 lines is about 2.6 MB)."""
    return b"From: <a@b.test>\r\nX-Long: start\r\n" + b"\tcontinuation\r\n" * lines + b"\r\nbody\r\n"


def best_of(runs: int, fn, *args) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best


def test_scanning_is_linear_in_the_number_of_continuation_lines() -> None:
    """10x the lines must cost about 10x, not 100x (the old splitter: ~100x). A ratio, not a
    time: the machine is shared. The absolute numbers are in bench/parse_bench.py."""
    small, large = folded(20_000), folded(200_000)
    assert len(large) > 2_500_000
    section = scan(large)
    assert len(section.fields) == 2 and section.fields[1].raw.count(b"\r\n") == 200_001
    ratio = best_of(3, scan, large) / best_of(3, scan, small)
    assert ratio < 30, ratio


def test_feeding_a_long_line_octet_by_octet_is_linear() -> None:
    def feed(n: int) -> None:
        scanner = HeaderScanner()
        for i in range(n):
            scanner.feed(b"x" if i else b"X-Long: ")
        scanner.finish()

    ratio = best_of(3, feed, 200_000) / best_of(3, feed, 20_000)
    assert ratio < 30, ratio
