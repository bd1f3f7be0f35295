"""A FETCH of many messages is written as `Wire` pieces, chunk by chunk (`imap.commands.fetch`):
the bytes are those of the same FETCH one message at a time, across chunk boundaries, with
items asked twice sent once, and a folder view's ranges resolve as the per-message test did."""

from __future__ import annotations

import random

import pytest
from imap_fakes import ALICE, sample

from imap.commands import fetch as fetch_module
from imap.protocol.commands import SequenceSet
from imap.protocol.response import Wire
from imap.view import FolderView

ITEMS = "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY.PEEK[] BODY.PEEK[]<2.5> BODY.PEEK[HEADER] FLAGS UID)"


@pytest.mark.parametrize("items", ["(FLAGS ENVELOPE)", ITEMS, "(BODYSTRUCTURE RFC822 MODSEQ)"])
async def test_chunked_fetch_is_byte_for_byte_the_fetch_of_each_message(core, alice, monkeypatch, items) -> None:
    for i in range(7):
        await core.deliver(
            ALICE, sample(subject=f"m{i}", body=f"body {i}\r\n" * (i + 1)), flags={"\\Flagged"} if i % 2 else ()
        )
    await alice.line("e ENABLE CONDSTORE")  # so that MODSEQ enables nothing on the first FETCH
    await alice.line("s EXAMINE INBOX")  # read-only: RFC822 sets no \Seen, both runs see the same
    one_by_one = ""
    for n in range(1, 8):
        out = await alice.line(f"f{n} FETCH {n} {items}")
        assert out.endswith(f"f{n} OK FETCH completed\r\n"), out
        one_by_one += out[: out.rindex(f"f{n} OK")]
    monkeypatch.setattr(fetch_module, "_CHUNK", 2)  # contents read two by two
    monkeypatch.setattr(fetch_module, "_LINES", 3)  # lines from metadata three by three
    whole = await alice.line(f"g FETCH 1:* {items}")
    assert whole == one_by_one + "g OK FETCH completed\r\n"
    assert whole.count("UID ") <= 7 and whole.count(" FETCH (") == 7


async def test_a_large_message_is_a_piece_of_its_own_and_arrives_whole(core, alice) -> None:
    big = sample(subject="big", body=("z" * 998 + "\r\n") * 200)  # 200 KB: more than one write
    await core.deliver(ALICE, big)
    await alice.line("s SELECT INBOX")
    alice.session.feed(b"f UID FETCH 1:* (BODY.PEEK[])\r\n")
    out = await alice.session.process()
    wire = [o for o in out if isinstance(o, Wire)]
    assert len(wire) == 1 and any(p == big for p in wire[0].pieces)
    assert wire[0].to_bytes() == b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % len(big) + big + b")\r\n"


def _per_message(uids: list[int], seqset: SequenceSet, uid: bool) -> list[tuple[int, int]]:
    star = (uids[-1] if uids else 0) if uid else len(uids)
    return [(i, u) for i, u in enumerate(uids, 1) if seqset.contains(u if uid else i, star)]


def test_ranges_resolve_as_the_per_message_test_did() -> None:
    from datetime import UTC, datetime

    from mss.records import FolderInfo, MessageMeta

    rnd = random.Random(7)
    for _ in range(1000):
        uids = sorted(rnd.sample(range(1, 60), rnd.randint(0, 20)))
        metas = [MessageMeta(u, 1, frozenset(), datetime(2026, 1, 1, tzinfo=UTC), 1) for u in uids]
        view = FolderView(FolderInfo(1, ALICE, "INBOX", 1, 60, 1, None, True), metas, False)
        ranges = tuple(
            (rnd.choice([None, *range(1, 65)]), rnd.choice([None, *range(1, 65)])) for _ in range(rnd.randint(1, 4))
        )
        seqset = SequenceSet(ranges)
        for uid in (True, False):
            assert view.resolve(seqset, uid) == _per_message(uids, seqset, uid), (uids, ranges, uid)


async def test_a_fetch_of_many_contents_streams_and_a_pipelined_command_waits_for_it(core, alice, monkeypatch) -> None:
    from imap.protocol.response import Stream

    for i in range(5):
        await core.deliver(ALICE, sample(subject=f"m{i}"))
    await alice.line("s SELECT INBOX")
    monkeypatch.setattr(fetch_module, "_CHUNK", 2)
    alice.session.feed(b"f UID FETCH 1:* (BODY.PEEK[])\r\n")
    (stream, done) = await alice.session.process()
    assert isinstance(stream, Stream) and not stream.settled and done.tag == "f"
    assert b"".join([w.to_bytes() async for w in stream.parts()]).count(b" FETCH (") == 5
    # Pipelined behind it, an EXPUNGE of every message: the FETCH still answers all five.
    alice.session.feed(b"g UID FETCH 1:* (BODY.PEEK[])\r\nh STORE 1:* +FLAGS.SILENT (\\Deleted)\r\ni EXPUNGE\r\n")
    out = await alice.session.process()
    first = next(o for o in out if isinstance(o, Stream))
    assert first.settled and first.to_bytes().count(b" FETCH (") == 5
    assert b"".join(o.to_bytes() for o in out).count(b" EXPUNGE\r\n") == 5


async def test_a_storage_failure_in_the_middle_ends_the_stream_and_the_connection(core, alice, monkeypatch) -> None:
    from imap.protocol.response import Stream
    from imap.server import _send

    for i in range(5):
        await core.deliver(ALICE, sample(subject=f"m{i}"))
    await alice.line("s SELECT INBOX")
    monkeypatch.setattr(fetch_module, "_CHUNK", 2)
    real = core.store.content
    calls = []

    async def content(mailbox, folder_id, uids):
        calls.append(uids)
        if len(calls) == 2:
            raise ConnectionRefusedError("database went away")
        return await real(mailbox, folder_id, uids)

    monkeypatch.setattr(core.store, "content", content)
    alice.session.feed(b"f UID FETCH 1:* (BODY.PEEK[])\r\n")
    out = await alice.session.process()

    class Conn:
        written = b""

        async def write(self, data: bytes) -> None:
            self.written += data

    conn = Conn()
    assert await _send(conn, out) is False  # the connection is closed
    stream = out[0]
    assert isinstance(stream, Stream) and isinstance(stream.failed, ConnectionRefusedError)
    assert conn.written.count(b" FETCH (") == 2 and b"f OK" not in conn.written
    assert conn.written.endswith(b"* BYE Mail storage temporarily unavailable; try again later\r\n")


def test_sync_by_modseq_tells_what_the_full_comparison_tells() -> None:
    """`FolderView.sync` looks only at messages with a MODSEQ above the one the client was
    told of; a view made to compare everything (no known state) must say the same."""
    from datetime import UTC, datetime

    from mss.records import FolderInfo, MessageMeta

    rnd = random.Random(11)
    when = datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(60):
        store = {u: MessageMeta(u, u, frozenset(), when, 1) for u in range(1, 30)}
        modseq, uidnext = 30, 30
        info = FolderInfo(1, ALICE, "INBOX", 1, uidnext, modseq, None, True)
        fast = FolderView(info, sorted(store.values(), key=lambda m: m.uid), False)
        full = FolderView(info, sorted(store.values(), key=lambda m: m.uid), False)
        for _ in range(15):
            for _ in range(rnd.randint(0, 3)):
                op = rnd.random()
                if op < 0.5 and store:
                    u = rnd.choice(list(store))
                    modseq += 1
                    flags = frozenset(rnd.sample(["\\Seen", "\\Flagged", "$A", "$B"], rnd.randint(0, 2)))
                    store[u] = MessageMeta(u, modseq, flags, when, 1)
                elif op < 0.75 and store:
                    del store[rnd.choice(list(store))]
                    modseq += 1
                else:
                    store[uidnext] = MessageMeta(uidnext, modseq + 1, frozenset({"$C"}), when, 1)
                    uidnext, modseq = uidnext + 1, modseq + 1
            metas = sorted(store.values(), key=lambda m: m.uid)
            expunge = rnd.random() < 0.6
            state = (uidnext, modseq)
            full.synced_state = None
            got = fast.sync(metas, allow_expunge=expunge, uid_mode=True, state=state)
            want = full.sync(metas, allow_expunge=expunge, uid_mode=True, state=state)
            assert [r.to_bytes() for r in got] == [r.to_bytes() for r in want]
            told = lambda v: [v.flags[u] for u in v.uids]  # the told flags, by UID
            assert (fast.uids, told(fast), fast.keywords) == (full.uids, told(full), full.keywords)


async def test_fetch_and_search_read_the_folder_state_once_and_still_report_changes(
    core, alice, make_session, monkeypatch
) -> None:
    for i in range(3):
        await core.deliver(ALICE, sample(subject=f"m{i}"))
    await alice.line("s SELECT INBOX")
    reads = []
    real = core.store._read_state

    async def counted(mailbox, folder_id):
        reads.append(folder_id)
        return await real(mailbox, folder_id)

    monkeypatch.setattr(core.store, "_read_state", counted)
    assert "* SEARCH 1 2 3\r\n" in await alice.line("a SEARCH ALL")
    assert len(reads) == 1
    await alice.line("b FETCH 1:* (FLAGS)")
    assert len(reads) == 2
    # Another session's change before the command is told by the sync after it.
    bob = make_session()
    await bob.line("x AUTHENTICATE EXTERNAL =")
    await bob.line("y SELECT INBOX")
    await bob.line("z STORE 2 +FLAGS (\\Flagged)")
    out = await alice.line("c UID SEARCH ALL")
    assert "* SEARCH 1 2 3\r\n* 2 FETCH (UID 2 FLAGS (\\Flagged \\Recent))\r\n" in out, out
