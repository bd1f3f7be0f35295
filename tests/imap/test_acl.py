"""Shared ORG mailboxes through the sans-IO session: the shared namespace (RFC 2342), RFC 4314
rights enforced by the core's handle whatever the path, per-member \\Seen, the ACL commands.

Alice has the `write` grant (lrswikxte) on the ORG mailbox, Carol the `read` grant (lrs), Bob
none. The directory rows are real (`annuaire.local`); rights come from `mss.rights`.
"""

from __future__ import annotations

import asyncio
import base64
import re

import pytest
from imap_fakes import ALICE, ALICE_CERT, BOB, BOB_CERT, ORG, FakeAuth, open_test_core, sample
from support import create_pg_database, drop_pg_database

from annuaire.local import LocalDirectory
from mss.principal import Principal

CAROL = "carol@test.mss"
CAROL_CERT = b"cert-carol"
SHARED = f"Partag&AOk-s/{ORG}"  # modified UTF-7 (RFC 3501 5.1.3) of "Partagés/<org>"
INBOX = f'"{SHARED}/INBOX"'


@pytest.fixture
async def core(backend, tmp_path):
    """The test core on each backend (the store's rights, \\Seen rows and locks on both)."""
    pg_name = url = None
    if backend == "postgresql":
        pg_name, url = await asyncio.to_thread(create_pg_database)
    c = await open_test_core(tmp_path / "imap.db", url)
    yield c
    await c.aclose()
    if pg_name:
        await asyncio.to_thread(drop_pg_database, pg_name)


@pytest.fixture
async def shared(core, monkeypatch):
    """The directory: Alice and Carol are members of ORG (write and read), Bob is not."""
    principals = dict(FakeAuth.principals)
    principals[CAROL_CERT] = Principal("PS", "810000000003", "Carol", frozenset({CAROL, ORG}), primary=CAROL)
    monkeypatch.setattr(FakeAuth, "principals", principals)
    monkeypatch.setattr(FakeAuth, "app_passwords", {**FakeAuth.app_passwords, CAROL: "carol-app-pass"})
    async with core.store.sessions() as s, s.begin():
        d = LocalDirectory(s)
        await d.add_mailbox(ALICE, "PER", idnat="810000000001")
        await d.add_mailbox(BOB, "PER", idnat="810000000002")
        await d.add_mailbox(CAROL, "PER", idnat="810000000003")
        await d.add_mailbox(ORG, "ORG", structure_id="1234567890", members=[ALICE])
        await d.grant(ORG, CAROL, "lrs")
    await core.store.ensure_default_folders(ORG)
    return core


async def login(make_session, cert: bytes, authzid: str = "", *, enable: str | None = None):
    d = make_session(cert=cert)
    arg = base64.b64encode(authzid.encode()).decode() if authzid else "="
    out = await d.line(f"a0 AUTHENTICATE EXTERNAL {arg}")
    assert "a0 OK" in out, out
    if enable:
        assert "OK" in await d.line(f"e0 ENABLE {enable}")
    return d


def tagged(out: str, tag: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(tag + " "))


async def test_namespace_shows_the_shared_namespace_to_members_only(shared, make_session):
    alice = await login(make_session, ALICE_CERT)
    out = await alice.line("n NAMESPACE")
    assert '* NAMESPACE (("" "/")) NIL (("Partag&AOk-s/" "/"))' in out
    utf8 = await login(make_session, ALICE_CERT, enable="UTF8=ACCEPT")
    assert '* NAMESPACE (("" "/")) NIL (("Partagés/" "/"))' in await utf8.line("n NAMESPACE")
    bob = await login(make_session, BOB_CERT)
    assert '* NAMESPACE (("" "/")) NIL NIL' in await bob.line("n NAMESPACE")
    # Narrowed to the ORG mailbox (authzid), the session has one mailbox, as before.
    narrowed = await login(make_session, ALICE_CERT, ORG)
    assert '* NAMESPACE (("" "/")) NIL NIL' in await narrowed.line("n NAMESPACE")


async def test_list_shows_the_levels_noselect_and_the_shared_folders(shared, make_session):
    carol = await login(make_session, CAROL_CERT)
    out = await carol.line('l LIST "" "*"')
    assert '* LIST (\\Noselect \\HasChildren) "/" "Partag&AOk-s"' in out
    assert f'* LIST (\\Noselect \\HasChildren) "/" "{SHARED}"' in out
    assert f'* LIST (\\HasNoChildren) "/" {INBOX}' in out
    assert f'* LIST (\\HasNoChildren \\Sent) "/" "{SHARED}/Sent"' in out
    assert '"INBOX"' in out  # her own folders too
    # LIST-EXTENDED keeps the levels \Noselect (they are levels, not missing folders), and
    # RETURN (STATUS) answers the shared folders' counts.
    out = await carol.line('x LIST () "" "Partag&AOk-s/%/%" RETURN (SPECIAL-USE STATUS (MESSAGES UNSEEN))')
    assert f"* STATUS {INBOX} (MESSAGES 0 UNSEEN 0)" in out and "x OK" in out
    out = await carol.line('y LIST "" "Partag&AOk-s/%"')
    assert f'* LIST (\\Noselect \\HasChildren) "/" "{SHARED}"' in out
    # Subscriptions are each member's own (RFC 9051 6.3.7).
    assert "u OK" in await carol.line(f"u UNSUBSCRIBE {INBOX}")
    assert INBOX not in await carol.line('s LSUB "" "*"')
    alice = await login(make_session, ALICE_CERT)
    assert f'* LSUB (\\HasNoChildren) "/" {INBOX}' in await alice.line('s LSUB "" "*"')
    out = await carol.line('t LSUB "" "Partag&AOk-s/%"')
    assert f'* LSUB (\\Noselect \\HasChildren) "/" "{SHARED}"' in out  # a parent of her subscribed Sent
    assert "v OK" in await carol.line(f"v SUBSCRIBE {INBOX}")
    assert f'* LSUB (\\HasNoChildren) "/" {INBOX}' in await carol.line('w LSUB "" "*"')
    assert "NO [NONEXISTENT]" in await carol.line('z SUBSCRIBE "Partag&AOk-s"')


async def test_a_non_member_neither_lists_nor_selects_nor_asks_rights(shared, make_session):
    await shared.deliver(ORG, sample("for the cabinet", to=ORG))
    bob = await login(make_session, BOB_CERT)
    assert "Partag" not in await bob.line('l LIST "" "*"')
    for cmd in (f"s SELECT {INBOX}", f"t STATUS {INBOX} (MESSAGES)", f"m MYRIGHTS {INBOX}", f"g GETACL {INBOX}"):
        out = await bob.line(cmd)
        assert "NO [NONEXISTENT]" in out, (cmd, out)
    assert "NO [TRYCREATE]" in tagged(await bob.line(f"a APPEND {INBOX} {{2+}}\r\nhi"), "a")


async def test_per_member_seen_status_search_and_the_mailbox_wide_seen(shared, make_session):
    for n in range(2):
        await shared.deliver(ORG, sample(f"msg {n}", to=ORG))
    alice = await login(make_session, ALICE_CERT, enable="CONDSTORE")
    carol = await login(make_session, CAROL_CERT)
    assert "READ-WRITE" in await alice.line(f"s SELECT {INBOX}")
    # Carol has no right on shared flags nor "i"/"e" (RFC 4314 4): READ-ONLY, though she
    # keeps her own \Seen, so only \Seen is a permanent flag for her.
    out = await carol.line(f"s SELECT {INBOX}")
    assert "[READ-ONLY]" in out and "PERMANENTFLAGS (\\Seen)" in out, out
    out = await alice.line("f FETCH 1 (BODY[])")
    assert "\\Seen" in out
    assert "FLAGS ()" in await carol.line("f FETCH 1 FLAGS")
    assert "* SEARCH 1 2" in await carol.line("q SEARCH UNSEEN")
    assert "* SEARCH 2" in await alice.line("q SEARCH UNSEEN")
    assert "* SEARCH 1" in await alice.line("r SEARCH SEEN")
    assert "UNSEEN 2" in await carol.line(f"u STATUS {INBOX} (UNSEEN)")
    assert "UNSEEN 1" in await alice.line(f"u STATUS {INBOX} (UNSEEN)")
    # Carol's own \Seen, in her READ-ONLY folder: the "s" right lets her (RFC 4314 4).
    out = await carol.line("t STORE 2 +FLAGS (\\Seen)")
    assert "FLAGS (\\Seen)" in out and "t OK" in out
    assert "* SEARCH 2\r\n" in await alice.line("q SEARCH UNSEEN")  # Carol's \Seen is not hers
    # The mailbox-wide \Seen (what a structure certificate sees) is left alone.
    inbox = await shared.store.get_folder(ORG, "INBOX")
    assert all("\\Seen" not in m.flags for m in await shared.store.messages(ORG, inbox.id))
    # Alice's CONDSTORE session learns of her own change (new MODSEQ) and sees Carol's only
    # as a spurious FETCH: her flags are unchanged.
    other = await login(make_session, ALICE_CERT, enable="CONDSTORE")
    await other.line(f"s SELECT {INBOX}")
    out = await other.line("f FETCH 1:* (FLAGS) (CHANGEDSINCE 1)")
    assert re.search(r"\* 1 FETCH \(FLAGS \(\\Seen\) MODSEQ \(\d+\)\)", out), out
    assert re.search(r"\* 2 FETCH \(FLAGS \(\) MODSEQ \(\d+\)\)", out), out


async def test_the_write_members_flags_are_the_mailboxs(shared, make_session):
    await shared.deliver(ORG, sample("flag me", to=ORG))
    alice = await login(make_session, ALICE_CERT)
    carol = await login(make_session, CAROL_CERT)
    await alice.line(f"s SELECT {INBOX}")
    await carol.line(f"s SELECT {INBOX}")
    assert "a OK" in await alice.line("a STORE 1 +FLAGS (\\Flagged $Urgent)")
    out = await carol.line("n NOOP")
    assert "\\Flagged" in out and "$Urgent" in out, out


async def test_every_refusal_of_a_read_member_is_noperm_and_changes_nothing(shared, make_session):
    await shared.deliver(ORG, sample("read only", to=ORG))
    await shared.deliver(CAROL, sample("mine", to=CAROL))
    carol = await login(make_session, CAROL_CERT)
    await carol.line(f"s SELECT {INBOX}")
    refused = {
        "STORE \\Deleted": "a STORE 1 +FLAGS (\\Deleted)",
        "STORE \\Flagged": "b STORE 1 +FLAGS (\\Flagged)",
        "EXPUNGE": "d EXPUNGE",
        "MOVE from": "e MOVE 1 INBOX",
        "CREATE under": f'f CREATE "{SHARED}/Archive"',
        "DELETE": f'g DELETE "{SHARED}/Junk"',
        "RENAME": f'h RENAME "{SHARED}/Junk" "{SHARED}/Spam"',
        "APPEND": f"i APPEND {INBOX} {{2+}}\r\nhi",
        "SETACL": f"j SETACL {INBOX} {BOB} +lr",
        "DELETEACL": f"k DELETEACL {INBOX} {ALICE}",
        "GETACL": f"l GETACL {INBOX}",
        "LISTRIGHTS": f"m LISTRIGHTS {INBOX} {ALICE}",
    }
    for what, line in refused.items():
        out = await carol.line(line)
        tag = line.split()[0]
        assert "NO [NOPERM]" in tagged(out, tag), (what, out)
    assert "mss mailbox grant" in tagged(await carol.line(f"l GETACL {INBOX}"), "l")
    # COPY into the shared folder from her own INBOX needs "i" there.
    await carol.line("s SELECT INBOX")
    assert "NO [NOPERM]" in tagged(await carol.line(f"n COPY 1 {INBOX}"), "n")
    # STORE of \Seen and \Flagged: she may change one of them, so the STORE succeeds and
    # changes only that one (RFC 4314 4: "SHOULD NOT fail if the user has rights to modify
    # at least one flag").
    await carol.line(f"s SELECT {INBOX}")
    out = await carol.line("o STORE 1 +FLAGS (\\Seen \\Flagged)")
    assert "FLAGS (\\Seen)" in out and "o OK" in out, out
    out = await carol.line("p STORE 1 FLAGS ()")  # replace: only \Seen is hers to clear
    assert "FLAGS ()" in out and "p OK" in out
    assert "* 1 EXISTS" in await carol.line(f"t SELECT {INBOX}")  # nothing expunged, nothing added
    inbox = await shared.store.get_folder(ORG, "INBOX")
    (meta,) = await shared.store.messages(ORG, inbox.id)
    assert meta.flags == frozenset()
    assert {f.name for f in await shared.store.list_folders(ORG)} == {"INBOX", "Sent", "Drafts", "Trash", "Junk"}


async def test_myrights_answers_each_folders_rights(shared, make_session):
    alice = await login(make_session, ALICE_CERT)
    carol = await login(make_session, CAROL_CERT)
    assert f"* MYRIGHTS {INBOX} lrs" in await carol.line(f"m MYRIGHTS {INBOX}")
    assert f"* MYRIGHTS {INBOX} lrswikxte" in await alice.line(f"m MYRIGHTS {INBOX}")
    assert '* MYRIGHTS "INBOX" lrswipkxte' in await alice.line("m MYRIGHTS INBOX")
    assert "NO [NONEXISTENT]" in await alice.line('m MYRIGHTS "Partag&AOk-s"')
    caps = await alice.line("c CAPABILITY")
    assert " ACL " in caps and "RIGHTS=texk" in caps


async def test_copy_and_move_between_personal_and_shared_folders(shared, make_session):
    await shared.deliver(ALICE, sample("from my inbox", to=ALICE))
    await shared.deliver(ORG, sample("from the cabinet", to=ORG))
    alice = await login(make_session, ALICE_CERT)
    await alice.line("s SELECT INBOX")
    await alice.line("f FETCH 1 BODY[]")  # her \Seen
    out = await alice.line(f"c COPY 1 {INBOX}")
    assert re.search(r"c OK \[COPYUID \d+ 1 2\]", out), out
    await alice.line(f"s SELECT {INBOX}")
    out = await alice.line("f FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert "from my inbox" in out and out.count("\\Seen") == 1  # her \Seen came along as hers
    inbox = await shared.store.get_folder(ORG, "INBOX")
    assert [m.flags for m in await shared.store.messages(ORG, inbox.id)] == [frozenset(), frozenset()]
    # MOVE from the shared INBOX into her own folder: the copy is hers, the original gone,
    # with every member's own \Seen of it.
    from sqlalchemy import func, select

    from mss.db.models import MessageSeen

    async def seen_rows() -> int:
        async with shared.store.sessions() as s:
            return (await s.execute(select(func.count()).select_from(MessageSeen))).scalar_one()

    assert "w OK" in await alice.line("w UID STORE 1 +FLAGS.SILENT (\\Seen)")
    carol = await login(make_session, CAROL_CERT)
    await carol.line(f"s SELECT {INBOX}")
    assert "w OK" in await carol.line("w UID STORE 1 +FLAGS.SILENT (\\Seen)")
    assert await seen_rows() == 3  # Alice's of the copy and of UID 1, Carol's of UID 1
    out = await alice.line("m UID MOVE 1 Trash")
    assert "* 1 EXPUNGE" in out and "m OK" in out, out
    assert await seen_rows() == 1  # Alice's \Seen of the copy; none left behind for the moved message
    trash = await shared.store.get_folder(ALICE, "Trash")
    (moved,) = await shared.store.messages(ALICE, trash.id)
    assert moved.flags == frozenset({"\\Seen"})  # as she saw it, now her mailbox's own
    # Carol may read what was copied in, as stored (readable by whoever could before: E2E).
    await carol.line(f"s EXAMINE {INBOX}")
    assert "from my inbox" in await carol.line("f FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]")


async def test_append_and_expunge_by_the_write_member(shared, make_session):
    alice = await login(make_session, ALICE_CERT)
    out = await alice.line(f"a APPEND {INBOX} (\\Seen \\Flagged) {{2+}}\r\nhi")
    assert "a OK [APPENDUID" in out, out
    assert shared.sealer.appended[-1] == b"hi"  # sealed (FakeSealer) for the ORG mailbox
    carol = await login(make_session, CAROL_CERT)
    await carol.line(f"s SELECT {INBOX}")
    assert "\\Seen" not in await carol.line("f FETCH 1 FLAGS")  # Alice's \Seen is hers
    await alice.line(f"s SELECT {INBOX}")
    assert "FLAGS (\\Flagged \\Seen)" in await alice.line("f FETCH 1 FLAGS")
    assert "OK" in tagged(await alice.line("d STORE 1 +FLAGS.SILENT (\\Deleted)"), "d")
    assert "* 1 EXPUNGE" in await alice.line("e EXPUNGE")
    # `write` gives folder management too ("k", "x"); Carol's `read` does not (NOPERM above).
    assert "c OK" in await alice.line(f'c CREATE "{SHARED}/Projets"')
    assert "r OK" in await alice.line(f'r RENAME "{SHARED}/Projets" "{SHARED}/Archives"')
    assert "d OK" in await alice.line(f'd DELETE "{SHARED}/Archives"')


async def test_authzid_keeps_working_bounded_by_the_members_rights(shared, make_session):
    await shared.deliver(ORG, sample("via authzid", to=ORG))
    carol = await login(make_session, CAROL_CERT, ORG)
    assert carol.session.mailbox == ORG
    assert "[READ-ONLY]" in await carol.line("s SELECT INBOX")
    assert "NO [NOPERM]" in await carol.line("a STORE 1 +FLAGS (\\Flagged)")
    assert "NO [NOPERM]" in tagged(await carol.line("b APPEND INBOX {2+}\r\nhi"), "b")
    assert '* MYRIGHTS "INBOX" lrs' in await carol.line("m MYRIGHTS INBOX")
    # Her \Seen is hers however she reaches the mailbox (one rule for both ways).
    await carol.line("f FETCH 1 BODY[]")
    plain = await login(make_session, CAROL_CERT)
    await plain.line(f"s SELECT {INBOX}")
    assert "\\Seen" in await plain.line("f FETCH 1 FLAGS")
    alice = await login(make_session, ALICE_CERT, ORG)
    assert "READ-WRITE" in await alice.line("s SELECT INBOX")
    assert "\\Seen" not in await alice.line("f FETCH 1 FLAGS")


async def test_an_app_password_login_to_ones_own_mailbox_still_shows_the_shared_ones(shared, make_session):
    d = make_session(cert=CAROL_CERT)
    assert "a OK" in await d.line(f"a LOGIN {CAROL} carol-app-pass")
    assert "Partag&AOk-s" in await d.line("n NAMESPACE")
    assert "* MYRIGHTS" in await d.line(f"m MYRIGHTS {INBOX}")


async def test_a_revoked_member_loses_the_mailbox_at_the_next_session(shared, make_session):
    async with shared.store.sessions() as s, s.begin():
        await LocalDirectory(s).revoke(ORG, CAROL)
    carol = await login(make_session, CAROL_CERT)  # her principal still names ORG
    assert "Partag" not in await carol.line('l LIST "" "*"')
    assert "NO [NONEXISTENT]" in await carol.line(f"s SELECT {INBOX}")
    assert "a0 NO" in tagged(await login_fails(make_session, CAROL_CERT, ORG), "a0")


async def login_fails(make_session, cert: bytes, authzid: str) -> str:
    d = make_session(cert=cert)
    return await d.line(f"a0 AUTHENTICATE EXTERNAL {base64.b64encode(authzid.encode()).decode()}")


async def test_no_personal_folder_under_the_shared_namespace(shared, make_session):
    alice = await login(make_session, ALICE_CERT)
    assert "NO [CANNOT]" in await alice.line('c CREATE "Partag&AOk-s/mine"')
    assert "NO [CANNOT]" in await alice.line('d CREATE "Partag&AOk-s"')
    assert "NO [CANNOT]" in await alice.line('r RENAME Junk "Partag&AOk-s/Junk"')
    # Renaming across mailboxes is refused; within the personal namespace it works.
    assert "NO [CANNOT]" in await alice.line(f'x RENAME Junk "{SHARED}/Junk2"')


async def test_idle_on_a_shared_folder_hears_of_mail_for_the_org_mailbox(shared, make_session):
    carol = await login(make_session, CAROL_CERT)
    await carol.line(f"s SELECT {INBOX}")
    assert (await carol.line("i IDLE")) == "+ idling\r\n"
    watch = carol.session.idle.watch
    assert watch is not None
    await shared.deliver(ORG, sample("while idling", to=ORG))
    assert await watch.wait(1)  # the ORG folder's watch woke
    out = b"".join(r.to_bytes() for r in await carol.session.idle_updates()).decode()
    assert "* 1 EXISTS" in out
    assert (await carol.line("DONE")) == "i OK IDLE terminated\r\n"


async def test_a_revocation_reaches_an_open_session(shared, make_session, monkeypatch):
    """RFC 4314 rights are read again by the open handle (`mss.services.RIGHTS_TTL`)."""
    from mss import services

    await shared.deliver(ORG, sample("before the revocation", to=ORG))
    alice = await login(make_session, ALICE_CERT)
    assert "READ-WRITE" in await alice.line(f"s SELECT {INBOX}")
    assert "before the revocation" in await alice.line("f FETCH 1 BODY[]")
    async with shared.store.sessions() as s, s.begin():
        await LocalDirectory(s).revoke(ORG, ALICE)
    # Within the bound, a new SELECT and an APPEND already ask again: refused.
    assert "NO [NONEXISTENT]" in tagged(await alice.line(f"t SELECT {INBOX}"), "t")
    assert "NO [NOPERM]" in tagged(await alice.line(f"a APPEND {INBOX} {{2+}}\r\nhi"), "a")
    assert "NO [NONEXISTENT]" in tagged(await alice.line(f"u STATUS {INBOX} (MESSAGES)"), "u")
    # The other commands of a selected folder, once the rights are older than the bound.
    monkeypatch.setattr(services, "RIGHTS_TTL", 0.0)
    async with shared.store.sessions() as s, s.begin():
        await LocalDirectory(s).grant(ORG, ALICE, "lrswite")
    other = await login(make_session, ALICE_CERT)
    assert "READ-WRITE" in await other.line(f"s SELECT {INBOX}")
    async with shared.store.sessions() as s, s.begin():
        await LocalDirectory(s).revoke(ORG, ALICE)
    for line in ("f FETCH 1 BODY[]", "g STORE 1 +FLAGS (\\Flagged)", "h EXPUNGE", "i UID SEARCH ALL"):
        out = await other.line(line)
        assert "NO [NOPERM]" in tagged(out, line.split()[0]), (line, out)
    assert "Partag" not in await other.line('l LIST "" "*"')
    inbox = await shared.store.get_folder(ORG, "INBOX")
    (meta,) = await shared.store.messages(ORG, inbox.id)
    assert "\\Flagged" not in meta.flags


async def test_a_grant_raising_rights_reaches_an_open_session(shared, make_session, monkeypatch):
    from mss import services

    await shared.deliver(ORG, sample("flag me later", to=ORG))
    carol = await login(make_session, CAROL_CERT)
    await carol.line(f"s SELECT {INBOX}")
    assert "NO [NOPERM]" in await carol.line("a STORE 1 +FLAGS (\\Flagged)")
    async with shared.store.sessions() as s, s.begin():
        await LocalDirectory(s).grant(ORG, CAROL, "lrsw")
    monkeypatch.setattr(services, "RIGHTS_TTL", 0.0)
    out = await carol.line("b STORE 1 +FLAGS (\\Flagged)")
    assert "\\Flagged" in out and "b OK" in tagged(out, "b"), out
    assert f"* MYRIGHTS {INBOX} lrsw" in await carol.line(f"m MYRIGHTS {INBOX}")


async def test_a_read_members_replacing_store_keeps_the_flags_it_may_not_change(shared, make_session):
    await shared.deliver(ORG, sample("flagged by alice", to=ORG))
    alice = await login(make_session, ALICE_CERT)
    carol = await login(make_session, CAROL_CERT)
    await alice.line(f"s SELECT {INBOX}")
    await carol.line(f"s SELECT {INBOX}")
    assert "a OK" in await alice.line("a STORE 1 +FLAGS (\\Flagged $Urgent)")
    out = await carol.line("c STORE 1 FLAGS (\\Seen)")
    assert "c OK" in tagged(out, "c"), out
    assert "\\Flagged" in out and "$Urgent" in out and "\\Seen" in out, out
    inbox = await shared.store.get_folder(ORG, "INBOX")
    (meta,) = await shared.store.messages(ORG, inbox.id)
    assert meta.flags == frozenset({"\\Flagged", "$Urgent"})  # Carol's \Seen is hers


async def test_a_read_members_store_never_undoes_a_concurrent_change(shared, make_session):
    """The flags Carol may not change are read under the folder's lock, in her STORE's own
    transaction: Alice's concurrent -FLAGS (\\Flagged) is never undone."""
    import asyncio

    await shared.deliver(ORG, sample("raced", to=ORG))
    alice = await login(make_session, ALICE_CERT)
    carol = await login(make_session, CAROL_CERT)
    await alice.line(f"s SELECT {INBOX}")
    await carol.line(f"s SELECT {INBOX}")
    inbox = await shared.store.get_folder(ORG, "INBOX")
    lost, seen = 0, "\\Seen"
    for n in range(12):
        assert "OK" in await alice.line(f"a{n} STORE 1 +FLAGS.SILENT (\\Flagged)")
        await asyncio.gather(
            carol.line(f"c{n} STORE 1 FLAGS.SILENT ({seen if n % 2 else ''})"),
            alice.line(f"b{n} STORE 1 -FLAGS.SILENT (\\Flagged)"),
        )
        (meta,) = await shared.store.messages(ORG, inbox.id)
        lost += "\\Flagged" in meta.flags
    assert lost == 0, f"{lost} of 12 lost"
    # And the same with UNCHANGEDSINCE (one transaction too).
    for n in range(5):
        assert "OK" in await alice.line(f"d{n} STORE 1 +FLAGS.SILENT (\\Flagged)")
        await asyncio.gather(
            carol.line(f"e{n} STORE 1 (UNCHANGEDSINCE 1000000) FLAGS.SILENT (\\Seen)"),
            alice.line(f"f{n} STORE 1 -FLAGS.SILENT (\\Flagged)"),
        )
        (meta,) = await shared.store.messages(ORG, inbox.id)
        assert "\\Flagged" not in meta.flags


async def test_list_status_leaves_out_what_a_lookup_only_member_may_not_read(shared, make_session):
    """RFC 5819 2 with RFC 4314 4: no STATUS line without "r", and the LIST succeeds."""
    await shared.deliver(ORG, sample("not for her eyes", to=ORG))
    await shared.deliver(CAROL, sample("hers", to=CAROL))
    async with shared.store.sessions() as s, s.begin():
        await LocalDirectory(s).grant(ORG, CAROL, "l")
    carol = await login(make_session, CAROL_CERT, enable="CONDSTORE")
    for items in ("MESSAGES UIDNEXT HIGHESTMODSEQ", "SIZE", "MESSAGES UNSEEN"):
        out = await carol.line(f'x LIST "" "*" RETURN (STATUS ({items}))')
        assert "x OK" in tagged(out, "x"), out
        assert f'* LIST (\\HasNoChildren) "/" {INBOX}' in out  # still listed ("l")
        assert f"* STATUS {INBOX}" not in out and '* STATUS "Partag' not in out, out
        assert '* STATUS "INBOX" (' in out  # her own folders keep theirs
    assert "NO [NOPERM]" in tagged(await carol.line(f"s STATUS {INBOX} (MESSAGES)"), "s")
    # A member with "r" gets the counts of the non-empty folder.
    alice = await login(make_session, ALICE_CERT)
    out = await alice.line('y LIST "" "Partag&AOk-s/%/INBOX" RETURN (STATUS (MESSAGES))')
    assert f"* STATUS {INBOX} (MESSAGES 1)" in out, out


async def test_copy_into_a_folder_drops_the_flags_the_user_may_not_set_there(shared, make_session):
    """RFC 4314 2.1: "s", "w", "t" govern setting flags during COPY, as for APPEND."""
    await shared.deliver(CAROL, sample("carol's own", to=CAROL))
    await shared.deliver(ORG, sample("the cabinet's", to=ORG))
    async with shared.store.sessions() as s, s.begin():
        await LocalDirectory(s).grant(ORG, CAROL, "lrsi")
    alice = await login(make_session, ALICE_CERT)
    await alice.line(f"s SELECT {INBOX}")
    assert "OK" in await alice.line("a STORE 1 +FLAGS (\\Flagged \\Deleted $Urgent)")
    carol = await login(make_session, CAROL_CERT)
    await carol.line("s SELECT INBOX")
    assert "OK" in await carol.line("a STORE 1 +FLAGS (\\Seen \\Flagged \\Deleted $Mine)")
    out = await carol.line(f"c COPY 1 {INBOX}")
    assert "c OK [COPYUID" in out, out
    await carol.line(f"t SELECT {INBOX}")
    # Within the shared mailbox too: Alice's flags do not come along with Carol's copy.
    assert "d OK" in tagged(await carol.line(f'd COPY 1 "{SHARED}/Sent"'), "d")
    out = await carol.line("f FETCH 2 FLAGS")
    assert "FLAGS (\\Recent \\Seen)" in out, out  # her own \Seen ("s"), nothing else
    inbox = await shared.store.get_folder(ORG, "INBOX")
    flags = {m.uid: m.flags for m in await shared.store.messages(ORG, inbox.id)}
    assert flags[2] == frozenset()
    sent = await shared.store.get_folder(ORG, "Sent")
    assert [m.flags for m in await shared.store.messages(ORG, sent.id)] == [frozenset()]
    # Alice (write: every flag right) keeps her flags on a copy.
    await alice.line(f"s SELECT {INBOX}")
    assert "OK" in await alice.line(f'e COPY 1 "{SHARED}/Junk"')
    junk = await shared.store.get_folder(ORG, "Junk")
    ((meta),) = await shared.store.messages(ORG, junk.id)
    assert {"\\Flagged", "\\Deleted", "$Urgent"} <= meta.flags


async def test_a_shared_folders_quota_root_is_its_namespace_prefix(shared, make_session):
    """RFC 9208 4.3: one root per mailbox; the shared one's is named after its prefix."""
    from mss.records import QuotaLimits

    shared.store.quota_limits = QuotaLimits(storage=100 * 1024, messages=50)
    await shared.deliver(ORG, sample("for the cabinet", to=ORG))
    await shared.deliver(ORG, sample("and another", to=ORG))
    carol = await login(make_session, CAROL_CERT)
    out = await carol.line(f"q GETQUOTAROOT {INBOX}")
    assert f'* QUOTAROOT {INBOX} "{SHARED}"\r\n* QUOTA "{SHARED}" (STORAGE ' in out, out
    assert "MESSAGE 2 50)" in out and "q OK" in out
    out = await carol.line(f'g GETQUOTA "{SHARED}"')
    assert out.startswith(f'* QUOTA "{SHARED}" (STORAGE ') and "MESSAGE 2 50)" in out, out
    # Her own mailbox keeps the root "", with its own usage.
    assert '* QUOTA "" (STORAGE 0 100 MESSAGE 0 50)' in await carol.line('h GETQUOTA ""')
    assert '* QUOTAROOT "INBOX" ""' in await carol.line("i GETQUOTAROOT INBOX")
    utf8 = await login(make_session, CAROL_CERT, enable="UTF8=ACCEPT")
    out = await utf8.line(f'j GETQUOTA "Partagés/{ORG}"')
    assert f'* QUOTA "Partagés/{ORG}" (STORAGE ' in out, out
    # A root of another ORG, or none, is no root of this session.
    bob = await login(make_session, BOB_CERT)
    assert "NO [NONEXISTENT]" in await bob.line(f'k GETQUOTA "{SHARED}"')
    assert "NO [NONEXISTENT]" in await carol.line('l GETQUOTA "Partag&AOk-s/other@test.mss"')


async def test_the_reserved_name_is_compared_after_nfc_and_myrights_answers_any_right(shared, make_session):
    utf8 = await login(make_session, ALICE_CERT, enable="UTF8=ACCEPT")
    for name in ("Partagés/x", "Partage\u0301s/x", "Partage\u0301s"):
        assert "NO [CANNOT]" in await utf8.line(f'c CREATE "{name}"'), name
    assert "NO [CANNOT]" in await utf8.line('r RENAME Junk "Partage\u0301s/Junk"')
    assert {f.name for f in await shared.store.list_folders(ALICE)} == {"INBOX", "Sent", "Drafts", "Trash", "Junk"}
    # RFC 4314 4: MYRIGHTS with any right, here "i" alone (no "l" nor "r").
    async with shared.store.sessions() as s, s.begin():
        await LocalDirectory(s).grant(ORG, CAROL, "li")
    carol = await login(make_session, CAROL_CERT)
    async with shared.store.sessions() as s, s.begin():
        await LocalDirectory(s).grant(ORG, CAROL, "i")
    assert f"* MYRIGHTS {INBOX} i" in await carol.line(f"m MYRIGHTS {INBOX}")


async def test_a_member_of_one_org_cannot_name_another_orgs_folders(shared, make_session):
    other = "autre@test.mss"
    async with shared.store.sessions() as s, s.begin():
        await LocalDirectory(s).add_mailbox(other, "ORG", structure_id="1234567891", members=[BOB])
    await shared.store.ensure_default_folders(other)
    await shared.deliver(other, sample("not for carol", to=other))
    carol = await login(make_session, CAROL_CERT)
    name = f'"Partag&AOk-s/{other}/INBOX"'
    for line in (f"s SELECT {name}", f"t STATUS {name} (MESSAGES)", f"m MYRIGHTS {name}", f"q GETQUOTAROOT {name}"):
        assert "NO [NONEXISTENT]" in tagged(await carol.line(line), line.split()[0]), line
    assert "NO [TRYCREATE]" in tagged(await carol.line(f"a APPEND {name} {{2+}}\r\nhi"), "a")
    await carol.line(f"s SELECT {INBOX}")
    await shared.deliver(ORG, sample("hers to copy", to=ORG))
    await carol.line("n NOOP")
    assert "NO [TRYCREATE]" in tagged(await carol.line(f"c COPY 1 {name}"), "c")
    assert other not in await carol.line('l LIST "" "*"')


async def test_close_and_uid_expunge_without_the_e_right(shared, make_session):
    await shared.deliver(ORG, sample("deleted but kept", to=ORG))
    async with shared.store.sessions() as s, s.begin():
        await LocalDirectory(s).grant(ORG, CAROL, "lrst")  # may flag \Deleted, not expunge
    carol = await login(make_session, CAROL_CERT)
    assert "READ-WRITE" in await carol.line(f"s SELECT {INBOX}")
    assert "d OK" in tagged(await carol.line("d STORE 1 +FLAGS.SILENT (\\Deleted)"), "d")
    assert "NO [NOPERM]" in tagged(await carol.line("u UID EXPUNGE 1"), "u")
    assert "c OK" in tagged(await carol.line("c CLOSE"), "c")  # closes, expunges nothing
    inbox = await shared.store.get_folder(ORG, "INBOX")
    (meta,) = await shared.store.messages(ORG, inbox.id)
    assert "\\Deleted" in meta.flags


async def test_login_with_the_org_app_password_is_bounded_by_the_members_rights(shared, make_session):
    """The ORG mailbox's app password, typed by a member on their certificate, opens the ORG
    mailbox as that member (like the authzid): their rights, their own \\Seen."""
    await shared.deliver(ORG, sample("for the org", to=ORG))
    carol = make_session(cert=CAROL_CERT)
    assert "a OK" in await carol.line(f"a LOGIN {ORG} org-app-pass")
    assert carol.session.mailbox == ORG
    assert '* NAMESPACE (("" "/")) NIL NIL' in await carol.line("n NAMESPACE")
    assert "[READ-ONLY]" in await carol.line("s SELECT INBOX")
    assert '* MYRIGHTS "INBOX" lrs' in await carol.line("m MYRIGHTS INBOX")
    assert "NO [NOPERM]" in tagged(await carol.line("f STORE 1 +FLAGS (\\Flagged)"), "f")
    alice = make_session(cert=ALICE_CERT)
    assert "a OK" in await alice.line(f"a LOGIN {ORG} org-app-pass")
    assert '* MYRIGHTS "INBOX" lrswikxte' in await alice.line("m MYRIGHTS INBOX")
    assert "b NO" in tagged(await make_session(cert=CAROL_CERT).line(f"b LOGIN {ORG} wrong"), "b")
