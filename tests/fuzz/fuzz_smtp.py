"""Fuzz target: what MSS runs on an SMTP command line (`smtp.server.SubmissionSMTP` on aiosmtpd).

The input is what a client sends on one connection. It is fed to a real `SubmissionSMTP`
(implicit-TLS role, so no handshake is needed) with the real `SubmissionHandler`, over an
in-memory transport, on one event loop; only the core behind the handler is a stand-in
(every sender is the authenticated principal's, every recipient exists, `deliver` runs the
real `parse_message`). The SASL exchanges are the real ones (`mss.sasl`) with a host that
refuses every credential. The input is also given, line by line, to the address and
parameter parsing the handler relies on (aiosmtpd's `_getaddr`, `_getparams`, then
`smtp.handler.address_problem`).

What must hold (RFC 5321 4.1.1, 4.2, 4.5.3.1; RFC 2034 3; RFC 3463; RFC 4954 4):

- every reply line is `<3 digits><SP or -><text>`, at most 512 octets with its CRLF, the
  text only HT, printable ASCII or UTF-8 (RFC 5321 4.2 textstring: no control character); a multi-line reply keeps one code; after the greeting, every reply but
  EHLO/HELO's, 334 and 354 carries an enhanced code of the same class;
- no exception reaches `handle_exception` as an internal error (`451 4.3.0 Internal error`);
- an address MSS accepts (MAIL, RCPT) passes `address_problem` (or is RCPT's bare
  `postmaster`, RFC 5321 4.1.1.3) and holds no control character; a message MSS stores passed `parse_message` (no bare CR/LF);
- `address_problem` returns None or one of its fixed texts (never client text); an address
  it accepts parses back to itself through `_getaddr`.
"""

from __future__ import annotations

import asyncio
import atexit
import re

from fuzzlib import check

from mss.config import AbuseSettings, LimitSettings, Settings
from mss.message import parse_message
from mss.principal import Principal
from mss.sasl import MECHANISMS
from mss.sasl import exchange as sasl_exchange
from mss.services import DeliveryResult, Failure
from smtp import handler as smtp_handler
from smtp.server import SubmissionSMTP

NAME = "smtp"
MAX_LEN = 4096

MAX_SIZE = 2048
# The recipient-enumeration slow-down is a wall-clock sleep, not a protocol state: off here,
# so that a session runs until it waits for input; its 421 at the hard limit still applies.
SETTINGS = Settings(
    domain="mss.test",
    log_file=None,
    limits=LimitSettings(max_message_size=MAX_SIZE),
    abuse=AbuseSettings(rcpt_error_delay_s=0, rcpt_error_max_delay_s=0),
)
PRINCIPAL = Principal(
    kind="PS",
    identifier="810001045367",
    display_name="Claire Martin",
    mailboxes=frozenset({"claire.martin@mss.test"}),
    primary="claire.martin@mss.test",
)

# RFC 5321 4.2: textstring = 1*(%d09 / %d32-126), plus UTF-8 (RFC 6531 3.7.4.2 lets replies carry it).
_REPLY = re.compile(rb"([2-5][0-9][0-9])([ -])([\t\x20-\x7e\x80-\xff]*)\Z")
_ENHANCED = re.compile(r"([245])\.\d{1,3}\.\d{1,3}(?: |$)")


# -- the stand-in core ---------------------------------------------------------------------


class _Transaction:
    def __init__(self, log: list) -> None:
        self.log = log

    def mail_from(self, address: str, dsn=None, size=None) -> None:
        self.log.append(("mail", address))

    async def add_recipient(self, address: str, dsn=None):
        self.log.append(("rcpt", address))
        return None

    async def deliver(self, raw: bytes):
        parse_message(raw, max_size=MAX_SIZE)  # raises Refusal: answered by the handler
        self.log.append(("data", raw))
        return DeliveryResult(stored=())


class _Submission:
    max_message_size = MAX_SIZE
    max_recipients = 100

    def __init__(self) -> None:
        self.log: list = []

    def begin(self, principal: Principal, *, trace=None) -> _Transaction:
        return _Transaction(self.log)


class _RefusingHost:
    """`mss.sasl.ExchangeHost` refusing every credential (the parsers still run in full)."""

    async def external(self, authzid, *, mechanism):
        return Failure("refused", "Certificate refused")

    async def password(self, username, password, *, mechanism="LOGIN"):
        return Failure("refused", "Invalid credentials")

    async def token(self, credentials, *, mechanism):
        return Failure("refused", "Invalid token")

    def rejected(self, error, *, mechanism):
        return Failure(error.kind, error.text)

    def cancelled(self, *, mechanism):
        return Failure("cancelled", "Authentication aborted")

    def unsupported(self, *, mechanism):
        return Failure("unsupported", "Unrecognized authentication type")


class _Authentication:
    mechanisms = MECHANISMS
    failures = 0

    def exchange(self, mechanism: str):
        return sasl_exchange(_RefusingHost(), mechanism, self.mechanisms)


class _Core:
    def __init__(self) -> None:
        self.settings = SETTINGS
        self.credentials = None  # the certificate look-up is replaced below
        self.submission = _Submission()


class _Handler(smtp_handler.SubmissionHandler):
    """The real handler; only "who is this client" is answered without a certificate."""

    async def principal(self, session):
        st = smtp_handler._state(session)
        return (st.sasl_principal or PRINCIPAL), None


# -- the in-memory connection --------------------------------------------------------------


class _Transport(asyncio.Transport):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.out = bytearray()
        self.closing = False
        self.protocol: asyncio.Protocol | None = None

    def write(self, data) -> None:
        check(not self.closing, "a reply was written after the connection was closed")
        self.out += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            if self.protocol is not None:
                self.loop.call_soon(self.protocol.connection_lost, None)

    def get_extra_info(self, name, default=None):
        return {"peername": ("192.0.2.10", 40000), "sockname": ("192.0.2.1", 465)}.get(name, default)

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


_LOOP = asyncio.new_event_loop()
atexit.register(_LOOP.close)


async def _settle(proto: SubmissionSMTP) -> None:
    """Let the session run until it waits for more input (or ends)."""
    task = proto._handler_coroutine
    for _ in range(200_000):
        await asyncio.sleep(0)
        if task is None or task.done():
            return
        if proto._reader._waiter is not None:  # blocked on input: everything fed is read
            return
    raise AssertionError("the session neither finished nor waited for input")


def _session(data: bytes) -> tuple[bytes, list]:
    core = _Core()
    proto = SubmissionSMTP(_Handler(core), settings=SETTINGS, implicit_tls=True, loop=_LOOP)
    transport = _Transport(_LOOP)
    transport.protocol = proto
    proto.connection_made(transport)
    smtp_handler._state(proto.session).authentication = _Authentication()
    proto.data_received(data)
    _LOOP.run_until_complete(_settle(proto))
    if not transport.closing:
        proto.eof_received()
        transport.close()
    _LOOP.run_until_complete(asyncio.sleep(0))
    task = proto._handler_coroutine
    if task is not None and not task.done():
        task.cancel()
        try:
            _LOOP.run_until_complete(task)
        except asyncio.CancelledError:
            pass
    elif task is not None and not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        if not isinstance(exc, (ConnectionResetError, asyncio.CancelledError)):
            raise exc
    # Nothing of the session may stay scheduled on the shared loop.
    for handle in list(_LOOP._scheduled):  # type: ignore[attr-defined]
        handle.cancel()
    return bytes(transport.out), core.submission.log


def _check_replies(out: bytes) -> None:
    check(out.endswith(b"\r\n") or not out, "the reply stream does not end with CRLF")
    lines = out.split(b"\r\n")[:-1]
    check(lines and lines[0].startswith(b"220 "), "no 220 greeting")
    code_of_multiline = None
    bare = False  # inside an EHLO/HELO reply (RFC 2034 3: no enhanced code there)
    for i, line in enumerate(lines):
        check(len(line) + 2 <= 512, f"reply line of {len(line) + 2} octets (RFC 5321 4.5.3.1.5): {line[:80]!r}")
        m = _REPLY.match(line)
        check(m is not None, f"malformed reply line {line[:80]!r}")
        code, sep, text_b = m.group(1), m.group(2), m.group(3)
        if code_of_multiline is not None:
            check(code == code_of_multiline, f"multi-line reply changed code: {line[:60]!r}")
        code_of_multiline = code if sep == b"-" else None
        text = text_b.decode("utf-8", "replace")
        check(not text.startswith("4.3.0 Internal error"), "an exception reached handle_exception")
        if i == 0:
            continue
        if code == b"250" and (sep == b"-" or bare):
            bare = sep == b"-"
            if sep == b"-" or not _ENHANCED.match(text):
                continue  # EHLO/HELO lines
        if code in (b"334", b"354"):
            continue
        if text.startswith(("Syntax: EHLO", "Syntax: HELO")):
            continue  # RFC 2034 3: no enhanced code in any response to EHLO or HELO
        e = _ENHANCED.match(text)
        if e is None and code == b"250" and not text[:1].isdigit():
            continue  # HELO's one-line 250 <hostname>
        check(e is not None, f"reply without an enhanced status code: {line[:80]!r}")
        check(e.group(1) == chr(code[0]), f"enhanced code class differs from the reply code: {line[:80]!r}")


def _check_accepted(log: list) -> None:
    utf8 = True
    for entry in log:
        if entry[0] in ("mail", "rcpt"):
            address = entry[1]
            if entry[0] == "rcpt" and address.lower() == "postmaster":
                continue  # RFC 5321 4.1.1.3: the one dotless recipient
            check(smtp_handler.address_problem(address, smtputf8=utf8) is None, f"accepted address {address!r}")
            check(not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in address), f"control char in {address!r}")
        elif entry[0] == "data":
            parse_message(entry[1], max_size=MAX_SIZE)


_PROBLEMS = {
    "non-ASCII address without SMTPUTF8",
    "address is not valid UTF-8 (RFC 6531 3.3)",
    "address contains a control character or a line separator",
    "address syntax is invalid (RFC 5321 4.1.2)",
    "local part longer than 64 octets",
    "domain longer than 255 octets",
    "address longer than 254 octets",
}


def _check_address_parsing(proto_for_parsing: SubmissionSMTP, data: bytes) -> None:
    for raw in data.split(b"\n")[:64]:
        arg = raw.rstrip(b"\r").decode("utf-8", "surrogateescape")
        address, params = proto_for_parsing._getaddr(arg)
        if address is None:
            continue
        check(isinstance(params, str), "_getaddr returned no rest")
        proto_for_parsing._getparams(params.upper().split())
        for utf8 in (False, True):
            problem = smtp_handler.address_problem(address, smtputf8=utf8)
            check(problem is None or problem in _PROBLEMS, f"address_problem said {problem!r}")
            if problem is None:
                again, _ = proto_for_parsing._getaddr(f"<{address}>")
                check(again == address, f"accepted {address!r} does not parse back to itself ({again!r})")


_PARSER = SubmissionSMTP(_Handler(_Core()), settings=SETTINGS, implicit_tls=True, loop=_LOOP)


def test_one_input(data: bytes) -> None:
    _check_address_parsing(_PARSER, data)
    out, log = _session(data)
    _check_replies(out)
    _check_accepted(log)
