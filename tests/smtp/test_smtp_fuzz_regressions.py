"""SMTP bugs found by tests/fuzz/fuzz_smtp.py, checked on a real listener with a real client.

aiosmtpd echoes client text in two replies (an unknown command's name, VRFY's argument): it
came back with control characters, and past the 512-octet reply line limit (RFC 5321 4.2
textstring, 4.5.3.1.5). The inputs are also seeds of the fuzz target
(tests/fuzz/corpus/smtp/regression-*).
"""

from __future__ import annotations

import pytest
from smtp_support import connect, entry_context, raw_command


@pytest.fixture(params=[False, True], ids=["starttls", "smtps"])
def session(request, smtp_server, deployment):
    with connect(smtp_server, entry_context(deployment, deployment.mailbox("PER", 0)), request.param) as c:
        yield c


def _printable(text: bytes) -> bool:
    return all(b == 0x09 or 0x20 <= b < 0x7F for b in text)


def test_unknown_command_name_is_not_echoed_raw(session):
    code, text = raw_command(session, b"X\x00\x01\x1bY\r\n")
    assert code == 500 and text == b'5.5.2 Error: command "X???Y" not recognized'
    code, text = raw_command(session, b"X" * 500 + b"\r\n")
    assert code == 500 and _printable(text)
    assert text == b'5.5.2 Error: command "' + b"X" * 32 + b'..." not recognized'
    assert len(b"500 " + text + b"\r\n") <= 512
    assert session.noop()[0] == 250  # one reply each: the session is in step


def test_vrfy_does_not_echo_its_argument(session):
    code, text = raw_command(session, b"VRFY " + b"(" * 450 + b"\r\n")
    assert (code, text) == (502, b"5.5.1 Could not VRFY that address")
    code, text = raw_command(session, b"VRFY ((\x01\x1b[2J\r\n")
    assert (code, text) == (502, b"5.5.1 Could not VRFY that address")
    assert session.noop()[0] == 250


@pytest.mark.parametrize("address", [b"<a@[>", b"<claire@[192.0.2.1>", b"x@[", b"<x@[\x00>"])
def test_unterminated_domain_literal_is_a_malformed_address_not_an_internal_error(session, smtp_server, address):
    """The standard library's address parser raises AttributeError on `a@[` (aiosmtpd
    catches only HeaderParseError): MSS answered `451 4.3.0 Internal error` and logged a
    traceback. It is a malformed address: 553 5.1.3, and the session goes on."""
    mark = smtp_server.log_mark()
    assert raw_command(session, b"MAIL FROM:" + address + b"\r\n") == (553, b"5.1.3 Error: malformed address")
    assert raw_command(session, b"VRFY " + address + b"\r\n") == (502, b"5.5.1 Could not VRFY that address")
    assert session.noop()[0] == 250
    lines = smtp_server.records.lines[mark:]
    assert not [r for r in lines if "session error" in r or "Traceback" in r], lines
