"""Unit tests of the bugs the fuzz targets found, one per bug, on the real code.

Each also has its input in the target's seed corpus (tests/fuzz/corpus/<target>/regression-*),
so the target's own invariants are re-checked on it by test_fuzz_targets.py.
"""

from __future__ import annotations

from imap.protocol import Command, Limits, ParseError, Parser


def _events(data: bytes, limits: Limits, chunk: int) -> list:
    p = Parser(limits)
    out = []
    for i in range(0, len(data), chunk):
        p.feed(data[i : i + chunk])
        while (ev := p.next_event()) is not None:
            out.append(ev)
    return out


def test_imap_line_at_the_limit_is_judged_the_same_however_it_arrives():
    """fuzz_imap: a line of `Limits.line` + 1 octets before its LF (a bare-LF line at the
    limit, or one whose CR came in the same segment) was refused as too long when it arrived
    in pieces, and parsed when it arrived whole."""
    lim = Limits(line=200)
    for line in (b"a1 NOOP " + b"x" * 193 + b"\n", b"a1 NOOP" + b" " * 193 + b"\r\n"):
        assert len(line.rstrip(b"\n")) == lim.line + 1
        whole = _events(line, lim, chunk=len(line))
        for chunk in (1, 7, 64):
            pieces = _events(line, lim, chunk)
            assert [type(e) for e in pieces] == [type(e) for e in whole], chunk
            assert [getattr(e, "text", None) for e in pieces] == [getattr(e, "text", None) for e in whole]
        assert "too long" not in getattr(whole[0], "text", "")
    # One octet more is too long, whole or in pieces.
    longer = b"a2 NOOP " + b"x" * 195 + b"\r\n"
    for chunk in (1, 7, len(longer)):
        (ev,) = _events(longer, lim, chunk)
        assert isinstance(ev, ParseError) and "too long" in ev.text and ev.tag == "a2"
    # ... and the stream goes on.
    evs = _events(longer + b"a3 NOOP\r\n", lim, 5)
    assert isinstance(evs[-1], Command) and evs[-1].tag == "a3"


def test_smtp_commands_pipelined_behind_a_goodbye_are_not_run():
    """fuzz_smtp: after `502 ... goodbye` (aiosmtpd's limit of unknown commands) closed the
    connection, the commands the client had pipelined behind it were still read and run
    (a second reply was written to the closed transport). The session is the real
    `SubmissionSMTP` and `SubmissionHandler` over the fuzz target's in-memory transport."""
    import fuzz_smtp

    pipelined = b"EHLO client.test\r\n" + b"XX\r\n" * 5 + b"MAIL FROM:<claire.martin@mss.test>\r\nNOOP\r\n"
    out, transactions = fuzz_smtp._session(pipelined)
    assert out.endswith(b"502 5.5.1 Too many unrecognized commands, goodbye.\r\n")
    assert out.count(b"502 ") == 1 and b"250 2.1.0" not in out
    assert transactions == []  # the MAIL never reached the handler


def test_smtp_reader_reads_nothing_once_the_connection_is_closing():
    import asyncio

    from smtp.server import _StrictLineReader

    class Closing:
        def is_closing(self) -> bool:
            return True

    async def read() -> bytes:
        reader = _StrictLineReader()
        reader.feed_data(b"MAIL FROM:<a@b.test>\r\n")
        reader._transport = Closing()
        return await reader.readuntil(b"\n")

    try:
        asyncio.run(read())
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("a line was read from a closing connection")


def test_directory_line_with_a_cr_before_its_trailing_pipe_keeps_no_line_end():
    """fuzz_annuaire: `value\\r|\\n` (a CR before the trailing separator) left the CR on the
    line, so the last field could end in a line-end character."""
    from annuaire.importer import _strip_line

    assert _strip_line("a|b\r|\n") == "a|b"
    assert _strip_line("a|b|\r\n") == "a|b"
    assert _strip_line("a|b\r\n") == "a|b"
    assert _strip_line("a|\rb|\n") == "a|\rb"  # only the end is a line end


def test_smtp_address_parser_bugs_of_the_standard_library_are_malformed_addresses():
    """fuzz_smtp: `email._header_value_parser` raises AttributeError on `<a@[ >` and
    UnboundLocalError on `a@[ ` (a space after a domain literal's `[`); aiosmtpd catches
    neither. `SubmissionSMTP._getaddr` answers "malformed" (553 on MAIL/RCPT) for both."""
    from smtp.server import SubmissionSMTP

    proto = SubmissionSMTP.__new__(SubmissionSMTP)
    for arg in ("<a@[ >", "a@[ ", "<a@[ \t>", "<x@[\t>", "a@[", "<a@[>"):
        assert proto._getaddr(arg) == (None, None), arg
    assert proto._getaddr("<claire@example.test>")[0] == "claire@example.test"
