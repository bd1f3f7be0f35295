"""The session state machine through bytes, against the real Store (SQLite) and Events."""

from __future__ import annotations

import base64
import re
from datetime import UTC

from imap_fakes import ALICE, BOB, BOB_CERT, NOKEY, ORG, sample

from imap.session import Close, StartTLS, State


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


# -- authentication ------------------------------------------------------------------------


async def test_greeting_and_capabilities_before_and_after_tls(make_session):
    plain = make_session(tls=False)
    greet = b"".join(r.to_bytes() for r in plain.session.greeting())
    assert b"STARTTLS" in greet and b"LOGINDISABLED" in greet and b"AUTH=EXTERNAL" not in greet
    tls = make_session()
    out = await tls.line("c CAPABILITY")
    for cap in (
        "IMAP4rev1",
        "AUTH=EXTERNAL",
        "AUTH=PLAIN",
        "AUTH=OAUTHBEARER",
        "AUTH=XOAUTH2",
        "SASL-IR",
        "LITERAL+",
        "IDLE",
        "NAMESPACE",
        "UIDPLUS",
        "SPECIAL-USE",
        "MOVE",
    ):
        assert cap in out
    assert "STARTTLS" not in out and "LOGINDISABLED" not in out
    assert b"AUTH=PLAIN" not in greet and b"AUTH=OAUTHBEARER" not in greet


async def test_only_capability_starttls_noop_logout_before_tls(make_session):
    d = make_session(tls=False)
    assert "a NO [PRIVACYREQUIRED]" in await d.line("a AUTHENTICATE EXTERNAL =")
    assert "b NO [PRIVACYREQUIRED]" in await d.line("b LOGIN user pass")
    assert "c NO [PRIVACYREQUIRED]" in await d.line("c SELECT INBOX")
    assert "d OK" in await d.line("d NOOP")
    out = await d.send(b"e STARTTLS\r\nf AUTHENTICATE EXTERNAL =\r\n")
    assert out == b"e OK Begin TLS negotiation now\r\n"  # f was injected in clear: dropped
    assert isinstance(d.actions[-1], StartTLS)
    d.session.tls_started(b"cert-alice")
    assert "g OK" in await d.line("g AUTHENTICATE EXTERNAL =")


async def test_external_without_certificate_fails(make_session):
    d = make_session(cert=None)
    out = await d.line("a AUTHENTICATE EXTERNAL =")
    assert out.startswith("a NO [AUTHENTICATIONFAILED]") and "certificate" in out
    assert d.session.state is State.NOT_AUTHENTICATED


async def test_external_with_untrusted_certificate_fails(make_session):
    out = await make_session(cert=b"forged").line("a AUTHENTICATE EXTERNAL =")
    assert out.startswith("a NO [AUTHENTICATIONFAILED]")


async def test_external_with_continuation_and_authzid(make_session):
    d = make_session()
    assert (await d.line("a AUTHENTICATE EXTERNAL")) == "+ \r\n"
    out = await d.line(b64(ORG))
    assert out.startswith("a OK") and d.session.mailbox == ORG


async def test_external_cancel_and_bad_base64(make_session):
    d = make_session()
    await d.line("a AUTHENTICATE EXTERNAL")
    assert (await d.line("*")).startswith("a BAD")
    assert (await d.line("b AUTHENTICATE EXTERNAL !!!")).startswith("b BAD")
    assert d.session.state is State.NOT_AUTHENTICATED


async def test_authzid_not_entitled_is_refused(make_session):
    d = make_session()
    out = await d.line(f"a AUTHENTICATE EXTERNAL {b64(BOB)}")
    assert out.startswith("a NO [AUTHORIZATIONFAILED]")
    assert d.session.state is State.NOT_AUTHENTICATED


async def test_repeated_failures_end_the_connection(make_session):
    d = make_session(cert=None)
    for i in range(2):
        await d.line(f"a{i} AUTHENTICATE EXTERNAL =")
    out = await d.line("a9 AUTHENTICATE EXTERNAL =")
    assert "* BYE" in out and isinstance(d.actions[-1], Close)


async def test_login_with_a_wrong_app_password_is_refused(make_session):
    d = make_session()
    out = await d.line(f"a LOGIN {ALICE} secret")
    assert out.startswith("a NO [AUTHENTICATIONFAILED]") and d.session.state is State.NOT_AUTHENTICATED


# -- state rules -----------------------------------------------------------------------------


async def test_commands_in_the_wrong_state_are_bad_and_change_nothing(make_session, alice):
    assert (await make_session().line("a SELECT INBOX")).startswith("a BAD")
    assert (await alice.line("b FETCH 1 FLAGS")).startswith("b BAD")
    assert (await alice.line("c AUTHENTICATE EXTERNAL =")).startswith("c BAD")
    assert alice.session.state is State.AUTHENTICATED


async def test_principal_reaches_only_its_mailbox(core, alice):
    await core.deliver(BOB, sample("for bob", to=BOB))
    out = await alice.line("s SELECT INBOX")
    assert "* 0 EXISTS" in out
    out = await alice.line('l LIST "" "*"')
    assert "bob" not in out.lower()


# -- folders -------------------------------------------------------------------------------


async def test_list_patterns_and_special_use(alice):
    await alice.line("c1 CREATE Projets/2026")
    await alice.line("c2 CREATE Projets/2027/")
    out = await alice.line('l LIST "" "%"')
    assert '* LIST (\\HasNoChildren \\Sent) "/" "Sent"' in out
    assert '* LIST (\\Noselect \\HasChildren) "/" "Projets"' in out
    assert "2026" not in out
    out = await alice.line('l LIST "Projets/" "%"')
    assert '"Projets/2026"' in out and '"Projets/2027"' in out
    assert '(\\Noselect) "/" ""' in await alice.line('l LIST "" ""')
    out = await alice.line('l LIST (SPECIAL-USE) "" "*"')
    assert "INBOX" not in out and "\\Trash" in out
    assert '"INBOX"' in await alice.line('l LIST "" inbox')


async def test_create_rename_delete_subscribe_status(alice):
    assert (await alice.line("a CREATE Work")).startswith("a OK")
    assert "[ALREADYEXISTS]" in await alice.line("b CREATE Work")
    assert (await alice.line('c CREATE "bad*name"')).startswith("c NO")
    assert (await alice.line("c CREATE bad*name")).startswith("c BAD")
    await alice.line("d CREATE Work/Sub")
    assert (await alice.line("e RENAME Work Job")).startswith("e OK")
    out = await alice.line('f LIST "" "*"')
    assert '"Job/Sub"' in out and '"Work' not in out
    assert (await alice.line("g UNSUBSCRIBE Job")).startswith("g OK")
    assert '"Job"' not in await alice.line('h LSUB "" "*"')
    out = await alice.line("i STATUS Job (MESSAGES UIDNEXT UIDVALIDITY UNSEEN RECENT)")
    assert re.search(r'\* STATUS "Job" \(MESSAGES 0 UIDNEXT 1 UIDVALIDITY \d+ UNSEEN 0 RECENT 0\)', out)
    assert (await alice.line("j DELETE Job")).startswith("j OK")
    assert "[NONEXISTENT]" in await alice.line("k DELETE Job")
    assert (await alice.line("l DELETE INBOX")).startswith("l NO")
    assert '* NAMESPACE (("" "/")) NIL NIL' in await alice.line("m NAMESPACE")


# -- selected state --------------------------------------------------------------------------


async def seed(core, n: int = 3):
    for i in range(n):
        await core.deliver(ALICE, sample(f"msg {i}", frm=f"Sender{i} <s{i}@test.mss>"))


async def test_select_examine_and_read_only(core, alice):
    await seed(core)
    await core.deliver(ALICE, sample("seen one"), flags={"\\Seen", "$Label"})
    out = await alice.line("a EXAMINE INBOX")
    # EXAMINE shows the unclaimed messages as recent without taking them (RFC 3501 6.3.2).
    assert "* 4 EXISTS" in out and "* 4 RECENT" in out and "[UIDVALIDITY" in out and "[UIDNEXT 5]" in out
    assert "$Label" in out.split("\r\n")[0]
    assert "a OK [READ-ONLY]" in out
    assert "[READ-ONLY]" in await alice.line("b STORE 1 +FLAGS (\\Seen)")
    out = await alice.line("c FETCH 1 BODY[]")
    assert "\\Seen" not in out  # EXAMINE never sets \Seen
    out = await alice.line("d SELECT INBOX")
    assert "d OK [READ-WRITE]" in out and "* 4 RECENT" in out
    assert "* 0 RECENT" in await alice.line("e SELECT INBOX")  # taken by the SELECT before


async def test_fetch_items(core, alice):
    await seed(core, 2)
    await alice.line("s SELECT INBOX")
    out = await alice.line("f FETCH 2 (UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY)")
    assert out.startswith('* 2 FETCH (UID 2 FLAGS (\\Recent) INTERNALDATE "02-Nov-2026 09:00:00 +0000" RFC822.SIZE ')
    assert '"msg 1" (("Sender1" NIL "s1" "test.mss"))' in out
    assert 'BODY ("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 11 1)' in out
    out = await alice.line("u UID FETCH 1 (FLAGS)")
    assert out.startswith("* 1 FETCH (UID 1 FLAGS (\\Recent))")  # UID always returned
    out = await alice.line("p FETCH 1 (BODY.PEEK[TEXT]<0.4> RFC822.HEADER)")
    assert "BODY[TEXT]<0> {4}\r\nBody" in out and "RFC822.HEADER {" in out
    assert "\\Seen" not in out
    out = await alice.line("r FETCH 1 RFC822.TEXT")
    assert "FLAGS (\\Recent \\Seen)" in out
    assert (await alice.line("x FETCH 9 FLAGS")).startswith("x BAD")
    assert (await alice.line("y UID FETCH 9 FLAGS")).startswith("y OK")


async def test_store_forms_and_silent(core, alice):
    await seed(core, 3)
    await alice.line("s SELECT INBOX")
    out = await alice.line("a STORE 1:2 +FLAGS (\\Flagged $Todo)")
    assert "* 1 FETCH (FLAGS ($Todo \\Flagged \\Recent))" in out and "* 2 FETCH" in out
    assert (await alice.line("b STORE 1 -FLAGS.SILENT ($Todo)")) == "b OK STORE completed\r\n"
    out = await alice.line("c UID STORE 3 FLAGS (\\Answered)")
    assert "* 3 FETCH (UID 3 FLAGS (\\Answered \\Recent))" in out
    assert (await alice.line("d STORE 1 +FLAGS (\\Bogus)")).startswith("d BAD")
    out = await alice.line("e FETCH 1:3 FLAGS")
    assert "* 1 FETCH (FLAGS (\\Flagged \\Recent))" in out and "* 3 FETCH (FLAGS (\\Answered \\Recent))" in out


async def test_search_keys(core, alice):
    from datetime import datetime

    await core.deliver(
        ALICE,
        sample("=?utf-8?q?R=C3=A9sultats?= labo", frm="Labo <labo@test.mss>", date="Tue, 03 Nov 2026 08:00:00 +0000"),
        when=datetime(2026, 11, 3, 8, tzinfo=UTC),
    )
    await core.deliver(
        ALICE,
        sample("Compte rendu", frm="Bob <bob@test.mss>", extra="X-Priority: 1\r\n"),
        flags={"\\Seen"},
        when=datetime(2026, 11, 5, 8, tzinfo=UTC),
    )
    await alice.line("s SELECT INBOX")

    async def search(q: str) -> list[int]:
        out = await alice.line("q " + q)
        assert "q OK" in out, out
        return [int(x) for x in re.search(r"\* SEARCH ?([\d ]*)", out).group(1).split()]

    assert await search("SEARCH ALL") == [1, 2]
    assert await search("SEARCH UNSEEN") == [1]
    assert await search("SEARCH SEEN FROM bob") == [2]
    assert await search('SEARCH CHARSET UTF-8 SUBJECT "résultats"') == [1]
    assert await search("SEARCH OR SUBJECT compte FROM labo") == [1, 2]
    assert await search("SEARCH NOT FROM bob") == [1]
    assert await search("SEARCH SINCE 4-Nov-2026") == [2]
    assert await search("SEARCH BEFORE 4-Nov-2026") == [1]
    assert await search("SEARCH ON 3-Nov-2026") == [1]
    assert await search("SEARCH SENTON 3-Nov-2026") == [1]
    assert await search("SEARCH SENTBEFORE 3-Nov-2026") == [2]
    assert await search("SEARCH HEADER X-Priority 1") == [2]
    assert await search("SEARCH LARGER 10 SMALLER 100000") == [1, 2]
    assert await search("SEARCH 2:*") == [2]
    assert await search("UID SEARCH UID 2") == [2]
    assert await search("SEARCH BODY anything") == []  # ciphertext: never matches
    assert await search("SEARCH TEXT labo") == [1]  # outer header fields only
    assert "[BADCHARSET" in await alice.line("z SEARCH CHARSET KOI8-R ALL")


async def test_expunge_and_updates_from_another_session(core, alice, make_session):
    await seed(core, 4)
    await alice.line("s SELECT INBOX")
    other = make_session()
    await other.line("a AUTHENTICATE EXTERNAL =")
    await other.line("s SELECT INBOX")
    await other.line("t STORE 2,4 +FLAGS.SILENT (\\Deleted)")
    assert "* 4 EXPUNGE\r\n* 2 EXPUNGE" in await other.line("e EXPUNGE")  # highest first
    await core.deliver(ALICE, sample("new"))
    # FETCH must not carry EXPUNGE (RFC 9051 7.5.1), but may carry EXISTS.
    out = await alice.line("f FETCH 1 FLAGS")
    assert "EXPUNGE" not in out and "* 5 EXISTS" in out
    out = await alice.line("n NOOP")
    assert out.index("* 4 EXPUNGE") < out.index("* 2 EXPUNGE") < out.index("n OK")
    out = await alice.line("u UID FETCH 1:* FLAGS")
    assert [int(x) for x in re.findall(r"UID (\d+)", out)] == [1, 3, 5]
    assert "* 3 FETCH (UID 5" in out


async def test_uid_expunge_and_close(core, alice):
    await seed(core, 3)
    await alice.line("s SELECT INBOX")
    await alice.line("a STORE 1:3 +FLAGS.SILENT (\\Deleted)")
    assert "* 2 EXPUNGE" in await alice.line("b UID EXPUNGE 2")
    out = await alice.line("c CLOSE")
    assert "EXPUNGE" not in out and alice.session.state is State.AUTHENTICATED
    out = await alice.line("d SELECT INBOX")
    assert "* 0 EXISTS" in out
    assert (await alice.line("e UNSELECT")).startswith("e OK")


async def test_copy_move_copyuid(core, alice):
    await seed(core, 3)
    await alice.line("s SELECT INBOX")
    out = await alice.line("c COPY 1:2 Trash")
    assert re.search(r"c OK \[COPYUID \d+ 1:2 1:2\]", out)
    assert "[TRYCREATE]" in await alice.line("d COPY 1 Nowhere")
    out = await alice.line("m UID MOVE 3 Trash")
    assert re.search(r"\* OK \[COPYUID \d+ 3 3\]", out) and "* 3 EXPUNGE" in out
    assert "MESSAGES 3" in await alice.line("t STATUS Trash (MESSAGES)")
    assert "MESSAGES 2" in await alice.line("t STATUS INBOX (MESSAGES)")


async def test_append(core, alice):
    raw = sample("draft")
    out = await alice.send(b'a APPEND Drafts (\\Draft \\Seen) "02-Nov-2026 10:00:00 +0100" {%d}\r\n' % len(raw))
    assert out == b"+ Ready for literal data\r\n"
    out = (await alice.send(raw + b"\r\n")).decode()
    assert re.search(r"a OK \[APPENDUID \d+ 1\]", out)
    assert core.sealer.appended == [raw]
    out = await alice.line("s SELECT Drafts")
    assert "* 1 EXISTS" in out
    out = await alice.line("f FETCH 1 (FLAGS INTERNALDATE)")
    assert "FLAGS (\\Draft \\Recent \\Seen)" in out and '"02-Nov-2026 09:00:00 +0000"' in out
    assert "[TRYCREATE]" in (await alice.send(b"b APPEND Nowhere {2+}\r\nhi\r\n")).decode()
    # APPEND to the selected folder: the client hears of it.
    out = (await alice.send(b"c APPEND Drafts {%d+}\r\n" % len(raw) + raw + b"\r\n")).decode()
    assert "* 2 EXISTS" in out and "c OK" in out


async def test_append_to_mailbox_without_key_is_refused(make_session, core):
    d = make_session(cert=BOB_CERT)
    await d.line(f"a AUTHENTICATE EXTERNAL {b64(NOKEY)}")
    out = (await d.send(b"b APPEND INBOX {2+}\r\nhi\r\n")).decode()
    assert out.startswith("b NO") and "encryption certificate" in out
    assert (await core.store.messages(NOKEY, (await core.store.get_folder(NOKEY, "INBOX")).id)) == []


async def test_idle_pushes_changes_until_done(core, alice):
    await seed(core, 1)
    await alice.line("s SELECT INBOX")
    assert (await alice.line("i IDLE")) == "+ idling\r\n"
    watch = alice.session.idle.watch
    await core.deliver(ALICE, sample("pushed"))
    assert await watch.wait(1)
    out = b"".join(r.to_bytes() for r in await alice.session.idle_updates()).decode()
    assert out == "* 2 EXISTS\r\n* 2 RECENT\r\n"  # the new one is recent to this session too
    assert (await alice.line("DONE")) == "i OK IDLE terminated\r\n"
    assert alice.session.idle is None
    assert (await alice.line("n NOOP")).startswith("n OK")


async def test_logout(alice):
    out = await alice.line("z LOGOUT")
    assert out == "* BYE MSS IMAP logging out\r\nz OK LOGOUT completed\r\n"
    assert isinstance(alice.actions[-1], Close)


async def test_parse_errors_leave_state_alone(core, alice):
    await alice.line("s SELECT INBOX")
    assert (await alice.line("a FROB")).startswith("a BAD")
    assert (await alice.line("b FETCH 1 (FLAGS")).startswith("b BAD")
    assert alice.session.state is State.SELECTED
    out = await alice.send(b"c APPEND INBOX {99999999999}\r\n")
    assert out.startswith(b"c BAD") and alice.session.state is State.SELECTED
    out = await alice.send(b"d APPEND INBOX {99999999999+}\r\n")
    assert b"d BAD" in out and b"* BYE" in out and isinstance(alice.actions[-1], Close)


async def test_large_literals_only_after_authentication(make_session):
    d = make_session()
    out = await d.send(b"a APPEND INBOX {100000}\r\n")
    assert out.startswith(b"a BAD") and b"Literal too large" in out
    await d.line("b AUTHENTICATE EXTERNAL =")
    assert await d.send(b"c APPEND INBOX {100000}\r\n") == b"+ Ready for literal data\r\n"
