"""The sans-IO parser, driven with bytes (RFC 9051 9 grammar, RFC 7888 literals, limits)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imap.protocol.commands import (
    Append,
    AppendMessage,
    Authenticate,
    Capability,
    Fetch,
    FetchAtt,
    List,
    Login,
    Noop,
    Search,
    Section,
    Select,
    SequenceSet,
    Store,
)
from imap.protocol.parser import (
    Command,
    ContinuationNeeded,
    Limits,
    ParseError,
    Parser,
    RawLine,
    parse_command,
)
from imap.protocol.response import serialise


def events(data: bytes, limits: Limits | None = None, chunk: int | None = None) -> list:
    p = Parser(limits)
    out = []
    pieces = [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        p.feed(piece)
        while (ev := p.next_event()) is not None:
            out.append(ev)
    return out


def one(data: bytes) -> Command:
    return parse_command(data)


def test_simple_commands_and_tags():
    c = one(b"a001 capability\r\n")
    assert isinstance(c, Capability) and (c.tag, c.name, c.full_name) == ("a001", "CAPABILITY", "CAPABILITY")
    assert one(b"x.1 NOOP\n").name == "NOOP"  # bare LF tolerated


def test_synchronising_literal_asks_for_continuation_then_completes():
    p = Parser()
    p.feed(b"A1 APPEND INBOX (\\Seen) {11}\r\n")
    assert p.next_event() == ContinuationNeeded(11)
    assert p.next_event() is None
    p.feed(b"Hello")
    assert p.next_event() is None
    p.feed(b" World\r\n")
    cmd = p.next_event()
    assert isinstance(cmd, Append) and cmd.name == "APPEND"
    assert cmd.messages == (AppendMessage(b"Hello World", ("\\Seen",)),)


def test_non_synchronising_literal_needs_no_continuation():
    evs = events(b"A1 LOGIN {6+}\r\nclaire {6+}\r\nsecret\r\nA2 NOOP\r\n")
    assert [type(e) for e in evs] == [Login, Noop]
    assert evs[0].user == "claire"


def test_byte_by_byte_feeding_gives_the_same_commands():
    data = b'A1 SELECT "Sent"\r\nA2 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.100>)\r\n'
    assert events(data, chunk=1) == events(data)


def test_fetch_attributes_sections_and_partials():
    c = one(
        b"t UID FETCH 1:3,7,9:* (UID FLAGS BODY.PEEK[1.2.HEADER.FIELDS (A B)]<0.100> BODY[] BODY[2.MIME] RFC822.SIZE)\r\n"
    )
    assert isinstance(c, Fetch) and c.uid and c.name == "FETCH" and c.full_name == "UID FETCH"
    assert c.set == SequenceSet(((1, 3), (7, 7), (9, None)))
    atts = c.atts
    assert atts[2] == FetchAtt("BODY.PEEK", Section((1, 2), "HEADER.FIELDS", ("A", "B")), (0, 100))
    assert atts[2].response_name() == "BODY[1.2.HEADER.FIELDS (A B)]<0>"
    assert atts[3] == FetchAtt("BODY", Section())
    assert atts[4].section == Section((2,), "MIME")


def fetch(data: bytes) -> Fetch:
    c = one(data)
    assert isinstance(c, Fetch)
    return c


def test_fetch_macros():
    assert [a.name for a in fetch(b"t FETCH 1 ALL\r\n").atts] == ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"]
    assert [a.name for a in fetch(b"t FETCH 1 fast\r\n").atts] == ["FLAGS", "INTERNALDATE", "RFC822.SIZE"]
    assert "BODY" in [a.name for a in fetch(b"t FETCH 1 FULL\r\n").atts]


def test_sequence_set_semantics():
    s = fetch(b"t FETCH 4:2,* FLAGS\r\n").set
    assert s.select(range(1, 11), star=10) == [2, 3, 4, 10]
    assert SequenceSet.compact([1, 2, 3, 7, 9, 10]) == "1:3,7,9:10"


def test_search_keys():
    c = one(
        b't SEARCH CHARSET UTF-8 OR FROM "alice" (SUBJECT {3}\r\nfoo UNSEEN) NOT DELETED SINCE 1-Feb-2026 UID 1:5\r\n'
    )
    assert isinstance(c, Search) and c.charset == "UTF-8"
    key = c.key
    assert key[0] == "AND"
    assert key[1][0] == (
        "OR",
        ("HEADER", "FROM", "alice"),
        ("AND", (("HEADER", "SUBJECT", "foo"), ("FLAG", "\\Seen", False))),
    )
    assert key[1][1] == ("NOT", ("FLAG", "\\Deleted", True))
    assert key[1][2] == ("SINCE", date(2026, 2, 1))
    assert key[1][3] == ("UID", SequenceSet(((1, 5),)))
    c = one(b"t SEARCH 2:4 HEADER X-Foo bar\r\n")
    assert isinstance(c, Search) and c.key == ("AND", (("SEQ", SequenceSet(((2, 4),))), ("HEADER", "X-FOO", "bar")))


def test_store_forms():
    c = one(b"t STORE 1:2 +FLAGS.SILENT (\\seen $Label1)\r\n")
    assert isinstance(c, Store) and not c.uid
    assert (c.mode, c.silent, c.flags) == ("add", True, ("\\Seen", "$Label1"))
    c = one(b"t UID STORE 5 -FLAGS \\Deleted\r\n")
    assert isinstance(c, Store) and c.uid
    assert (c.mode, c.silent, c.flags) == ("remove", False, ("\\Deleted",))


def test_append_with_date_time():
    c = one(b'A APPEND Drafts (\\Draft) " 2-Nov-2026 10:00:00 +0100" {2+}\r\nhi\r\n')
    assert isinstance(c, Append)
    (m,) = c.messages
    assert m.date == datetime(2026, 11, 2, 10, 0, tzinfo=timezone(timedelta(hours=1)))
    assert c.mailbox == "Drafts" and m.message == b"hi" and m.flags == ("\\Draft",)


def test_list_forms():
    c = one(b'L LIST "" *\r\n')
    assert isinstance(c, List) and c.reference == "" and c.patterns == ("*",)
    c = one(b'L LIST (SPECIAL-USE) "" "%" RETURN (CHILDREN)\r\n')
    assert isinstance(c, List)
    assert c.select == ("SPECIAL-USE",) and c.patterns == ("%",) and c.return_ == ("CHILDREN",)
    c = one(b'L LSUB "" *\r\n')
    assert isinstance(c, List) and c.name == "LSUB" and c.select == ("SUBSCRIBED",)
    c = one(b"L SELECT inbox\r\n")
    assert isinstance(c, Select) and c.mailbox == "INBOX" and not c.readonly
    c = one(b"L EXAMINE inbox\r\n")
    assert isinstance(c, Select) and c.name == "EXAMINE" and c.readonly


def test_authenticate_with_initial_response():
    c = one(b"A AUTHENTICATE external =\r\n")
    assert isinstance(c, Authenticate) and c.mechanism == "EXTERNAL" and c.initial == b"="
    c = one(b"A AUTHENTICATE EXTERNAL\r\n")
    assert isinstance(c, Authenticate) and c.initial is None


@pytest.mark.parametrize(
    "line, fragment",
    [
        (b"a1 FROBNICATE\r\n", "Unknown command"),
        (b"a1 FETCH\r\n", "Missing"),
        (b"a1 FETCH 0 FLAGS\r\n", "range"),
        (b"a1 FETCH 1 (FLAGS BOGUS)\r\n", "Unknown FETCH attribute"),
        (b"a1 FETCH 1 BODY[BOGUS]\r\n", "Invalid section"),
        (b'a1 SELECT "unterminated\r\n', "Unterminated"),
        (b"a1 NOOP extra\r\n", "extra arguments"),
        (b"a1 SEARCH FOO\r\n", "Unknown search key"),
        (b"a1 SEARCH SINCE 31-Feb-2026\r\n", "Invalid date"),
        (b"a1 UID SELECT INBOX\r\n", "Unknown command UID SELECT"),
        (b"a1 FETCH $,1 FLAGS\r\n", "cannot be combined"),
    ],
)
def test_bad_commands_are_tagged_parse_errors(line, fragment):
    (ev,) = events(line)
    assert isinstance(ev, ParseError) and ev.tag == "a1" and fragment in ev.text and not ev.fatal


def test_over_long_line_is_refused_and_the_stream_resynchronises():
    lim = Limits(line=100)
    evs = events(b"a1 NOOP " + b"x" * 1000 + b"\r\na2 NOOP\r\n", lim, chunk=64)
    assert isinstance(evs[0], ParseError) and evs[0].tag == "a1" and "too long" in evs[0].text
    assert isinstance(evs[1], Command) and evs[1].tag == "a2"


def test_synchronising_literal_bomb_is_refused_without_continuation():
    evs = events(b"a1 APPEND INBOX {99999999}\r\na2 NOOP\r\n", Limits(literal=1000))
    assert isinstance(evs[0], ParseError) and evs[0].tag == "a1" and not evs[0].fatal
    assert evs[1].tag == "a2"


def test_non_synchronising_literal_bomb_is_fatal():
    (ev,) = events(b"a1 APPEND INBOX {99999999+}\r\n", Limits(literal=1000))
    assert isinstance(ev, ParseError) and ev.fatal


def test_nesting_limit():
    deep = b"a1 SEARCH " + b"(" * 40 + b"ALL" + b")" * 40 + b"\r\n"
    (ev,) = events(deep, Limits(nesting=16))
    assert isinstance(ev, ParseError) and "Nesting" in ev.text
    ok = b"a1 SEARCH " + b"(" * 5 + b"ALL" + b")" * 5 + b"\r\n"
    assert isinstance(events(ok, Limits(nesting=16))[0], Command)


def test_raw_line_mode_for_sasl_and_idle():
    p = Parser()
    p.expect_line()
    p.feed(b"DONE\r\na2 NOOP\r\n")
    assert p.next_event() == RawLine(b"DONE")
    assert p.next_event().tag == "a2"


def test_clear_drops_pipelined_input():
    p = Parser()
    p.feed(b"a1 STARTTLS\r\na2 LOGIN x y\r\n")
    assert p.next_event().name == "STARTTLS"
    p.clear()
    assert p.next_event() is None


# -- property-based ------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(data):
    evs = events(data, Limits(line=200, literal=100, nesting=5))
    assert all(isinstance(e, (Command, ContinuationNeeded, ParseError, RawLine)) for e in evs)


_tokens = st.sampled_from(
    [
        b"a1",
        b" ",
        b"FETCH",
        b"SEARCH",
        b"UID",
        b"(",
        b")",
        b"[",
        b"]",
        b"<",
        b">",
        b"{3}\r\n",
        b"{2+}\r\n",
        b'"',
        b"\\",
        b"1:*",
        b"BODY.PEEK[",
        b"HEADER.FIELDS",
        b"OR",
        b"NOT",
        b"\r\n",
        b"*",
        b"%",
        b"\x00",
        b"\xff",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_tokens, max_size=40))
def test_grammar_shaped_noise_never_raises(tokens):
    data = b"".join(tokens)
    evs = events(data, Limits(line=200, literal=100, nesting=5), chunk=7)
    assert all(isinstance(e, (Command, ContinuationNeeded, ParseError, RawLine)) for e in evs)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_strings_round_trip_through_serialiser_and_parser(s):
    wire = b"a1 SELECT " + serialise(s) + b"\r\n"
    evs = events(wire)
    assert len(evs) == 1 or isinstance(evs[0], ContinuationNeeded)
    cmd = next(e for e in evs if isinstance(e, Command))
    expected = "INBOX" if s.upper() == "INBOX" else s
    assert isinstance(cmd, Select) and cmd.mailbox == expected


# -- the one registry of command names -----------------------------------------------------

#: One well-formed line per registered name (arguments only); a new name must add its own.
SAMPLES = {
    "CAPABILITY": "",
    "NOOP": "",
    "LOGOUT": "",
    "ID": ' ("name" "test")',
    "STARTTLS": "",
    "AUTHENTICATE": " PLAIN AGEAYg==",
    "LOGIN": " user pass",
    "ENABLE": " UTF8=ACCEPT",
    "NAMESPACE": "",
    "SELECT": " INBOX",
    "EXAMINE": " INBOX",
    "CREATE": " Work",
    "DELETE": " Work",
    "RENAME": " Work Job",
    "SUBSCRIBE": " Work",
    "UNSUBSCRIBE": " Work",
    "LIST": ' "" *',
    "LSUB": ' "" *',
    "STATUS": " INBOX (MESSAGES)",
    "APPEND": " INBOX {2+}\r\nhi",
    "IDLE": "",
    "GETQUOTA": ' ""',
    "GETQUOTAROOT": " INBOX",
    "SETQUOTA": ' "" (STORAGE 512)',
    "SETACL": " INBOX fred +lrs",
    "DELETEACL": " INBOX fred",
    "GETACL": " INBOX",
    "LISTRIGHTS": " INBOX fred",
    "MYRIGHTS": " INBOX",
    "CHECK": "",
    "CLOSE": "",
    "UNSELECT": "",
    "EXPUNGE": "",
    "SEARCH": " ALL",
    "SORT": " (SUBJECT) UTF-8 ALL",
    "THREAD": " REFERENCES UTF-8 ALL",
    "FETCH": " 1 FLAGS",
    "STORE": " 1 +FLAGS (\\Seen)",
    "COPY": " 1 Trash",
    "MOVE": " 1 Trash",
}
UID_SAMPLES = {"EXPUNGE": " 1:3"}


def test_every_registered_name_parses_into_its_registered_class():
    from imap.protocol.commands import UidCommand
    from imap.protocol.grammar import COMMAND_CLASSES, COMMANDS

    assert set(SAMPLES) == set(COMMANDS)
    for name, spec in COMMANDS.items():
        for spelling in (name, name.lower(), name.capitalize()):
            cmd = one(f"t1 {spelling}{SAMPLES[name]}\r\n".encode())
            assert type(cmd) is spec.cls, name
            assert (cmd.tag, cmd.name, cmd.full_name) == ("t1", name, name)
        if spec.uid:
            assert issubclass(spec.cls, UidCommand)
            cmd = one(f"t2 uid {name}{UID_SAMPLES.get(name, SAMPLES[name])}\r\n".encode())
            assert type(cmd) is spec.cls and isinstance(cmd, UidCommand) and cmd.uid
            assert (cmd.name, cmd.full_name) == (name, f"UID {name}")
        else:
            (ev,) = events(f"t3 UID {name}{SAMPLES[name]}\r\n".encode())
            assert isinstance(ev, ParseError) and f"Unknown command UID {name}" in ev.text
    assert {spec.cls for spec in COMMANDS.values()} == COMMAND_CLASSES
    # Command objects are values: frozen, hashable, equal when parsed from the same bytes.
    line = b"t FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM)])\r\n"
    assert one(line) == one(line) and hash(one(line)) == hash(one(line))


def test_acl_commands_parse_into_one_typed_event_rfc_4314_3():
    from imap.protocol.commands import Acl

    setacl = one(b't1 SETACL "Partag&AOk-s/x@y/INBOX" fred -w\r\n')
    assert setacl == Acl(tag="t1", name="SETACL", mailbox="Partag&AOk-s/x@y/INBOX", identifier="fred", rights="-w")
    assert one(b"t2 MYRIGHTS INBOX\r\n") == Acl(tag="t2", name="MYRIGHTS", mailbox="INBOX")
    assert one(b"t3 LISTRIGHTS INBOX {4+}\r\nfred\r\n") == Acl(
        tag="t3", name="LISTRIGHTS", mailbox="INBOX", identifier="fred"
    )
    for line in (b"t4 SETACL INBOX fred\r\n", b"t5 GETACL\r\n", b"t6 DELETEACL INBOX\r\n"):
        with pytest.raises(Exception, match="Missing arguments"):
            one(line)
