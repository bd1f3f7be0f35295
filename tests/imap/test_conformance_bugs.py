"""Regression tests for the protocol bugs a conformance suite and imapclient's live tests found
(issue 11), through the sans-IO session over the real store (tests/imap/conftest.py)."""

from __future__ import annotations

import base64
import re

from imap_fakes import ALICE

MSG = (
    "From: Bob <bob@hopital.test>\r\n"
    "To: <user (team)@ (main site) hopital.test>\r\n"
    "Subject: hello\r\n"
    "X-Only-Here: yes\r\n"
    "\r\n"
    "body\r\n"
)
PLAIN_MSG = "From: carol@hopital.test\r\nTo: dave@hopital.test\r\nSubject: other\r\n\r\nbody\r\n"


async def _append(d, text: str, folder: str = "INBOX") -> str:
    data = text.encode()
    return await d.send(f"ap APPEND {folder} {{{len(data)}+}}\r\n".encode() + data + b"\r\n")


async def _filled(alice):
    for text in (MSG, PLAIN_MSG):
        out = await _append(alice, text)
        assert b"ap OK" in out, out
    assert "s OK" in await alice.line("s SELECT INBOX")
    return alice


# -- atoms: `~` is an ATOM-CHAR unless it opens a literal8 (RFC 3501 9, RFC 3516 4.2) ------------


async def test_tilde_not_followed_by_a_brace_is_an_atom_character(alice) -> None:
    out = await alice.line('l LIST "" ~foo')
    assert "l OK" in out and "BAD" not in out
    out = await alice.line("c CREATE ~archive")
    assert "c OK" in out, out
    out = await alice.line('l2 LIST "" ~archive')
    assert '"~archive"' in out or " ~archive" in out, out


# -- SEARCH HEADER <field> "" and address comments (RFC 3501 6.4.4) -----------------------


async def test_search_header_with_an_empty_string_matches_only_messages_with_the_field(alice) -> None:
    d = await _filled(alice)
    out = await d.line('h SEARCH HEADER X-Only-Here ""')
    assert re.search(r"\* SEARCH 1\r\n", out), out
    out = await d.line('h2 SEARCH HEADER X-Absent ""')
    assert re.search(r"\* SEARCH\r\n", out), out
    out = await d.line('h3 SEARCH HEADER Subject ""')  # both have a Subject
    assert re.search(r"\* SEARCH 1 2\r\n", out), out


async def test_address_search_sees_through_comments(alice) -> None:
    d = await _filled(alice)
    out = await d.line("t SEARCH TO user@hopital.test")
    assert re.search(r"\* SEARCH 1\r\n", out), out
    out = await d.line("t2 SEARCH TO nobody@hopital.test")
    assert re.search(r"\* SEARCH\r\n", out), out
    out = await d.line('t3 SEARCH FROM "bob@hopital"')
    assert re.search(r"\* SEARCH 1\r\n", out), out


# -- MOVE into the selected folder itself (RFC 6851 3.3) -----------------------------------


async def test_move_to_the_selected_folder_succeeds_like_copy_then_expunge(alice) -> None:
    d = await _filled(alice)
    out = await d.line("m UID MOVE 1 INBOX")
    assert "m OK" in out, out
    assert re.search(r"\* OK \[COPYUID \d+ 1 3\]", out), out
    assert "* 1 EXPUNGE" in out and "* 2 EXISTS" in out, out
    out = await d.line("f UID FETCH 1:* (UID)")
    assert re.findall(r"UID (\d+)", out) == ["2", "3"], out


async def test_move_of_nothing_to_itself_changes_nothing(alice) -> None:
    d = await _filled(alice)
    out = await d.line("m UID MOVE 99 INBOX")
    assert "m OK" in out and "EXPUNGE" not in out


# -- SASL LOGIN on IMAP (draft-murchison-sasl-login; curl uses it) ----------------------


async def test_authenticate_login_is_offered_and_works(make_session) -> None:
    d = make_session()
    caps = await d.line("c CAPABILITY")
    assert "AUTH=LOGIN" in caps, caps
    assert (await d.line("a AUTHENTICATE LOGIN")).startswith("+ " + base64.b64encode(b"Username:").decode())
    assert (await d.line(base64.b64encode(ALICE.encode()).decode())).startswith(
        "+ " + base64.b64encode(b"Password:").decode()
    )
    out = await d.line(base64.b64encode(b"alice-app-pass").decode())
    assert out.startswith("a OK"), out
    assert d.session.mailbox == ALICE


async def test_authenticate_login_with_a_wrong_password_is_refused(make_session) -> None:
    d = make_session()
    await d.line("a AUTHENTICATE LOGIN")
    await d.line(base64.b64encode(ALICE.encode()).decode())
    out = await d.line(base64.b64encode(b"wrong").decode())
    assert out.startswith("a NO [AUTHENTICATIONFAILED]"), out
    assert d.session.mailbox is None


# -- a new keyword: FLAGS and PERMANENTFLAGS to every session on the folder (RFC 3501 7.2.6) --


async def test_a_new_keyword_is_announced_to_the_storing_session_and_the_others(alice, make_session) -> None:
    d = await _filled(alice)
    other = make_session()
    assert "a0 OK" in await other.line("a0 AUTHENTICATE EXTERNAL =")
    assert "s OK" in await other.line("s SELECT INBOX")
    out = await d.line("k STORE 1 +FLAGS ($Urgent)")
    lines = out.splitlines()
    flags_at = next(i for i, ln in enumerate(lines) if ln.startswith("* FLAGS ("))
    fetch_at = next(i for i, ln in enumerate(lines) if " FETCH " in ln)
    assert flags_at < fetch_at and "$Urgent" in lines[flags_at], out
    assert any(ln.startswith("* OK [PERMANENTFLAGS (") and "$Urgent" in ln and "\\*" in ln for ln in lines), out
    # Again: already known, no FLAGS line this time.
    assert "* FLAGS" not in await d.line("k2 STORE 2 +FLAGS ($Urgent)")
    # The other session learns of it at its next command, before the FETCH that shows it.
    out = await other.line("n NOOP")
    assert "* FLAGS (" in out and "$Urgent" in out and out.index("* FLAGS") < out.index("FETCH"), out
    assert "* FLAGS" not in await other.line("n2 NOOP")


async def test_examine_announces_new_keywords_with_empty_permanentflags(alice, make_session) -> None:
    d = await _filled(alice)
    reader = make_session()
    assert "a0 OK" in await reader.line("a0 AUTHENTICATE EXTERNAL =")
    out = await reader.line("e EXAMINE INBOX")
    assert "[PERMANENTFLAGS ()]" in out, out
    await d.line("k STORE 1 +FLAGS (Projet)")
    out = await reader.line("n NOOP")
    assert "Projet" in out and "[PERMANENTFLAGS ()]" in out, out


# -- \Recent (RFC 3501 2.3.2) ---------------------------------------------------------------


async def test_recent_belongs_to_the_first_session_that_selects(alice, make_session) -> None:
    await _append(alice, MSG)
    await _append(alice, PLAIN_MSG)
    other = make_session()
    assert "a0 OK" in await other.line("a0 AUTHENTICATE EXTERNAL =")
    assert "* 2 RECENT" in await other.line("x EXAMINE INBOX")  # EXAMINE looks, takes nothing
    out = await alice.line("s1 STATUS INBOX (RECENT)")
    assert "RECENT 2" in out, out
    out = await alice.line("s SELECT INBOX")
    assert "* 2 RECENT" in out, out
    assert "\\Recent" in await alice.line("f FETCH 1 FLAGS")
    assert re.search(r"\* SEARCH 1 2\r\n", await alice.line("r SEARCH RECENT"))
    assert re.search(r"\* SEARCH 1 2\r\n", await alice.line("n SEARCH NEW"))
    assert re.search(r"\* SEARCH\r\n", await alice.line("o SEARCH OLD"))
    # The other session comes second: nothing is recent to it, now or later.
    out = await other.line("y SELECT INBOX")
    assert "* 0 RECENT" in out and "\\Recent" not in await other.line("f FETCH 1:* FLAGS")
    assert re.search(r"\* SEARCH 1 2\r\n", await other.line("o SEARCH OLD"))
    assert "RECENT 0" in await other.line("s2 STATUS INBOX (RECENT)")


async def test_a_select_with_nothing_new_to_claim_writes_nothing(alice, make_session, core) -> None:
    """The claim of \\Recent is a write transaction: a SELECT whose folder shows nothing
    unclaimed makes none, and a message arriving after it is still recent to it."""
    await _append(alice, MSG)
    assert "* 1 RECENT" in await alice.line("s SELECT INBOX")
    other = make_session()
    assert "a0 OK" in await other.line("a0 AUTHENTICATE EXTERNAL =")
    commits = core.store.commit.commits
    out = await other.line("s SELECT INBOX")
    assert "* 1 EXISTS" in out and "* 0 RECENT" in out, out
    assert core.store.commit.commits == commits
    writer = make_session()
    assert "a0 OK" in await writer.line("a0 AUTHENTICATE EXTERNAL =")
    await _append(writer, PLAIN_MSG)
    out = await other.line("n NOOP")
    assert "* 2 EXISTS" in out and "* 1 RECENT" in out, out
    assert "\\Recent" in await other.line("f FETCH 2 FLAGS")


async def test_a_message_landing_between_the_folder_read_and_the_list_is_recent_to_the_select(
    alice, make_session, core, monkeypatch
) -> None:
    """SELECT read a folder with nothing to claim, then a delivery came before its list was
    read: the message is in the list, so it is this session's \\Recent, not the next one's."""
    await _append(alice, MSG)
    assert "* 1 RECENT" in await alice.line("s SELECT INBOX")
    real = core.store.messages
    landed = []

    async def messages(mailbox, folder_id, known_state=None, reader=None):
        if not landed:
            landed.append(await _append(writer, PLAIN_MSG))
        return await real(mailbox, folder_id, known_state, reader=reader)

    writer = make_session()
    assert "a0 OK" in await writer.line("a0 AUTHENTICATE EXTERNAL =")
    other = make_session()
    assert "a0 OK" in await other.line("a0 AUTHENTICATE EXTERNAL =")
    monkeypatch.setattr(core.store, "messages", messages)
    out = await other.line("s SELECT INBOX")
    assert b"ap OK" in landed[0]
    assert "* 2 EXISTS" in out and "* 1 RECENT" in out, out
    assert "\\Recent" in await other.line("f FETCH 2 FLAGS")
    third = make_session()
    assert "a0 OK" in await third.line("a0 AUTHENTICATE EXTERNAL =")
    assert "* 0 RECENT" in await third.line("s SELECT INBOX")


async def test_a_message_arriving_is_recent_to_the_session_that_has_the_folder_selected(alice, make_session) -> None:
    assert "s OK" in await alice.line("s SELECT INBOX")
    writer = make_session()
    assert "a0 OK" in await writer.line("a0 AUTHENTICATE EXTERNAL =")
    await _append(writer, MSG)
    out = await alice.line("n NOOP")
    assert "* 1 EXISTS" in out and "* 1 RECENT" in out, out
    assert "\\Recent" in await alice.line("f FETCH 1 FLAGS")


async def test_copies_are_recent_to_the_next_session_that_selects_their_folder(alice, make_session) -> None:
    d = await _filled(alice)
    assert "c OK" in await d.line("c COPY 1:2 Trash")
    other = make_session()
    assert "a0 OK" in await other.line("a0 AUTHENTICATE EXTERNAL =")
    assert "* 2 RECENT" in await other.line("t SELECT Trash")


async def test_imap4rev2_sessions_see_nothing_recent(alice) -> None:
    await _append(alice, MSG)
    alice.session.offer_imap4rev2 = True
    assert "e OK" in await alice.line("e ENABLE IMAP4rev2")
    out = await alice.line("s SELECT INBOX")
    assert "RECENT" not in out and "\\Recent" not in await alice.line("f FETCH 1 FLAGS")


async def test_a_selected_folder_whose_id_a_new_folder_took_is_gone_not_replaced(alice, make_session, core) -> None:
    """SQLite gives a folder created after a deletion the deleted folder's id: a session that
    still has the deleted folder selected sees its messages expunged, never the new folder's
    messages under the old UIDVALIDITY (RFC 3501 2.3.1.1)."""
    assert "c OK" in await alice.line("c CREATE Projets")
    await _append(alice, MSG, "Projets")
    out = await alice.line("s SELECT Projets")
    assert "* 1 EXISTS" in out, out
    old_id = alice.session.view.info.id
    other = make_session()
    assert "a0 OK" in await other.line("a0 AUTHENTICATE EXTERNAL =")
    assert "d OK" in await other.line("d DELETE Projets")
    assert "c OK" in await other.line("c CREATE Autre")
    for text in (PLAIN_MSG, MSG):
        await _append(other, text, "Autre")
    autre = await core.store.get_folder(ALICE, "Autre")
    out = await alice.line("n NOOP")
    assert "* 1 EXPUNGE" in out and "EXISTS" not in out, (autre.id == old_id, out)
    out = await alice.line("f FETCH 1:* (FLAGS)")
    assert "FETCH (" not in out, out
