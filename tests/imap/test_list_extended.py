"""LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819), SPECIAL-USE and CREATE-SPECIAL-USE
(RFC 6154), on the real store behind the test core."""

from __future__ import annotations

import re

from imap_fakes import ALICE, sample


def lines(out: str, kind: str = "LIST") -> list[str]:
    return [x for x in out.split("\r\n") if x.startswith(f"* {kind} ")]


async def test_capabilities_are_advertised(alice):
    caps = (await alice.line("a CAPABILITY")).split("\r\n")[0].split()
    assert {"LIST-EXTENDED", "LIST-STATUS", "SPECIAL-USE", "CREATE-SPECIAL-USE"} <= set(caps)


async def test_selection_subscribed_marks_and_filters(alice):
    await alice.line("a CREATE Lu")
    await alice.line("b CREATE Cache")
    await alice.line("c UNSUBSCRIBE Cache")
    out = await alice.line('d LIST (SUBSCRIBED) "" "*"')
    assert '* LIST (\\HasNoChildren \\Subscribed) "/" "Lu"' in out
    assert '"Cache"' not in out
    assert '* LIST (\\HasNoChildren \\Subscribed \\Sent) "/" "Sent"' in out


async def test_return_subscribed_marks_without_filtering(alice):
    await alice.line("a CREATE Cache")
    await alice.line("b UNSUBSCRIBE Cache")
    out = await alice.line('c LIST "" "*" RETURN (SUBSCRIBED)')
    assert '* LIST (\\HasNoChildren) "/" "Cache"' in out
    assert '* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"' in out
    # Plain LIST never says \Subscribed.
    assert "\\Subscribed" not in await alice.line('d LIST "" "*"')


async def test_recursivematch_gives_childinfo(alice):
    await alice.line("a CREATE Fruit/Apple")
    await alice.line("b CREATE Fruit")
    await alice.line("c UNSUBSCRIBE Fruit")
    await alice.line("d CREATE Legume/Carotte")
    await alice.line("e UNSUBSCRIBE Legume/Carotte")
    out = await alice.line('f LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')
    assert '* LIST (\\HasChildren) "/" "Fruit" ("CHILDINFO" ("SUBSCRIBED"))' in out
    assert '"Legume"' not in out
    # "*" reaches the subscribed child itself: the unsubscribed parent is not answered.
    out = await alice.line('f2 LIST (SUBSCRIBED RECURSIVEMATCH) "" "*"')
    assert '"Fruit"' not in out and '* LIST (\\HasNoChildren \\Subscribed) "/" "Fruit/Apple"' in out
    # Without RECURSIVEMATCH the unsubscribed parent is not answered.
    assert '"Fruit"' not in await alice.line('g LIST (SUBSCRIBED) "" "%"')
    # A subscribed parent with a subscribed child: \Subscribed and CHILDINFO.
    await alice.line("h SUBSCRIBE Fruit")
    out = await alice.line('i LIST (SUBSCRIBED RECURSIVEMATCH) "" "Fruit"')
    assert '* LIST (\\HasChildren \\Subscribed) "/" "Fruit" ("CHILDINFO" ("SUBSCRIBED"))' in out


async def test_option_errors_are_bad(alice):
    assert (await alice.line('a LIST (RECURSIVEMATCH) "" "*"')).startswith("a BAD")
    assert (await alice.line('b LIST (REMOTE RECURSIVEMATCH) "" "*"')).startswith("b BAD")
    assert (await alice.line('c LIST (NOSUCH) "" "*"')).startswith("c BAD")
    assert (await alice.line('d LIST "" "*" RETURN (NOSUCH)')).startswith("d BAD")
    assert (await alice.line('e LIST "" "*" RETURN (STATUS (BOGUS))')).startswith("e BAD")
    assert (await alice.line('f LIST "" "*" RETURN (STATUS ())')).startswith("f BAD")
    assert (await alice.line('g LIST "" "*" RETURN (STATUS)')).startswith("g BAD")


async def test_remote_and_empty_options_are_plain_list(alice):
    plain = lines(await alice.line('a LIST "" "*"'))
    assert lines(await alice.line('b LIST (REMOTE) "" "*"')) == plain
    assert lines(await alice.line('c LIST () "" "*" RETURN ()')) == plain


async def test_nonexistent_parent_in_extended_list(alice):
    await alice.line("a CREATE Projets/2026")
    assert '* LIST (\\Noselect \\HasChildren) "/" "Projets"' in await alice.line('b LIST "" "%"')
    out = await alice.line('c LIST () "" "%" RETURN (CHILDREN)')
    assert '* LIST (\\NonExistent \\HasChildren) "/" "Projets"' in out
    assert '* LIST (\\HasNoChildren \\Trash) "/" "Trash"' in out


async def test_multiple_patterns_answer_each_name_once(alice):
    await alice.line("a CREATE Work/Sub")
    out = await alice.line('b LIST "" ("INBOX" "Work/*" "W*")')
    names = [x.rsplit(" ", 1)[1] for x in lines(out)]
    assert names == ['"INBOX"', '"Work"', '"Work/Sub"']


async def test_special_use_selection_and_return(alice):
    await alice.line("a CREATE Plain")
    out = await alice.line('b LIST (SPECIAL-USE) "" "*"')
    got = {x.rsplit(" ", 1)[1]: x for x in lines(out)}
    assert set(got) == {'"Sent"', '"Drafts"', '"Trash"', '"Junk"'}
    assert "\\Drafts" in got['"Drafts"']
    out = await alice.line('c LIST "" "*" RETURN (SPECIAL-USE)')
    assert '* LIST (\\HasNoChildren) "/" "Plain"' in out
    assert '* LIST (\\HasNoChildren \\Junk) "/" "Junk"' in out


async def test_return_status(core, alice):
    await core.deliver(ALICE, sample("one"))
    await core.deliver(ALICE, sample("two"))
    await alice.line("a CREATE Vide/Sous")
    out = await alice.line('b LIST "" "*" RETURN (STATUS (MESSAGES UNSEEN UIDNEXT SIZE))')
    rows = out.split("\r\n")
    at = rows.index('* LIST (\\HasNoChildren) "/" "INBOX"')
    assert re.fullmatch(r'\* STATUS "INBOX" \(MESSAGES 2 UNSEEN 2 UIDNEXT 3 SIZE \d+\)', rows[at + 1])
    assert '* STATUS "Vide/Sous" (MESSAGES 0 UNSEEN 0 UIDNEXT 1 SIZE 0)' in rows
    # No STATUS for a name that cannot be selected.
    assert '* STATUS "Vide"' not in out
    assert '* LIST (\\NonExistent \\HasChildren) "/" "Vide"' in out


async def test_return_status_with_subscribed_selection(alice):
    await alice.line("a CREATE Cache")
    await alice.line("b UNSUBSCRIBE Cache")
    out = await alice.line('c LIST (SUBSCRIBED) "" "*" RETURN (STATUS (MESSAGES))')
    assert '* STATUS "INBOX" (MESSAGES 0)' in out
    assert '"Cache"' not in out


# -- CREATE-SPECIAL-USE (RFC 6154 3) ----------------------------------------------------------


async def test_create_with_a_special_use(alice):
    assert (await alice.line("a CREATE Classement (USE (\\Archive))")).startswith("a OK")
    out = await alice.line('b LIST "" Classement')
    assert '* LIST (\\HasNoChildren \\Archive) "/" "Classement"' in out
    assert '"Classement"' in await alice.line('c LIST (SPECIAL-USE) "" "*"')


async def test_create_special_use_refusals_create_nothing(alice):
    out = await alice.line("a CREATE Tout (USE (\\All))")
    assert out.startswith("a NO [USEATTR]")
    out = await alice.line("b CREATE Brouillons (USE (\\Drafts))")  # Drafts has it already
    assert out.startswith("b NO [USEATTR]") and "Drafts" in out
    out = await alice.line("c CREATE Deux (USE (\\Archive \\Trash))")
    assert out.startswith("c NO [USEATTR]")
    out = await alice.line("d CREATE Inconnu (USE (\\Bogus))")
    assert out.startswith("d NO [USEATTR]")
    listed = await alice.line('e LIST "" "*"')
    for name in ("Tout", "Brouillons", "Deux", "Inconnu"):
        assert f'"{name}"' not in listed
    # The use is given once: a second \Archive folder is refused too.
    await alice.line("f CREATE Archives (USE (\\archive))")  # case-insensitive
    assert '\\Archive) "/" "Archives"' in await alice.line('g LIST "" Archives')
    assert (await alice.line("h CREATE Archives2 (USE (\\Archive))")).startswith("h NO [USEATTR]")


async def test_create_params_other_than_use_are_ignored(alice):
    assert (await alice.line("a CREATE Autre (FOO (1 2) USE ())")).startswith("a OK")
    assert '* LIST (\\HasNoChildren) "/" "Autre"' in await alice.line('b LIST "" Autre')
    assert (await alice.line("c CREATE Bad (USE \\Drafts)")).startswith("c BAD")


async def test_the_core_refuses_a_duplicate_use_too(core, alice):
    """Two CREATEs racing: the store refuses the one that comes second."""
    from mss.refusals import Refusal

    box = alice.session.box
    await box.create_folder("Premier", "\\Archive")
    try:
        await box.create_folder("Second", "\\Archive")
    except Refusal as exc:
        assert "Archive" in exc.public
    else:
        raise AssertionError("a second \\Archive folder was created")
    assert await box.folder("Second") is None
