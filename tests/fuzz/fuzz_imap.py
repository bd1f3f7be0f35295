"""Fuzz target: the sans-IO IMAP command parser (`imap.protocol.Parser`, `parse_command`).

What must hold for any client bytes (RFC 9051 2.2, 4, 9; RFC 7888):

- the framing gives the same events whatever the TCP segmentation: the input fed at once,
  octet by octet and in chunks of an input-dependent size yields equal event lists;
- `next_event` returns only the four event types (never raises), `parse_command` raises only
  `ParseError`; a parsed command's class is the one its name is registered with, its tag is
  the input's first token;
- nothing held exceeds the limits: the partial command buffer stays within `Limits.command`,
  there are never more events than lines;
- commands re-serialised with every string as a literal parse back to an equal command
  (the round trip of mailbox names, user names, passwords, sequence sets, FETCH items, flags).
"""

from __future__ import annotations

from fuzzlib import check

from imap.protocol import ContinuationNeeded, Limits, ParseError, Parser, RawLine, parse_command
from imap.protocol import commands as c
from imap.protocol.grammar import COMMANDS

NAME = "imap"
MAX_LEN = 4096

# Small limits, so that the fuzzer reaches every limit with short inputs.
LIMITS = Limits(line=200, literal=600, nesting=6)

_EVENT_TYPES = (c.Command, ContinuationNeeded, RawLine, ParseError)


def _key(event: object) -> object:
    """A comparable form of an event (ParseError compares by identity otherwise)."""
    if isinstance(event, ParseError):
        return ("ParseError", event.text, event.tag, event.fatal)
    return event


def _events(chunks: list[bytes]) -> list[object]:
    """Feed `chunks` as a session would, answering raw-line requests like it."""
    parser = Parser(LIMITS)
    out: list[object] = []
    for chunk in chunks:
        parser.feed(chunk)
        while True:
            event = parser.next_event()
            if event is None:
                break
            check(isinstance(event, _EVENT_TYPES), f"unexpected event type {type(event).__name__}")
            check(
                len(parser._cmd) <= LIMITS.command,
                f"partial command holds {len(parser._cmd)} octets, over Limits.command",
            )
            out.append(_key(event))
            # The session reads the next line raw after AUTHENTICATE without initial response
            # and during IDLE (imap.session): do the same so raw mode gets fuzzed too.
            if (isinstance(event, c.Authenticate) and event.initial is None) or isinstance(event, c.Idle):
                parser.expect_line()
    return out


def _lit(b: bytes) -> bytes:
    return b"{%d}\r\n" % len(b) + b


def _s(text: str) -> bytes:
    return _lit(text.encode("utf-8"))


def _seq(s: c.SequenceSet) -> bytes:
    return str(s).encode("ascii")


def _att(a: c.FetchAtt) -> bytes:
    out = a.name.encode("ascii")
    if a.section is not None:
        sec = a.section
        spec = ".".join(str(p) for p in sec.part)
        if sec.text:
            spec = f"{spec}.{sec.text}" if spec else sec.text
        body = spec.encode("ascii")
        if sec.fields:
            body += b" (" + b" ".join(_s(f) for f in sec.fields) + b")"
        out += b"[" + body + b"]"
    if a.partial is not None:
        out += b"<%d.%d>" % a.partial
    return out


def _flags(flags: tuple[str, ...]) -> bytes:
    return b"(" + b" ".join(f.encode("ascii") for f in flags) + b")"


def serialise(cmd: c.Command) -> bytes | None:
    """`cmd` written back as client bytes (strings as literals), for the commands whose
    arguments are all typed values; None for the others."""
    head = cmd.tag.encode("ascii") + b" " + (b"UID " if getattr(cmd, "uid", False) else b"") + cmd.name.encode()
    if isinstance(cmd, c.Login):
        return head + b" " + _s(cmd.user) + b" " + _lit(bytes(cmd.password)) + b"\r\n"
    if isinstance(cmd, c.Select) and not cmd.params:
        return head + b" " + _s(cmd.mailbox) + b"\r\n"
    if isinstance(cmd, (c.Create, c.Delete)):
        return head + b" " + _s(cmd.mailbox) + b"\r\n"
    if isinstance(cmd, c.Subscribe):
        return head + b" " + _s(cmd.mailbox) + b"\r\n"
    if isinstance(cmd, c.Rename):
        return head + b" " + _s(cmd.mailbox) + b" " + _s(cmd.new) + b"\r\n"
    if isinstance(cmd, c.Status):
        return head + b" " + _s(cmd.mailbox) + b" (" + " ".join(cmd.items).encode() + b")\r\n"
    if isinstance(cmd, c.Fetch):
        return head + b" " + _seq(cmd.set) + b" (" + b" ".join(_att(a) for a in cmd.atts) + b")\r\n"
    if isinstance(cmd, c.Store):
        op = {"replace": b"", "add": b"+", "remove": b"-"}[cmd.mode]
        silent = b".SILENT" if cmd.silent else b""
        return head + b" " + _seq(cmd.set) + b" " + op + b"FLAGS" + silent + b" " + _flags(cmd.flags) + b"\r\n"
    if isinstance(cmd, c.Copy):
        return head + b" " + _seq(cmd.set) + b" " + _s(cmd.mailbox) + b"\r\n"
    if isinstance(cmd, c.Expunge) and cmd.set is not None:
        return head + b" " + _seq(cmd.set) + b"\r\n"
    return None


def _check_command(cmd: c.Command, data: bytes) -> None:
    spec = COMMANDS.get(cmd.name)
    check(spec is not None, f"command name {cmd.name!r} is not registered")
    check(type(cmd) is spec.cls, f"{cmd.name} parsed into {type(cmd).__name__}, not {spec.cls.__name__}")
    check(data.startswith(cmd.tag.encode("ascii") + b" "), "the command's tag is not the input's first token")
    check(not any(ch in cmd.tag for ch in '+(){ %*"\\'), f"tag {cmd.tag!r} has a character the grammar forbids")
    for s in (
        getattr(cmd, "set", None),
        *(k[1] for k in [getattr(cmd, "key", None)] if isinstance(k, tuple) and k[0] in ("SEQ", "UID")),
    ):
        if isinstance(s, c.SequenceSet):
            check(s.ranges, "an empty sequence set was accepted")
            for n in s.numbers():
                check(1 <= n <= c.MAX_NUMBER, f"sequence number {n} out of range")
    again = serialise(cmd)
    if again is not None:
        try:
            back = parse_command(again, Limits())
        except ParseError as exc:
            raise AssertionError(f"re-serialised {cmd!r} does not parse: {exc.text}; bytes {again!r}") from None
        check(back == cmd, f"round trip changed the command: {cmd!r} -> {again!r} -> {back!r}")


def test_one_input(data: bytes) -> None:
    # 1. One complete command, as the framing hands it on.
    try:
        cmd = parse_command(data, LIMITS)
    except ParseError as exc:
        check(isinstance(exc.text, str) and exc.text, "ParseError without a text")
        check("\r" not in exc.text and "\n" not in exc.text, f"CR/LF in a BAD text: {exc.text!r}")
    else:
        check(isinstance(cmd, c.Command), f"parse_command returned {type(cmd).__name__}")
        _check_command(cmd, data)

    # 2. The framing: segmentation does not change the events.
    whole = _events([data])
    lines = data.count(b"\n")
    check(len(whole) <= lines + 1, f"{len(whole)} events from {lines} line ends")
    for e in whole:
        if isinstance(e, tuple):  # ParseError
            check("\r" not in e[1] and "\n" not in e[1], f"CR/LF in a BAD text: {e[1]!r}")
    by_octet = _events([data[i : i + 1] for i in range(len(data))])
    check(by_octet == whole, f"octet-by-octet feeding gave other events:\n{whole!r}\n{by_octet!r}")
    size = 2 + len(data) % 61
    chunked = _events([data[i : i + size] for i in range(0, len(data), size)])
    check(chunked == whole, f"feeding in {size}-octet chunks gave other events:\n{whole!r}\n{chunked!r}")
