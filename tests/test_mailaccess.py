"""Authorisation lives in the core: `MailAccess.open` is the one door to a mailbox, and a
handle only works on its own mailbox's folders, whatever front end holds it."""

from __future__ import annotations

import dataclasses

import pytest

from mss.core import Core
from mss.principal import Principal
from mss.refusals import Reason, Refusal


@pytest.fixture
async def core(fresh_deployment):
    c = await Core.open(fresh_deployment.settings())
    yield c
    await c.close()


def _principal(entry: dict, *more: str) -> Principal:
    """The professional owning `entry` (their real idNat_PS: a member's rights on an ORG
    mailbox are read from the directory, `mss.rights`)."""
    return Principal("PS", entry["idnat"], "x", frozenset({entry["address"], *more}), entry["address"])


async def test_a_handle_cannot_be_had_for_someone_elses_mailbox(core, fresh_deployment):
    claire, paul = fresh_deployment.mailbox("PER", 0), fresh_deployment.mailbox("PER", 1)
    org = fresh_deployment.mailbox("ORG")
    me = _principal(claire, org["address"])
    for mailbox in (paul["address"], paul["address"].upper(), "nobody@elsewhere.test"):
        with pytest.raises(Refusal) as err:
            await core.mail.open(me, mailbox)
        assert err.value.reason is Reason.NOT_ALLOWED
    # Narrowed to one mailbox (an authorization identity), the others are gone too...
    narrowed = me.restricted_to(org["address"])
    with pytest.raises(Refusal):
        await core.mail.open(narrowed, claire["address"])
    # ...except that narrowed to its own PER mailbox (its app password, as mail clients log
    # in), a professional still reads the ORG mailboxes it is a member of, as a member only:
    # the membership's rights, its own \Seen (mss.rights), and never to send as them.
    own = me.restricted_to(claire["address"])
    assert not own.may_use(org["address"])
    as_member = await core.mail.open(own, org["address"])
    assert (as_member.rights, as_member.shared) == ("lrswikxte", True)
    assert await core.mail.shared(own) == [org["address"]]
    assert await core.mail.shared(narrowed) == []
    nobody = dataclasses.replace(me, mailboxes=frozenset(), primary=None)
    with pytest.raises(Refusal):
        await core.mail.open(nobody)
    own = await core.mail.open(me)
    shared = await core.mail.open(me, org["address"].upper())
    assert (own.address, shared.address) == (claire["address"], org["address"])
    assert {f.name for f in await own.folders()} >= {"INBOX", "Sent", "Drafts", "Trash", "Junk"}


async def test_a_handle_refuses_folders_it_did_not_hand_out(core, fresh_deployment):
    claire, paul = fresh_deployment.mailbox("PER", 0), fresh_deployment.mailbox("PER", 1)
    mine = await core.mail.open(_principal(claire))
    theirs = await core.mail.open(_principal(paul))
    their_inbox = await theirs.folder("INBOX")
    ref = await theirs.append("INBOX", b"From: <" + paul["address"].encode() + b">\r\nSubject: s\r\n\r\nx\r\n")
    my_inbox = await mine.folder("INBOX")
    assert their_inbox is not None and my_inbox is not None
    # Another mailbox's folder, and one claiming to be mine but carrying another id.
    forged = dataclasses.replace(their_inbox, mailbox=claire["address"])
    for folder in (their_inbox, forged):
        for call in (
            lambda f=folder: mine.messages(f),
            lambda f=folder: mine.content(f, [ref.uid]),
            lambda f=folder: mine.headers(f, [ref.uid]),
            lambda f=folder: mine.set_flags(f, [ref.uid], {"\\Deleted"}, "add"),
            lambda f=folder: mine.expunge(f),
            lambda f=folder: mine.copy(my_inbox, [1], f),
            lambda f=folder: mine.move(f, [ref.uid], my_inbox),
            lambda f=folder: mine.folder_state(f),
        ):
            with pytest.raises(Refusal) as err:
                await call()
            assert err.value.reason is Reason.NOT_ALLOWED
        with pytest.raises(Refusal):
            mine.watch(folder)
    (meta,) = await theirs.messages(their_inbox)  # untouched
    assert meta.uid == ref.uid and meta.flags == frozenset()


async def test_append_goes_through_sealing_and_the_group_commit(core, fresh_deployment):
    claire = fresh_deployment.mailbox("PER", 0)
    box = await core.mail.open(_principal(claire))
    commits = core.store.commit.commits
    raw = b"From: <" + claire["address"].encode() + b">\r\nSubject: draft secret\r\n\r\nbody\r\n"
    ref = await box.append("Drafts", raw, {"\\Draft"})
    assert core.store.commit.commits == commits + 1
    drafts = await box.folder("Drafts")
    (meta,) = await box.messages(drafts)
    assert meta.uid == ref.uid and meta.flags == frozenset({"\\Draft"})
    (stored,) = (await box.content(drafts, [ref.uid])).values()
    assert b"draft secret" not in stored and b"application/pkcs7-mime" in stored
    with pytest.raises(Refusal) as err:
        await box.append("Nowhere", raw)
    assert err.value.reason is Reason.NO_SUCH_FOLDER
