"""ENVELOPE and BODYSTRUCTURE derived once and kept by the core (`imap.structure`): the second
FETCH reads no ciphertext, copies keep it, a damaged value is derived again, and the answers
are byte for byte those derived from the stored message."""

from __future__ import annotations

from imap_fakes import ALICE, sample
from sqlalchemy import text

from imap.structure import Structure, derive
from mss.structure_cache import StructureCache


async def _kept(core) -> dict[int, bytes | None]:
    async with core.engine.begin() as c:
        rows = (await c.execute(text("SELECT id, structure FROM message ORDER BY id"))).all()
    return {i: s for i, s in rows}


class _CountingContent:
    """Counts the stored messages the store hands out."""

    def __init__(self, store) -> None:
        self.read = 0
        self._content = store.content

        async def content(mailbox, folder_id, uids):
            got = await self._content(mailbox, folder_id, uids)
            self.read += len(got)
            return got

        store.content = content


async def test_second_fetch_reads_no_ciphertext_and_answers_the_same(core, alice) -> None:
    for i in range(3):
        await core.deliver(ALICE, sample(subject=f"m{i}", extra="Reply-To: r@test.mss\r\n"))
    await alice.line("s SELECT INBOX")
    counter = _CountingContent(core.store)
    first = await alice.line("f FETCH 1:* (ENVELOPE BODYSTRUCTURE BODY)")
    assert counter.read == 3 and first.count(" FETCH (") == 3, first
    assert all(v is not None for v in (await _kept(core)).values())
    second = await alice.line("g FETCH 1:* (ENVELOPE BODYSTRUCTURE BODY)")
    assert counter.read == 3, "the kept structure was not used"
    assert second.replace("g OK", "f OK") == first
    assert '((NIL NIL "r" "test.mss"))' in first  # Reply-To, from the stored header


async def test_copies_keep_it_and_a_damaged_value_is_derived_again(core, alice) -> None:
    await core.deliver(ALICE, sample(subject="one"))
    await alice.line("s SELECT INBOX")
    want = await alice.line("f FETCH 1 (ENVELOPE)")
    await alice.line("c COPY 1 Trash")
    assert list((await _kept(core)).values()) == [(await _kept(core))[1]] * 2  # copied as it is
    async with core.engine.begin() as c:
        await c.execute(text("UPDATE message SET structure = :b"), {"b": b"MSS1\x00\x00"})
    core.store.structure_cache = StructureCache()  # as a node that has not read them yet
    counter = _CountingContent(core.store)
    assert await alice.line("f FETCH 1 (ENVELOPE)") == want
    assert counter.read == 1
    assert Structure.decode((await _kept(core))[1]) is not None  # kept again, readable


def test_decode_refuses_what_is_not_a_whole_value() -> None:
    s = derive(sample())
    blob = s.encode()
    assert Structure.decode(blob) == s
    for bad in (b"", b"MSS2" + blob[4:], blob[:-1], blob + b"x", blob[:6]):
        assert Structure.decode(bad) is None
