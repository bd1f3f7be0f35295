"""Log injection (DESIGN.md "Bad input"): no client can write a log line of its own.

Client input reaches log lines (EHLO names, MAIL FROM addresses, authorization identities,
folder names, unknown commands that aiosmtpd reports). `mss.logging_setup.EscapingFormatter`,
on every root handler of `mss serve`, writes CR, LF, NUL, U+2028 and the other line breaks
and controls of a record's line as visible escapes, and leaves a traceback on its own lines.

The unit tests drive the formatter; the end-to-end test sends forged input to a real
`mss serve` over TLS on SMTP and IMAP and reads back what it wrote to stderr and `mss.log`.
"""

from __future__ import annotations

import base64
import io
import logging
import re
import socket
import ssl
import sys
import uuid
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from mss.logging_setup import FORMAT, EscapingFormatter, escape_controls, setup_logging

#: The start of every record line that FORMAT writes ("2026-11-24 03:08:01,123 INFO mss.smtp ").
RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?:DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+ ")
#: What looks like the beginning of a record.
STARTS_LIKE_A_RECORD = re.compile(r"\d{4}-\d\d-\d\d ")
#: A timestamp the server never writes: a line starting with it was forged.
FAKE_TS = "1999-01-01 00:00:00,000"


def _formatter_output(msg: str, *args, exc_info=None, stack_info: bool = False) -> str:
    record = logging.LogRecord("mss.test", logging.WARNING, __file__, 1, msg, args, exc_info)
    if stack_info:
        record.stack_info = 'Stack (most recent call last):\n  File "x.py", line 1, in <module>\n    f()'
    return EscapingFormatter(FORMAT).format(record)


def _forged(tag: str) -> str:
    return f"{FAKE_TS} CRITICAL mss.auth auth ok id=forged-{tag}"


def _forged_short(tag: str) -> str:
    return f"{FAKE_TS} INFO m {tag}"


# -- the formatter ------------------------------------------------------------------------------


def test_message_with_line_breaks_and_controls_is_one_visible_line() -> None:
    value = f"paul@x\r\n{_forged('crlf')}\x00\u2028{_forged('ls')}\x85\x0b\x1c\x1b[2J\x7f\ud8ff\u202e"
    out = _formatter_output("imap authz refused authzid=%s", value)
    assert len(out.splitlines()) == 1
    assert RECORD.match(out)
    assert out.endswith(
        "authzid=paul@x\\r\\n"
        + _forged("crlf")
        + "\\x00\\u2028"
        + _forged("ls")
        + "\\x85\\x0b\\x1c\\x1b[2J\\x7f\\ud8ff\\u202e"
    )
    assert out.isprintable()


def test_escaping_is_after_interpolation_and_leaves_backslashes_alone() -> None:
    out = _formatter_output("from=%s reply=%r path=%s", "a\nb", "x\r\n", "C:\\mss\\new")
    assert out.endswith("from=a\\nb reply='x\\r\\n' path=C:\\mss\\new")
    assert _formatter_output("plain text, no arguments").endswith(" plain text, no arguments")


def test_every_line_break_and_control_character_is_escaped() -> None:
    for cp in range(sys.maxunicode + 1):
        c = chr(cp)
        breaks = len(f"a{c}b".splitlines()) > 1
        if breaks or cp < 0x20 or 0x7F <= cp <= 0x9F or c in "\u2028\u2029":
            escaped = escape_controls(c)
            assert escaped != c and escaped.isascii() and escaped.isprintable(), hex(cp)


@given(st.text())
def test_any_message_gives_one_line(text: str) -> None:
    out = _formatter_output("value=%s", text)
    assert len(out.splitlines()) == 1
    out.encode("utf-8")  # a lone surrogate would make the log file drop the line


def _raise_with_client_text() -> None:
    try:
        raise KeyError("inner")
    except KeyError as exc:
        raise ValueError(f"bad folder x\r\n{_forged('exc')}") from exc


def test_traceback_stays_multi_line_with_its_message_escaped() -> None:
    try:
        _raise_with_client_text()
    except ValueError:
        out = _formatter_output("imap command failed name=%s", "a\r\nb", exc_info=sys.exc_info())
    lines = out.splitlines()
    assert lines[0].endswith("imap command failed name=a\\r\\nb")
    assert "Traceback (most recent call last):" in lines
    assert any(line.startswith('  File "') for line in lines)
    assert "The above exception was the direct cause of the following exception:" in lines
    assert "KeyError: 'inner'" in lines
    assert lines[-1] == "ValueError: bad folder x\\r\\n" + _forged("exc")
    assert len(lines) >= 8
    assert not any(line.startswith(FAKE_TS) for line in lines)


def test_stack_info_stays_multi_line() -> None:
    out = _formatter_output("where=%s", "x\ny", stack_info=True)
    assert out.splitlines() == [
        out.splitlines()[0],
        "Stack (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "    f()",
    ]
    assert out.splitlines()[0].endswith("where=x\\ny")


def test_a_traceback_cached_by_another_formatter_is_not_reused_raw() -> None:
    try:
        _raise_with_client_text()
    except ValueError:
        record = logging.LogRecord("mss.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    logging.Formatter(FORMAT).format(record)  # caches its raw exc_text on the record
    raw = record.exc_text
    out = EscapingFormatter(FORMAT).format(record)
    assert not any(line.startswith(FAKE_TS) for line in out.splitlines())
    assert record.exc_text == raw  # the other formatter's cache is left for it


def test_setup_logging_covers_library_loggers_on_every_root_handler(tmp_path: Path, monkeypatch) -> None:
    from mss.config import Settings

    root = logging.getLogger()
    saved = (root.handlers[:], root.level, {n: logging.getLogger(n).level for n in ("mail.log", "asyncio")})
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    try:
        setup_logging(Settings(domain="test.example", base_dir=tmp_path, log_file=Path("mss.log")))
        assert root.handlers and all(isinstance(h.formatter, EscapingFormatter) for h in root.handlers)
        logging.getLogger("mail.log").warning("%r unrecognised: %s", ("127.0.0.1", 1), "X\x00\u2028" + _forged("lib"))
        logging.getLogger("asyncio").error("surrogate from a client: %s", "a\udcffb")
        for h in root.handlers:
            h.flush()
    finally:
        for h in root.handlers:
            h.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)
    for text in (stderr.getvalue(), (tmp_path / "mss.log").read_text(encoding="utf-8")):
        lines = text.splitlines()
        assert len(lines) == 2 and all(RECORD.match(line) for line in lines)
        assert lines[0].endswith("unrecognised: X\\x00\\u2028" + _forged("lib"))
        assert lines[1].endswith("surrogate from a client: a\\udcffb")


# -- end to end: forged input to a real `mss serve` --------------------------------------------


class _Lines:
    """A TLS client socket read line by line."""

    def __init__(self, server, deployment, entry: dict, port_name: str) -> None:
        raw = socket.create_connection((server.host, server.port(port_name)), timeout=20)
        self.sock = deployment.client_context(entry).wrap_socket(raw, server_hostname=server.host)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        line = self.file.readline()
        assert line, "the server closed the connection"
        return line

    def smtp_reply(self) -> bytes:
        """The last line of a (multi-line) SMTP reply."""
        while True:
            line = self.line()
            if line[3:4] != b"-":
                return line

    def imap_until(self, tag: bytes) -> bytes:
        """Read up to the tagged response of `tag`, or to a continuation request."""
        while True:
            line = self.line()
            if line.startswith(tag + b" ") or line.startswith(b"+"):
                return line

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.sock.close()
        except (OSError, ssl.SSLError):
            pass


def _forge_smtp(c: _Lines, domain: str, other: str, marker: str) -> None:
    assert c.smtp_reply().startswith(b"220")
    # EHLO with a NUL, a vertical tab and a forged record after it.
    c.send(f"EHLO client.test\x00\x0b{_forged(marker + '-ehlo')}\r\n".encode())
    assert c.smtp_reply().startswith(b"250")
    # An unknown command: aiosmtpd's own logger ("mail.log") reports it.
    c.send(f"X\x00\x0c{marker}-UNKNOWN\r\n".encode())
    assert c.smtp_reply().startswith(b"500")
    # MAIL FROM with C0 controls (refused by the syntax check) ...
    c.send(f"MAIL FROM:<a\x01\x1b[2J{marker}@{domain}>\r\n".encode())
    assert c.smtp_reply()[:1] == b"5"
    # ... and with line breaks in a quoted UTF-8 local part (RFC 6531): NEL (U+0085) or
    # LINE SEPARATOR (U+2028), then a forged record (short: a local part has 64 octets).
    # Refused by the syntax check (553), and aiosmtpd's own command log line carries it.
    for brk, name in (("\u0085", "nel"), ("\u2028", "ls")):
        local = f'"x{brk}{_forged_short(marker + "-" + name)}"'
        c.send(f"MAIL FROM:<{local}@{domain}> SMTPUTF8\r\n".encode())
        assert c.smtp_reply().startswith(b"553")
    c.send(b"RSET\r\n")
    assert c.smtp_reply().startswith(b"250")
    # AUTH EXTERNAL whose authzid carries CR LF and a forged record.
    authzid = f"{other}\r\n{_forged(marker + '-smtp-authzid')}".encode()
    c.send(b"AUTH EXTERNAL " + base64.b64encode(authzid) + b"\r\n")
    assert c.smtp_reply()[:1] in (b"5", b"4")
    c.send(b"QUIT\r\n")
    c.smtp_reply()


def _literal(c: _Lines, tag: bytes, head: bytes, value: bytes) -> bytes:
    """`tag head {n}` CRLF, wait for the go-ahead, then the literal: the server's answer."""
    c.send(tag + b" " + head + b" {%d}\r\n" % len(value))
    cont = c.imap_until(tag)
    if not cont.startswith(b"+"):
        return cont
    c.send(value + b"\r\n")
    return c.imap_until(tag)


def _forge_imap(c: _Lines, entry: dict, other: str, marker: str) -> None:
    assert c.line().startswith(b"* OK")
    # A tag with a NUL and a form feed in it.
    c.send(b"a\x00\x0cb NOOP\r\n")
    c.line()
    # AUTHENTICATE EXTERNAL, initial response (RFC 4959): an authzid with CR LF.
    authzid = f"{other}\r\n{_forged(marker + '-imap-authzid')}".encode()
    c.send(b"a1 AUTHENTICATE EXTERNAL " + base64.b64encode(authzid) + b"\r\n")
    assert c.imap_until(b"a1").startswith(b"a1 NO")
    c.send(b"a2 AUTHENTICATE EXTERNAL =\r\n")
    assert c.imap_until(b"a2").startswith(b"a2 OK")
    # A quoted folder name with controls (a quoted string cannot hold CR or LF) ...
    c.send(f'a3q SELECT "x\x0b{_forged(marker + "-quoted")}\x1c"\r\n'.encode())
    c.imap_until(b"a3q")
    # ... and folder names with CR LF, sent as literals: SELECT, then CREATE + APPEND (which
    # logs the folder's name) + DELETE.
    name = f"x\r\n{_forged(marker + '-folder')}\r\nz".encode()
    _literal(c, b"a3", b"SELECT", name)
    created = _literal(c, b"a4", b"CREATE", name)
    if created.startswith(b"a4 OK"):
        msg = f"From: <{entry['address']}>\r\nSubject: log test\r\n\r\nhello\r\n".encode()
        c.send(b"a5 APPEND {%d}\r\n" % len(name))
        assert c.imap_until(b"a5").startswith(b"+")
        c.send(name + b" {%d}\r\n" % len(msg))
        assert c.imap_until(b"a5").startswith(b"+")
        c.send(msg + b"\r\n")
        c.imap_until(b"a5")
        _literal(c, b"a6", b"DELETE", name)
    c.send(b"a7 LOGOUT\r\n")
    c.imap_until(b"a7")


def _check_log(name: str, data: bytes, marker: str) -> list[str]:
    """The lines that carry the marker; asserts the log is made of well-formed records."""
    assert b"\x00" not in data, f"{name}: raw NUL in the log"
    text = data.decode("utf-8")  # strict: every line was written whole
    carrying = []
    for line in text.splitlines():
        assert not line.startswith(FAKE_TS), f"{name}: forged line {line!r}"
        if STARTS_LIKE_A_RECORD.match(line):
            assert RECORD.match(line), f"{name}: malformed record line {line!r}"
        if marker in line.lower():  # aiosmtpd upper-cases command names
            assert RECORD.match(line), f"{name}: client text outside a record line {line!r}"
            assert RECORD.match(line).end() < line.lower().index(marker), line
            carrying.append(line)
    return carrying


def test_forged_input_never_makes_a_log_line(server, deployment) -> None:
    marker = "forged" + uuid.uuid4().hex[:10]
    claire, paul = deployment.mailbox("PER", 0), deployment.mailbox("PER", 1)
    with _Lines(server, deployment, claire, "submissions") as c:
        _forge_smtp(c, deployment.domain, paul["address"], marker)
    with _Lines(server, deployment, claire, "imaps") as c:
        _forge_imap(c, claire, paul["address"], marker)
    # Every reply came after its log line was written (and handlers flush every record).
    for name, data in (
        ("stderr", server.stderr_path.read_bytes()),
        ("mss.log", (deployment.directory / "mss.log").read_bytes()),
    ):
        lines = _check_log(name, data, marker)
        logged = "\n".join(lines)
        # The paths that log client text today, escaped: aiosmtpd's own logger (through the
        # root handlers), the refused sender, the refused IMAP authzid.
        assert f"unrecognised: X\\x00\\x0c{marker.upper()}-UNKNOWN" in logged, name
        assert f"x\\x85{_forged_short(marker + '-nel')}" in logged, name
        assert f"x\\u2028{_forged_short(marker + '-ls')}" in logged, name
        assert f"\\r\\n{_forged(marker + '-imap-authzid')}" in logged, name
