"""Per-member \\Seen and subscriptions of shared (ORG) mailboxes in the store, on each
backend: the member's own \\Seen laid over the cached list, kept through COPY, MOVE (within
and across mailboxes), EXPUNGE and folder deletion, counted by STATUS UNSEEN, and each of
its changes giving the message a new MODSEQ (RFC 7162 3.1) so CONDSTORE sessions see it."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from support import scratch_database

from mss.db.engine import create_engine, sessionmaker
from mss.db.models import MemberSubscription, MessageSeen
from mss.folder_cache import ListState
from mss.records import NewMessage, OuterHeaders
from mss.store import Store, forget_member

ORG, PER = "org@x.test", "per@x.test"
A, B = "810000000001", "810000000002"  # two members (idNat_PS)


@pytest.fixture
async def store(backend, tmp_path):
    async with scratch_database(backend, tmp_path) as url:
        engine = create_engine(url)
        store = Store(sessionmaker(engine))
        yield store
        await store.close()
        await engine.dispose()


def item(mailbox: str, n: int, folder: str = "INBOX", flags=frozenset()) -> NewMessage:
    return NewMessage(mailbox, folder, b"ciphertext-%d" % n, OuterHeaders(subject="[...]"), frozenset(flags))


async def seen_rows(store: Store) -> int:
    async with store.sessions() as s:
        return (await s.execute(select(func.count()).select_from(MessageSeen))).scalar_one()


def seen(metas) -> list[int]:
    return [m.uid for m in metas if "\\Seen" in m.flags]


async def test_each_member_has_their_own_seen_over_the_cached_list(store: Store):
    refs = await store.write([item(ORG, i) for i in range(3)])
    fid = refs[0].folder_id
    state = await store.folder_state(ORG, fid)
    info = await store.get_folder(ORG, "INBOX")
    before = await store.messages(ORG, fid, ListState(info.uidvalidity, *state[:2]))
    changed = await store.set_flags(ORG, fid, [1, 2], {"\\Seen", "\\Flagged"}, "add", reader=A)
    assert [(m.uid, m.flags) for m in changed] == [(u, frozenset({"\\Seen", "\\Flagged"})) for u in (1, 2)]
    assert all(m.modseq > b.modseq for m, b in zip(changed, before, strict=False))
    state = ListState(info.uidvalidity, *(await store.folder_state(ORG, fid))[:2])
    hits = store.folder_cache.hits
    assert seen(await store.messages(ORG, fid, state, reader=A)) == [1, 2]
    assert seen(await store.messages(ORG, fid, state, reader=B)) == []
    shared_flags = await store.messages(ORG, fid, state)  # the mailbox-wide list, cached
    assert seen(shared_flags) == [] and [m.uid for m in shared_flags if "\\Flagged" in m.flags] == [1, 2]
    assert store.folder_cache.hits == hits + 3  # all three lists from the one cached list
    assert (await store.get_folder(ORG, "INBOX", reader=A)).unseen == 1
    assert (await store.get_folder(ORG, "INBOX", reader=B)).unseen == 3
    assert (await store.get_folder(ORG, "INBOX")).unseen == 3
    # B's own \Seen change alone gives the message a new MODSEQ (for everyone).
    m1 = (await store.messages(ORG, fid, reader=B))[0].modseq
    (after,) = await store.set_flags(ORG, fid, [1], {"\\Seen"}, "add", reader=B)
    assert after.modseq > m1 and (await store.folder_state(ORG, fid))[1] > m1
    # Removing one's \Seen; the mailbox-wide \Seen is untouched by a member's replace.
    await store.set_flags(ORG, fid, [1], {"\\Flagged"}, "replace", reader=A)
    assert seen(await store.messages(ORG, fid, reader=A)) == [2]
    assert seen(await store.messages(ORG, fid, reader=B)) == [1]
    # Conditional STORE (RFC 7162 3.1.3) with a member's \Seen.
    top = (await store.folder_state(ORG, fid))[1]
    done, modified = await store.set_flags_unchanged_since(ORG, fid, [3], {"\\Seen"}, "add", top, reader=B)
    assert seen(done) == [3] and modified == []


async def test_seen_rows_follow_copy_move_expunge_and_folder_deletion(store: Store):
    await store.ensure_default_folders(ORG)
    refs = await store.write([item(ORG, i) for i in range(3)])
    fid = refs[0].folder_id
    trash = (await store.get_folder(ORG, "Trash")).id
    await store.set_flags(ORG, fid, [1, 2, 3], {"\\Seen"}, "add", reader=A)
    await store.set_flags(ORG, fid, [2], {"\\Seen"}, "add", reader=B)
    assert await store.copy(ORG, fid, [2], trash) == [(2, 1)]
    assert seen(await store.messages(ORG, trash, reader=A)) == [1]
    assert seen(await store.messages(ORG, trash, reader=B)) == [1]
    assert await store.move(ORG, fid, [1], trash) == [(1, 2)]
    assert seen(await store.messages(ORG, trash, reader=A)) == [1, 2]
    assert seen(await store.messages(ORG, trash, reader=B)) == [1]
    assert await seen_rows(store) == 3 + 3  # INBOX: 2, 3 for A, 2 for B; Trash: 1, 2 for A, 1 for B
    await store.set_flags(ORG, fid, [2], {"\\Deleted"}, "add", reader=A)
    assert await store.expunge(ORG, fid) == [2]
    assert seen(await store.messages(ORG, fid, reader=A)) == [3]
    assert await seen_rows(store) == 1 + 3
    await store.create_folder(ORG, "Old")
    old = (await store.get_folder(ORG, "Old")).id
    await store.move(ORG, trash, [1, 2], old)
    await store.delete_folder(ORG, "Old")
    assert await seen_rows(store) == 1  # only INBOX 3 for A is left
    # A UID reused in a new folder does not inherit anything.
    await store.create_folder(ORG, "Old")
    await store.write([item(ORG, 7, "Old")])
    assert seen(await store.messages(ORG, (await store.get_folder(ORG, "Old")).id, reader=A)) == []


async def test_copy_between_mailboxes_takes_the_copiers_seen_and_counts_quota(store: Store):
    await store.ensure_default_folders(ORG)
    mine = await store.write([item(PER, 1, flags={"\\Seen", "\\Flagged"}), item(PER, 2)])
    org = await store.write([item(ORG, 3)])
    per_inbox, org_inbox = mine[0].folder_id, org[0].folder_id
    # Personal -> shared, by member A: A's \Seen goes as theirs, not the mailbox's.
    pairs = await store.copy_between(PER, per_inbox, [1, 2], ORG, org_inbox, reader=None, dest_reader=A)
    assert pairs == [(1, 2), (2, 3)]
    assert seen(await store.messages(ORG, org_inbox, reader=A)) == [2]
    assert seen(await store.messages(ORG, org_inbox)) == []
    assert [m.uid for m in await store.messages(ORG, org_inbox) if "\\Flagged" in m.flags] == [2]
    assert (await store.quota(ORG)).messages_used == 3 and (await store.quota(PER)).messages_used == 2
    # Shared -> personal MOVE by B, who has seen message 3: the copy is seen, the original
    # and its \Seen rows are gone from the shared INBOX, the usage moves.
    await store.set_flags(ORG, org_inbox, [3], {"\\Seen"}, "add", reader=B)
    assert await store.copy_between(ORG, org_inbox, [3], PER, per_inbox, move=True, reader=B) == [(3, 3)]
    assert seen(await store.messages(PER, per_inbox)) == [1, 3]
    assert [m.uid for m in await store.messages(ORG, org_inbox)] == [1, 2]
    assert (await store.quota(ORG)).messages_used == 2 and (await store.quota(PER)).messages_used == 3
    assert await store.vanished(ORG, org_inbox, 0) == [3]


async def test_subscriptions_of_members_are_their_own(store: Store):
    await store.ensure_default_folders(ORG)
    await store.set_subscribed(ORG, "Junk", False, reader=A)
    assert {f.name for f in await store.list_folders(ORG, reader=A) if not f.subscribed} == {"Junk"}
    assert all(f.subscribed for f in await store.list_folders(ORG, reader=B))
    assert all(f.subscribed for f in await store.list_folders(ORG))
    assert not (await store.get_folder(ORG, "Junk", reader=A)).subscribed
    await store.set_subscribed(ORG, "Junk", True, reader=A)
    assert (await store.get_folder(ORG, "Junk", reader=A)).subscribed
    async with store.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(MemberSubscription))).scalar_one() == 0


async def test_the_seen_sets_are_bounded_by_the_uids_they_hold(store: Store, monkeypatch):
    """`SEEN_UIDS` bounds the cached members' \\Seen sets by UIDs held, least recently used
    evicted, however few (folder, member) entries there are; answers stay right."""
    import mss.store as store_module

    monkeypatch.setattr(store_module, "SEEN_UIDS", 10)
    refs = await store.write([item(ORG, i) for i in range(8)])
    fid = refs[0].folder_id
    await store.set_flags(ORG, fid, list(range(1, 7)), {"\\Seen"}, "add", reader=A)  # 6 UIDs
    await store.set_flags(ORG, fid, list(range(1, 6)), {"\\Seen"}, "add", reader=B)  # 5 UIDs
    assert seen(await store.messages(ORG, fid, reader=A)) == [1, 2, 3, 4, 5, 6]
    assert store._seen_uids == 6
    # B's set (5) with A's (6) is 11 > 10: A's, the least recently used, goes.
    assert seen(await store.messages(ORG, fid, reader=B)) == [1, 2, 3, 4, 5]
    assert list(store._seen_sets) == [(fid, B)] and store._seen_uids == 5
    assert seen(await store.messages(ORG, fid, reader=A)) == [1, 2, 3, 4, 5, 6]  # read again
    assert list(store._seen_sets) == [(fid, A)] and store._seen_uids == 6
    # A set larger than the bound alone is not kept, and evicts nothing more than it must.
    await store.set_flags(ORG, fid, list(range(1, 9)), {"\\Seen"}, "add", reader=A)
    monkeypatch.setattr(store_module, "SEEN_UIDS", 7)
    assert seen(await store.messages(ORG, fid, reader=A)) == list(range(1, 9))
    assert store._seen_uids <= 7 and (fid, A) not in store._seen_sets


async def test_a_forgotten_members_seen_is_not_shown_again_from_a_nodes_memory(store: Store) -> None:
    """`mss mailbox revoke` deletes a member's \\Seen rows from another process; a node that
    kept the member's set must not show it when the member is granted again."""
    refs = await store.write([item(ORG, i) for i in range(3)])
    fid = refs[0].folder_id
    await store.set_flags(ORG, fid, [1, 3], {"\\Seen"}, "add", reader=A)
    assert seen(await store.messages(ORG, fid, reader=A)) == [1, 3]  # kept in memory
    async with store.sessions() as s, s.begin():
        assert await forget_member(s, ORG, A) == 2
    assert seen(await store.messages(ORG, fid, reader=A)) == []
    assert (await store.get_folder(ORG, "INBOX", reader=A)).unseen == 3
