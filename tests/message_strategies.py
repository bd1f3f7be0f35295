"""Hypothesis strategies for RFC 5322 header sections, shared by the scanner, S/MIME, core and
IMAP property tests: the same hostile shapes reach every consumer of the one scanner.

Shapes covered: field names anywhere in the ftext range (RFC 5322 §2.2, %d33-57 / %d59-126),
white space before the colon (§4.5.3), empty values, values folded over many lines (§2.2.3),
blank continuation lines, UTF-8 and stray 8-bit octets, a header with no empty line, a line
that is not a field (the body starts there), a continuation line before any field, and bodies
that themselves look like header sections.
"""

from __future__ import annotations

from hypothesis import strategies as st

FTEXT = "".join(chr(c) for c in range(33, 127) if c != ord(":"))

field_names = st.one_of(
    st.sampled_from(
        [
            "From",
            "To",
            "Cc",
            "Subject",
            "Date",
            "Message-ID",
            "In-Reply-To",
            "References",
            "Sender",
            "Content-Type",
            "content-type",
            "CONTENT-TYPE",
            "Content-Transfer-Encoding",
            "MIME-Version",
            "Content-Disposition",
            "X-MSS-NIL",
            "Received",
            "HP-Outer",
        ]
    ),
    st.text(alphabet=FTEXT, min_size=1, max_size=12),
)

_value_chars = st.sampled_from(
    [
        b"a",
        b"Z",
        b"0",
        b" ",
        b"\t",
        b";",
        b"=",
        b'"',
        b"<",
        b">",
        b"@",
        b",",
        b":",
        b"(",
        b")",
        b"\\",
        b"=?utf-8?q?x?=",
        "é".encode(),
        b"\xff",
        b"hp",
        b"protected-headers",
        b"boundary",
        b"x@y.test",
    ]
)
values = st.lists(_value_chars, max_size=12).map(b"".join)

# A continuation line: starts with SP or HTAB (RFC 5322 §2.2.3); may be blank.
continuations = st.tuples(st.sampled_from([b" ", b"\t", b"  ", b" \t"]), values).map(b"".join)


@st.composite
def header_fields(draw: st.DrawFn, *, well_formed: bool = False) -> bytes:
    """One field, CRLF-terminated, as a sender could write it (``well_formed``: no white space
    before the colon, the obsolete syntax of RFC 5322 §4.5.3)."""
    name = draw(field_names).encode("ascii")
    gap = b"" if well_formed else draw(st.sampled_from([b"", b"", b"", b" ", b"\t "]))
    lead = draw(st.sampled_from([b" ", b"", b"\t"]))
    lines = [name + gap + b":" + lead + draw(values)] + draw(st.lists(continuations, max_size=4))
    return b"".join(line + b"\r\n" for line in lines)


#: What may follow the fields: the empty line, nothing, a line that is not a field, or the
#: buffer's end inside a last (unterminated) field.
separators = st.sampled_from(["empty", "empty", "empty", "none", "not-a-field", "unterminated"])

bodies = st.one_of(
    st.just(b""),
    st.lists(
        st.one_of(header_fields(), st.sampled_from([b"\r\n", b"text\r\n", b" indented\r\n", b"--b\r\n"])), max_size=5
    ).map(b"".join),
)


@st.composite
def messages(draw: st.DrawFn, *, with_from: bool = False, well_formed: bool = False) -> bytes:
    """A CRLF message (no bare CR or LF): fields, then one kind of header end, then a body.

    ``well_formed`` leaves out the shapes on which `email.parser` and the RFC 5322 scanner
    disagree (a continuation line before any field, which email skips; a line starting with
    a colon, which email takes for a field with an empty name; white space before a colon,
    which email keeps in the name), so the old email-based checks can be compared with it.
    """
    fields = draw(st.lists(header_fields(well_formed=well_formed), max_size=8))
    if with_from:
        fields.insert(draw(st.integers(0, len(fields))), b"From: <a@b.test>\r\n")
    if not well_formed and not with_from and draw(st.booleans()):
        fields.insert(0, draw(continuations) + b"\r\n")  # continuation before any field
    head = b"".join(fields)
    kind = draw(separators)
    if kind == "empty":
        return head + b"\r\n" + draw(bodies)
    if kind == "not-a-field":
        lines = [b"no colon here\r\n", b"\xff\r\n"] + ([] if well_formed else [b": empty name\r\n"])
        return head + draw(st.sampled_from(lines)) + draw(bodies)
    if kind == "unterminated":
        return head + draw(header_fields(well_formed=well_formed))[:-2]
    return head
