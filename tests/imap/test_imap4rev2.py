"""IMAP4rev2 (RFC 9051) beside rev1: what `ENABLE IMAP4rev2` changes, and that rev2 is
advertised beside rev1 (`Session.offer_imap4rev2`) with rev1 the default."""

from __future__ import annotations

import re

import pytest
from imap_fakes import ALICE, sample


@pytest.fixture
def rev2(alice):
    """Alice's session as it will be once rev2 is offered, rev2 enabled."""
    alice.session.offer_imap4rev2 = True
    return alice


async def test_rev2_is_advertised_beside_rev1_and_rev1_stays_the_default(alice):
    caps = (await alice.line("a CAPABILITY")).split("\r\n")[0].split()
    assert caps[2:4] == ["IMAP4rev1", "IMAP4rev2"]
    assert "RECENT 0" in await alice.line("c0 STATUS INBOX (RECENT)")  # rev1 until ENABLE
    assert not alice.session.imap4rev2


async def test_rev2_cannot_be_enabled_when_not_offered(alice):
    alice.session.offer_imap4rev2 = False
    caps = (await alice.line("a CAPABILITY")).split("\r\n")[0].split()
    assert "IMAP4rev1" in caps and "IMAP4rev2" not in caps
    # RFC 5161 3: what is not offered cannot be enabled; ENABLED lists nothing.
    out = await alice.line("b ENABLE IMAP4rev2")
    assert out == "* ENABLED\r\nb OK ENABLE completed\r\n"
    assert not alice.session.imap4rev2
    assert "RECENT 0" in await alice.line("c STATUS INBOX (RECENT)")


async def test_enable_imap4rev2_when_offered(rev2):
    caps = (await rev2.line("a CAPABILITY")).split("\r\n")[0].split()
    assert caps[2:4] == ["IMAP4rev1", "IMAP4rev2"]
    out = await rev2.line("b ENABLE imap4rev2 NOSUCH IMAP4REV2")
    assert out == "* ENABLED IMAP4rev2\r\nb OK ENABLE completed\r\n"
    assert rev2.session.imap4rev2
    # Already enabled: not listed again (RFC 5161 3.1).
    assert (await rev2.line("c ENABLE IMAP4rev2")).startswith("* ENABLED\r\n")


async def test_enable_is_refused_before_authentication(make_session):
    d = make_session()
    d.session.offer_imap4rev2 = True
    assert (await d.line("a ENABLE IMAP4rev2")).startswith("a BAD")
    assert not d.session.imap4rev2


async def test_status_recent_does_not_exist_in_rev2(core, rev2):
    await core.deliver(ALICE, sample("one"))
    await rev2.line("a ENABLE IMAP4rev2")
    assert (await rev2.line("b STATUS INBOX (MESSAGES RECENT)")).startswith("b BAD")
    assert (await rev2.line('c LIST "" "*" RETURN (STATUS (RECENT))')).startswith("c BAD")
    # RFC 9051 6.3.11 STATUS SIZE and DELETED.
    await rev2.line("d SELECT INBOX")
    await rev2.line("e STORE 1 +FLAGS (\\Deleted)")
    out = await rev2.line("f STATUS INBOX (MESSAGES SIZE DELETED)")
    assert re.search(r'\* STATUS "INBOX" \(MESSAGES 1 SIZE [1-9]\d* DELETED 1\)', out)


async def test_rev2_list_says_nonexistent(rev2):
    await rev2.line("a CREATE Projets/2026")
    assert '(\\Noselect \\HasChildren) "/" "Projets"' in await rev2.line('b LIST "" "%"')
    await rev2.line("c ENABLE IMAP4rev2")
    out = await rev2.line('d LIST "" "%"')
    assert '* LIST (\\NonExistent \\HasChildren) "/" "Projets"' in out
    assert '* LIST (\\HasNoChildren \\Sent) "/" "Sent"' in out
    # RFC 9051 6.3.9: the delimiter query is unchanged.
    assert '* LIST (\\Noselect) "/" ""' in await rev2.line('e LIST "" ""')
    # LIST-EXTENDED options work the same.
    out = await rev2.line('f LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (STATUS (MESSAGES SIZE))')
    assert '* LIST (\\NonExistent \\HasChildren) "/" "Projets" ("CHILDINFO" ("SUBSCRIBED"))' in out
    assert '* STATUS "INBOX" (MESSAGES 0 SIZE 0)' in out


async def test_rev2_select_sends_list_and_no_recent_or_unseen(core, rev2):
    await core.deliver(ALICE, sample("one"))
    await rev2.line("a CREATE INBOX/Sub")
    rev1 = await rev2.line("b SELECT INBOX")
    assert "RECENT" in rev1
    assert "[UNSEEN 1]" in rev1 and "* LIST" not in rev1
    # RFC 5161 3.1: ENABLE only before a folder is selected.
    assert (await rev2.line("c ENABLE IMAP4rev2")).startswith("c BAD")
    assert not rev2.session.imap4rev2
    await rev2.line("c CLOSE")
    await rev2.line("c ENABLE IMAP4rev2")
    out = await rev2.line("d SELECT INBOX")
    assert "RECENT" not in out and "[UNSEEN" not in out
    assert '* LIST (\\HasChildren) "/" "INBOX"\r\n' in out
    assert "* 1 EXISTS" in out and out.endswith("d OK [READ-WRITE] SELECT completed\r\n")
    out = await rev2.line("e EXAMINE Drafts")
    assert '* LIST (\\HasNoChildren \\Drafts) "/" "Drafts"\r\n' in out
    assert "[NONEXISTENT]" in await rev2.line("f SELECT Absent")
