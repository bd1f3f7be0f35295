"""IDLE fan-out (issue 12): a delivery reaches every idler of a folder with the right untagged
responses, through the arrivals-only path (`FolderView.arrivals_only`) when nothing else
changed, and through the full diff when an idler is behind or flags or expunges came too.
Sans-IO sessions on the real Store (SQLite) and Events; the last test goes over real sockets."""

from __future__ import annotations

import asyncio

import pytest
from imap_fakes import ALICE, sample

from imap.view import FolderView


async def seed(core, n: int) -> None:
    for i in range(n):
        await core.deliver(ALICE, sample(f"msg {i}"))


async def idling(make_session, select: str = "SELECT"):
    d = make_session()
    assert "a OK" in await d.line("a AUTHENTICATE EXTERNAL =")
    assert "s OK" in await d.line(f"s {select} INBOX")
    assert await d.line("i IDLE") == "+ idling\r\n"
    return d


async def pushed(d) -> str:
    """What the session pushes once its watch fires (what `imap.server` would write)."""
    assert await d.session.idle.watch.wait(2)
    return b"".join(r.to_bytes() for r in await d.session.idle_updates()).decode()


async def test_two_idlers_on_one_folder_both_see_exists_and_one_takes_recent(core, make_session):
    await seed(core, 3)
    a, b = await idling(make_session), await idling(make_session)
    await core.deliver(ALICE, sample("new"))
    out_a, out_b = await asyncio.gather(pushed(a), pushed(b))
    assert out_a.startswith("* 4 EXISTS\r\n") and out_b.startswith("* 4 EXISTS\r\n")
    # RFC 3501 2.3.2: the new message is \Recent to exactly one of them (a took the three
    # seeded ones at its SELECT, so it says 4 if it took this one too, b says 1 if it did).
    recents = sorted(line for out in (out_a, out_b) for line in out.splitlines() if "RECENT" in line)
    assert recents in (["* 0 RECENT", "* 4 RECENT"], ["* 1 RECENT", "* 3 RECENT"])
    for d in (a, b):
        assert await d.line("DONE") == "i OK IDLE terminated\r\n"
        assert "* 4 FETCH (UID 4)" in await d.line("f FETCH 4 UID")


async def test_arrival_uses_the_fast_path_and_a_flag_change_the_full_diff(core, make_session, monkeypatch):
    await seed(core, 2)
    d = await idling(make_session)
    paths: list[str] = []
    fast = FolderView.sync_arrivals

    def spy(self, *args, **kwargs):
        paths.append("arrivals")
        return fast(self, *args, **kwargs)

    monkeypatch.setattr(FolderView, "sync_arrivals", spy)
    await core.deliver(ALICE, sample("one"))
    assert (await pushed(d)).startswith("* 3 EXISTS\r\n")
    assert paths == ["arrivals"]
    # Another session flags message 1 and a new message arrives before this one looks:
    # HIGHESTMODSEQ moved by more than UIDNEXT, so the full diff runs and reports both.
    other = await idling(make_session)
    await other.line("DONE")
    await other.line("t STORE 1 +FLAGS.SILENT (\\Flagged)")
    await core.deliver(ALICE, sample("two"))
    out = await pushed(d)
    assert "* 4 EXISTS\r\n" in out and "* 1 FETCH (FLAGS (\\Flagged" in out
    assert paths == ["arrivals"]  # not the fast path this time


async def test_an_idler_that_is_behind_gets_expunges_keywords_and_exists(core, make_session):
    await seed(core, 4)
    d = await idling(make_session)
    other = make_session()
    await other.line("a AUTHENTICATE EXTERNAL =")
    await other.line("s SELECT INBOX")
    # Several changes land before the idler syncs: a new keyword on 1, 2 expunged, a delivery.
    await other.line("t STORE 1 +FLAGS.SILENT ($Urgent)")
    await other.line("t STORE 2 +FLAGS.SILENT (\\Deleted)")
    await other.line("e EXPUNGE")
    await core.deliver(ALICE, sample("late"))
    out = await pushed(d)
    lines = out.splitlines()
    assert lines[0].startswith("* FLAGS (") and "$Urgent" in lines[0]  # RFC 3501 7.2.6, first
    assert "* 2 EXPUNGE" in lines and "* 4 EXISTS" in lines
    assert lines.index("* 2 EXPUNGE") < lines.index("* 4 EXISTS")
    assert any(line.startswith("* 1 FETCH (FLAGS (") and "$Urgent" in line for line in lines)
    await d.line("DONE")
    out = await d.line("u UID FETCH 1:* UID")
    assert [line.split("UID ")[1].rstrip(")") for line in out.splitlines() if line.startswith("* ")] == [
        "1",
        "3",
        "4",
        "5",
    ]


async def test_expunge_while_idling(core, make_session):
    await seed(core, 3)
    d = await idling(make_session)
    other = make_session()
    await other.line("a AUTHENTICATE EXTERNAL =")
    await other.line("s SELECT INBOX")
    await other.line("t STORE 3 +FLAGS.SILENT (\\Deleted)")
    assert "* 3 EXPUNGE" in await other.line("e EXPUNGE")
    out = await pushed(d)
    assert "* 3 EXPUNGE\r\n" in out and "EXISTS" not in out
    # The next arrival after the expunge is an arrival again: EXISTS counts what is left.
    await core.deliver(ALICE, sample("after"))
    assert (await pushed(d)).startswith("* 3 EXISTS\r\n")


async def test_idler_with_its_own_flag_change_pending_takes_the_full_diff(core, make_session):
    """A STORE by the session itself (answered, but `synced_state` left behind) is no arrival."""
    await seed(core, 2)
    d = make_session()
    await d.line("a AUTHENTICATE EXTERNAL =")
    await d.line("s SELECT INBOX")
    assert "* 1 FETCH" in await d.line("t STORE 1 +FLAGS (\\Seen)")
    assert await d.line("i IDLE") == "+ idling\r\n"
    await core.deliver(ALICE, sample("new"))
    out = await pushed(d)
    assert out.startswith("* 3 EXISTS\r\n") and "FETCH" not in out  # told of its own flag already


def testarrivals_only_refuses_every_state_that_is_not_a_pure_arrival():
    from datetime import UTC, datetime

    from mss.records import FolderInfo, MessageMeta

    when = datetime(2026, 1, 1, tzinfo=UTC)

    def meta(uid, modseq, flags=frozenset()):
        return MessageMeta(uid, modseq, flags, when, 10)

    info = FolderInfo(1, "a@test", "INBOX", 1, 3, 2, None, True)
    view = FolderView(info, [meta(1, 1), meta(2, 2)], readonly=False)
    grown = [meta(1, 1), meta(2, 2), meta(3, 3)]
    assert view.arrivals_only(grown, (4, 3)) == 2
    assert view.arrivals_only(grown, (4, 4)) is None  # one more MODSEQ than UIDs: a flag or expunge
    assert view.arrivals_only([meta(1, 1), meta(3, 3)], (4, 4)) is None  # 2 expunged
    assert view.arrivals_only(grown, None) is None
    view.synced_state = None
    assert view.arrivals_only(grown, (4, 3)) is None


@pytest.mark.timeout(60)
async def test_idlers_over_real_tls_sockets_all_receive_exists(deployment, monkeypatch):
    """Several IMAPS clients in IDLE on one folder (each with its TLS read buffer shared,
    `mss.tls_protocol`), one APPEND by another connection: every idler reads `* n EXISTS`,
    most of them written by the fan-out in one pass (`imap.server._Fanout`) rather than by
    their own session's sync."""
    from imap import server as imap_server
    from imap.session import Session
    from mss.core import Core

    own_syncs = []
    idle_updates = Session.idle_updates

    async def counted(self):
        own_syncs.append(self)
        return await idle_updates(self)

    monkeypatch.setattr(Session, "idle_updates", counted)

    settings = deployment.settings()
    settings = settings.model_copy(update={"listen": settings.listen.model_copy(update={"imap": 0, "imaps": 0})})
    core = await Core.open(settings)
    servers = await imap_server.start(core)
    host, port = settings.listen.host, servers["imaps"].sockets[0].getsockname()[1]
    ctx = deployment.client_context(deployment.mailbox("PER", 0))
    entry = deployment.mailbox("PER", 0)
    writers = []
    try:

        async def open_idler():
            reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=host)
            writers.append(writer)
            writer.write(b"a AUTHENTICATE EXTERNAL =\r\ns SELECT INBOX\r\ni IDLE\r\n")
            while not (await asyncio.wait_for(reader.readline(), 10)).startswith(b"+ "):
                pass
            return reader

        readers = await asyncio.gather(*(open_idler() for _ in range(8)))
        sender = await open_idler()
        writers[-1].write(b"DONE\r\n")
        while not (await asyncio.wait_for(sender.readline(), 10)).startswith(b"i OK"):
            pass
        from mail import build_message

        raw = build_message(entry["address"], [entry["address"]], "push", "hello\n")[0]
        writers[-1].write(b"p APPEND INBOX {%d+}\r\n" % len(raw) + raw + b"\r\n")

        async def exists(reader):
            while True:
                line = await asyncio.wait_for(reader.readline(), 10)
                if line.endswith(b" EXISTS\r\n"):
                    return line

        got = await asyncio.gather(*(exists(r) for r in readers))
        assert got == [b"* 1 EXISTS\r\n"] * len(readers)
        assert 1 <= len(own_syncs) < len(readers)  # the one that took \\Recent, maybe a few more
    finally:
        for w in writers:
            w.close()
        for srv in servers.values():
            srv.close()
        for task in list(imap_server._TASKS):
            task.cancel()
        await asyncio.gather(*imap_server._TASKS, return_exceptions=True)
        await core.close()
