"""imap.mime reads headers with the one scanner: ENVELOPE, BODYSTRUCTURE and BODY[section] answer
as the old email.parser-based module did (tests/frozen/imap_mime_v0.py), in linear time."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from frozen import imap_mime_v0 as old
from message_strategies import messages
from test_mime import MULTI, SMIME

from imap import mime
from imap.protocol.commands import Section

SECTIONS = [
    Section(),
    Section((), "HEADER"),
    Section((), "TEXT"),
    Section((), "HEADER.FIELDS", ("FROM", "subject", "X-Missing")),
    Section((), "HEADER.FIELDS.NOT", ("To", "CONTENT-TYPE")),
    Section((1,)),
    Section((1,), "MIME"),
    Section((2,), "HEADER"),
    Section((2,), "TEXT"),
    Section((2, 1)),
    Section((3, 2)),
    Section((3, 2), "MIME"),
]

CORPUS = [
    SMIME,
    MULTI,
    MULTI.replace(b"\r\n", b"\n"),
    b"From: a@x.test\r\nTo: b@x.test,\r\n c@x.test\r\nSubject: folded\r\n  twice\r\n\r\nbody\r\n",
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Disposition: attachment;\r\n'
    b" filename*0*=utf-8''r%C3%A9sum; filename*1=e.pdf\r\nContent-Language: fr, en\r\n\r\nx\r\n--b--\r\n",
    b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nFrom: inner@x.test\r\n\r\nhi\r\n--d--\r\n",
    b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\nFrom: x@y\r\nSubject: in\r\n\r\nbody",
    b"Content-Type: nonsense\r\nContent-ID: <id>\r\nContent-Description: d\r\nContent-MD5: m\r\n\r\nx",
    b"Subject: no body, no empty line",
    b"\r\nbody only",
    b"",
]


def _answers(module, raw: bytes) -> tuple:
    part = module.parse(raw)
    sections = []
    for section in SECTIONS:
        try:
            sections.append(module.section_bytes(part, section))
        except module.SectionError:
            sections.append(None)
    header_only = module.parse(module.split_header(raw)[0])  # what SEARCH HEADER loads
    return (
        module.envelope(part),
        module.bodystructure(part),
        module.bodystructure(part, extended=False),
        tuple(sections),
        module.split_header(raw),
        module.envelope(header_only),
    )


@pytest.mark.parametrize("raw", CORPUS)
def test_same_answers_as_the_old_module(raw: bytes) -> None:
    assert _answers(mime, raw) == _answers(old, raw)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages(well_formed=True))
@example(b"Content-Type: text/plain; charset=\xc3\xa9\r\nFrom: \xff <a@b>\r\n\r\n")
def test_same_answers_on_generated_messages(raw: bytes) -> None:
    # Where a header section ends at a line that is not a field, the old module disagreed
    # with itself (BODY[HEADER] went on to the empty line, its fields stopped); the scanner's
    # rule is tested on its own below. Compare everything else.
    assume(all(_header_ends_cleanly(p) for p in _walk(mime.parse(raw))))
    assert _answers(mime, raw) == _answers(old, raw)


def _walk(part: mime.Part) -> list[mime.Part]:
    out = [part]
    for child in part.children + ([part.message] if part.message else []):
        out += _walk(child)
    return out


def _header_ends_cleanly(part: mime.Part) -> bool:
    """The header ended at an empty line, or the entity has no body at all."""
    h = part.header
    return not part.body or h in (b"\r\n", b"\n") or h.endswith((b"\n\r\n", b"\n\n"))


def test_search_sees_every_field_of_a_name() -> None:
    part = mime.parse(b"X-Tag: one\r\nx-tag: two,\r\n three\r\n\r\n")
    assert part.field("X-TAG") == "one" and part.field_all("x-tag") == ["one", "two,\r\n three"]
    assert part.field("Nope") is None and part.field_all("Nope") == []


def test_a_line_that_is_not_a_field_ends_the_header() -> None:
    """RFC 5322 §2.1 and the rule of every other reader in MSS: the old module kept such a line
    in BODY[HEADER] while its fields parser had already stopped there."""
    raw = b"From: a@x.test\r\nnot a field\r\nSubject: hidden\r\n\r\nbody\r\n"
    header, body = mime.split_header(raw)
    assert header == b"From: a@x.test\r\n" and body.startswith(b"not a field\r\n")
    part = mime.parse(raw)
    assert mime.envelope(part)[1] is None and mime.section_bytes(part, Section((), "HEADER")) == header


def test_parsing_a_hostile_header_is_linear() -> None:
    def make(n: int) -> bytes:
        return (
            b"From: a@x.test\r\nReferences: <0@x>\r\n"
            + b" <1@x>\r\n" * n
            + b'Content-Type: text/plain; a="b"'
            + b'; a="b"' * n
            + b"\r\n\r\nbody"
        )

    def best(raw: bytes) -> float:
        result = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            part = mime.parse(raw)
            mime.bodystructure(part)
            mime.envelope(part)
            result = min(result, time.perf_counter() - t0)
        return result

    ratio = best(make(100_000)) / best(make(10_000))
    assert ratio < 30, ratio
