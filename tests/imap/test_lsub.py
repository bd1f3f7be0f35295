"""LSUB (RFC 3501 6.3.9) and whether CREATE subscribes: the regression tests of issue 11.

Folders here are real (the SQLite `Store` behind the test core); only the PKI is faked.
"""

from __future__ import annotations


def lines(out: str, kind: str = "LSUB") -> list[str]:
    return [x for x in out.split("\r\n") if x.startswith(f"* {kind} ")]


async def test_percent_stopping_at_an_unsubscribed_parent_answers_it_noselect(alice):
    assert (await alice.line("a CREATE Projets/2026")).startswith("a OK")
    # The parent exists too, but is not subscribed; only its child is.
    assert (await alice.line("b CREATE Projets")).startswith("b OK")
    assert (await alice.line("c UNSUBSCRIBE Projets")).startswith("c OK")
    out = await alice.line('d LSUB "" "%"')
    assert '* LSUB (\\Noselect \\HasChildren) "/" "Projets"' in out
    assert "Projets/2026" not in out
    # "*" reaches the child itself: the unsubscribed parent is not answered.
    out = await alice.line('e LSUB "" "*"')
    assert '"Projets/2026"' in out
    assert '"Projets"' not in out


async def test_a_parent_that_does_not_exist_is_answered_for_its_subscribed_child(alice):
    await alice.line("a CREATE Dossiers/Patients/Dupont")
    out = await alice.line('b LSUB "" "%"')
    assert '* LSUB (\\Noselect \\HasChildren) "/" "Dossiers"' in out
    out = await alice.line('c LSUB "Dossiers/" "%"')
    assert '* LSUB (\\Noselect \\HasChildren) "/" "Dossiers/Patients"' in out
    assert "Dupont" not in out


async def test_the_parent_goes_once_its_last_subscribed_child_is_unsubscribed(alice):
    await alice.line("a CREATE Work/A")
    await alice.line("b CREATE Work/B")
    assert len([x for x in lines(await alice.line('c LSUB "" "%"')) if '"Work"' in x]) == 1
    await alice.line("d UNSUBSCRIBE Work/A")
    assert '"Work"' in await alice.line('e LSUB "" "%"')  # Work/B is still subscribed
    assert (await alice.line("f UNSUBSCRIBE Work/B")).startswith("f OK")
    out = await alice.line('g LSUB "" "%"')
    assert '"Work"' not in out
    assert '"INBOX"' in out  # the rest is still listed
    # Subscribing again brings it back; deleting the child takes it away.
    await alice.line("h SUBSCRIBE Work/B")
    assert '"Work"' in await alice.line('i LSUB "" "%"')
    await alice.line("j DELETE Work/B")
    assert '"Work"' not in await alice.line('k LSUB "" "%"')


async def test_a_subscribed_parent_is_answered_without_noselect(alice):
    await alice.line("a CREATE Archive/2025")
    await alice.line("b CREATE Archive")
    out = await alice.line('c LSUB "" "%"')
    assert '* LSUB (\\HasChildren) "/" "Archive"' in out


async def test_lsub_lists_only_subscribed_names(alice):
    await alice.line("a CREATE Hidden")
    await alice.line("b UNSUBSCRIBE Hidden")
    out = await alice.line('c LSUB "" "*"')
    assert '"Hidden"' not in out
    assert '"Sent"' in out and out.endswith("c OK LSUB completed\r\n")
    assert '"Hidden"' in await alice.line('d LIST "" "*"')


async def test_create_subscribes_the_new_folder(alice):
    """The choice documented in `imap.commands.listing` and docs/imap.md."""
    await alice.line("a CREATE Nouveau")
    assert '* LSUB (\\HasNoChildren) "/" "Nouveau"' in await alice.line('b LSUB "" Nouveau')
    out = await alice.line('c LIST (SUBSCRIBED) "" Nouveau')
    assert '* LIST (\\HasNoChildren \\Subscribed) "/" "Nouveau"' in out


async def test_subscribing_a_name_that_does_not_exist_is_refused(alice):
    # Subscriptions belong to folders in MSS: nothing to subscribe to, NO [NONEXISTENT].
    assert "[NONEXISTENT]" in await alice.line("a SUBSCRIBE Absent")
    assert '"Absent"' not in await alice.line('b LSUB "" "*"')


async def test_lsub_with_an_empty_pattern_answers_the_delimiter(alice):
    assert '* LSUB (\\Noselect) "/" ""' in await alice.line('a LSUB "" ""')
