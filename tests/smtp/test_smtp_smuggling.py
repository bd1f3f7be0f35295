"""Bad input on the wire (DESIGN.md, Bad input): SMTP smuggling with bare CR/LF, over-long
lines, malformed commands and addresses, command floods, idle clients. Every case gets a
protocol error and leaves the store untouched. Bytes are sent exactly as written
(`raw_command`): smtplib would repair line ends."""

from __future__ import annotations

import random
import smtplib
import socket
import time

import pytest
from smtp_support import ENHANCED, connect, entry_context, message, raw_command

DOMAIN = "hopital-demo.mssante.test"


@pytest.fixture(params=[False, True], ids=["starttls", "smtps"])
def session(request, smtp_server, deployment):
    with connect(smtp_server, entry_context(deployment, deployment.mailbox("PER", 0)), request.param) as c:
        yield c


@pytest.fixture
def addrs(deployment):
    return deployment.mailbox("PER", 0)["address"], deployment.mailbox("PER", 1)["address"]


def _open_data(c, sender, rcpt):
    assert c.mail(sender)[0] == 250
    assert c.rcpt(rcpt)[0] == 250
    assert c.docmd("DATA")[0] == 354


@pytest.mark.parametrize(
    "smuggle",
    [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r", b"\r\n\x00.\r\n"],
    ids=["LF.LF", "LF.CRLF", "CRLF.LF", "CR.CRLF", "CRLF.CR", "CRLF-NUL.CRLF"],
)
def test_smuggled_end_of_data_is_refused_whole(session, smtp_server, addrs, smuggle):
    """The classic smuggling payload: a fake end-of-data followed by a second transaction.
    Only <CRLF>.<CRLF> ends DATA; the bare CR/LF makes the core refuse the whole message,
    and the smuggled MAIL/RCPT/DATA never run as commands."""
    sender, rcpt = addrs
    total = smtp_server.total_stored()
    _open_data(session, sender, rcpt)
    inner = f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode() + message(sender, rcpt, "smuggled\r\n")
    payload = message(sender, rcpt, "first\r\n") + smuggle + inner + b"\r\n.\r\n"
    code, text = raw_command(session, payload)
    if smuggle == b"\r\n\x00.\r\n":
        # No bare CR/LF: a NUL is content, not an end of data, and the message is one.
        assert code in (250, 550)
    else:
        assert (code, text[:6]) == (550, b"5.6.0 ")
        assert smtp_server.total_stored() == total
    # The next reply is to our NOOP: nothing smuggled was answered.
    assert session.noop() == (250, b"2.0.0 OK")


# A bare LF in content is normalised by default (`[limits] bare_newline`): tests/test_rfc_details.py.
@pytest.mark.parametrize("ending", [b"\r", b"\r\r\n"])
def test_bare_cr_inside_data_is_550_5_6_0(session, smtp_server, addrs, ending):
    sender, rcpt = addrs
    total = smtp_server.total_stored()
    _open_data(session, sender, rcpt)
    raw = message(sender, rcpt, "line one" + ending.decode() + "line two\r\n")
    code, text = raw_command(session, raw + b".\r\n")
    assert (code, text[:6]) == (550, b"5.6.0 ")
    assert smtp_server.total_stored() == total


@pytest.mark.parametrize(
    "line", [b"NOOP\n", b"NOOP\r\r\n", b"NO\rOP\r\n", b"MAIL FROM:<a@b.test>\rRCPT TO:<c@d.test>\r\n"]
)
def test_bare_lf_or_cr_in_command_lines_is_500(session, line):
    code, text = raw_command(session, line)
    assert code == 500 and text.startswith(b"5.5.2 Bare CR or LF")
    assert session.noop()[0] == 250


def test_bare_lf_mail_does_not_open_a_transaction(session, addrs):
    sender, rcpt = addrs
    assert raw_command(session, f"MAIL FROM:<{sender}>\n".encode())[0] == 500
    assert session.rcpt(rcpt)[0] == 503


@pytest.mark.parametrize("length", [513, 1000, 1002, 5000, 100_000])
def test_over_long_command_line_is_500(session, length):
    line = b"NOOP " + b"x" * (length - 5)
    code, text = raw_command(session, line + b"\r\n")
    assert code == 500 and text.startswith(b"5.5.2 Command line too long")
    assert session.noop()[0] == 250


def test_command_line_of_512_octets_is_accepted(session):
    assert raw_command(session, b"NOOP " + b"x" * (510 - 5) + b"\r\n")[0] == 250


def test_over_long_data_line_is_refused_and_not_stored(session, smtp_server, addrs):
    sender, rcpt = addrs
    total = smtp_server.total_stored()
    _open_data(session, sender, rcpt)
    code, text = raw_command(session, message(sender, rcpt, "z" * 5000 + "\r\n") + b".\r\n")
    assert code == 500 and b"Line too long" in text
    assert smtp_server.total_stored() == total


@pytest.mark.parametrize(
    "command, code, status",
    [
        (b"MAIL", 501, b"5.5.4"),
        (b"MAIL TO:<x@y.test>", 501, b"5.5.4"),
        (b"MAIL FROM:<a@b.test> SIZE=abc", 501, b"5.5.4"),
        (b"MAIL FROM:<a@b.test> BODY=BINARYMIME", 501, b"5.5.4"),
        (b"MAIL FROM:<a@b.test> XFOO=1", 555, b"5.5.4"),
        (b"RCPT TO:<x@y.test>", 503, b"5.5.1"),
        (b"DATA", 503, b"5.5.1"),
        (b"DATA now", 503, b"5.5.1"),
        (b"FOOBAR", 500, b"5.5.2"),
        (b"EXPN staff", 502, b"5.5.1"),
        (b"", 500, b"5.5.2"),
        (b"\xff\xfe MAIL", 500, b"5.5.2"),
        (b"QUIT now", 501, b"5.5.4"),
    ],
)
def test_malformed_commands_get_protocol_errors(session, command, code, status):
    got, text = raw_command(session, command + b"\r\n")
    assert (got, text[:5]) == (code, status), text


@pytest.mark.parametrize(
    "address",
    [
        "plainword",
        "a@b@hopital-demo.mssante.test",
        "a..b@hopital-demo.mssante.test",
        ".a@hopital-demo.mssante.test",
        "a@nodot",
        "a@[127.0.0.1]",
        "a@-bad-.test",
        "a@b_c.test",
        "",
        "<>",
        "x" * 65 + "@hopital-demo.mssante.test",
        "a@" + "l" * 64 + ".test",
        "a@" + ".".join(["abcdefgh"] * 30) + ".test",
        "a\x00b@hopital-demo.mssante.test",
        "élodie@hopital-demo.mssante.test",
    ],
)
def test_invalid_addresses_get_501_or_553(session, addrs, address):
    sender, _ = addrs
    code, text = raw_command(session, f"MAIL FROM:<{address}>\r\n".encode())
    assert code in (501, 553) and ENHANCED.match(text), (code, text)
    assert session.mail(sender)[0] == 250
    code, text = raw_command(session, f"RCPT TO:<{address}>\r\n".encode())
    assert code in (501, 553) and ENHANCED.match(text), (code, text)


@pytest.mark.parametrize("address", ["a b@hopital-demo.mssante.test", "@route.test:x@hopital-demo.mssante.test"])
def test_addresses_aiosmtpd_normalises_are_not_accepted_as_someone_else(session, addrs, address):
    """aiosmtpd's parser turns `a b@d` into `"a b"@d` and drops source routes (RFC 5321
    C: SHOULD ignore them); neither may become a sender, nor a known recipient."""
    sender, _ = addrs
    assert raw_command(session, f"MAIL FROM:<{address}>\r\n".encode())[0] in (501, 550, 553)
    assert session.mail(sender)[0] == 250
    assert raw_command(session, f"RCPT TO:<{address}>\r\n".encode())[0] in (501, 550, 553)


def test_utf8_address_needs_smtputf8(session, addrs):
    sender, _ = addrs
    assert session.mail(sender, ["SMTPUTF8"])[0] == 250
    # Syntactically valid with SMTPUTF8; unknown here, so the directory answers.
    assert session.rcpt(f"élodie@{DOMAIN}")[0] == 550


def test_too_many_unknown_commands_close_the_connection(session):
    for _ in range(4):
        assert session.docmd("XYZZY")[0] == 500
    code, text = session.docmd("XYZZY")
    assert (code, text[:5]) == (502, b"5.5.1")
    with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError)):
        session.noop()
        session.noop()


def test_noop_flood_is_cut_with_421(session):
    for _ in range(50):
        assert session.noop()[0] == 250
    code, text = session.noop()
    assert (code, text[:5]) == (421, b"4.7.0")


def test_random_garbage_gets_replies_with_codes_and_stores_nothing(session, smtp_server):
    """A small seeded fuzz of command lines: every reply is a well-formed SMTP reply with an
    enhanced code, the session survives, and nothing is stored."""
    rng = random.Random(5321)
    total = smtp_server.total_stored()
    alphabet = b"MAILFROMRCPTDATA<>@:. =\x00\t\x7f\xc3\xa9" + bytes(range(0x21, 0x7F))
    for _ in range(40):
        line = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 80))).replace(b"\r", b"").replace(b"\n", b"")
        code, text = raw_command(session, line + b"\r\n")
        assert 200 <= code < 600
        if code == 502:  # five unknown commands: closed on purpose
            break
        assert ENHANCED.match(text) or code == 250, (line, code, text)
        if code == 354:  # the garbage said DATA: end it
            raw_command(session, b".\r\n")
    assert smtp_server.total_stored() == total


def test_idle_client_gets_421_4_4_2(smtp_server, deployment):
    limits = smtp_server.core.settings.limits
    saved, limits.smtp_timeout_s = limits.smtp_timeout_s, 1  # read when the connection's protocol is built
    try:
        with socket.create_connection((smtp_server.host, smtp_server.port("submission")), timeout=10) as sock:
            f = sock.makefile("rb")
            assert f.readline().startswith(b"220 ")
            start = time.monotonic()
            assert f.readline().startswith(b"421 4.4.2 ")
            assert f.readline() == b""
            assert time.monotonic() - start < 5
    finally:
        limits.smtp_timeout_s = saved


@pytest.mark.parametrize(
    "address",
    [
        b'"a\xff"@hopital-demo.mssante.test',
        '"a\u2028b"@hopital-demo.mssante.test'.encode(),
        '"a\u0085b"@x.test'.encode(),
    ],
    ids=["invalid-utf8", "line-separator", "nel"],
)
def test_utf8_addresses_that_are_not_text_get_553_not_an_error(session, address):
    """With SMTPUTF8, aiosmtpd hands over undecodable bytes as surrogates; those, C0/C1
    controls and line separators are refused cleanly instead of failing with 451."""
    code, text = raw_command(session, b"MAIL FROM:<" + address + b"> SMTPUTF8\r\n")
    assert code == 553 and text.startswith(b"5.1.7 "), (code, text)
