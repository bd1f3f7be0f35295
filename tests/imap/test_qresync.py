"""QRESYNC (RFC 7162 3.2) through the sans-IO session over the real store: a client that
comes back learns what was expunged (VANISHED (EARLIER)) and what changed while it was
away; once enabled, expunges are announced by VANISHED; OK [CLOSED] on reselection."""

from __future__ import annotations

import re

import pytest
from imap_fakes import ALICE, sample


async def _login(make_session):
    d = make_session()
    assert "a OK" in await d.line("a AUTHENTICATE EXTERNAL =")
    return d


async def _qresync_client(make_session):
    d = await _login(make_session)
    out = await d.line("e ENABLE QRESYNC")
    assert "* ENABLED QRESYNC\r\n" in out, out
    return d


def _state(select_out: str) -> tuple[int, int]:
    uv = int(re.search(r"UIDVALIDITY (\d+)", select_out).group(1))
    hm = int(re.search(r"HIGHESTMODSEQ (\d+)", select_out).group(1))
    return uv, hm


async def test_resync_after_changes_made_while_disconnected(core, make_session) -> None:
    for i in range(6):
        await core.deliver(ALICE, sample(subject=f"m{i}"))
    first = await _qresync_client(make_session)
    uv, hm = _state(await first.line("s SELECT INBOX"))
    await first.line("l LOGOUT")

    # While it is away: another client expunges 2 and 4, flags 5, and new mail arrives.
    other = await _login(make_session)
    await other.line("s SELECT INBOX")
    assert "x OK" in await other.line("x UID STORE 2,4 +FLAGS (\\Deleted)")
    assert "y OK" in await other.line("y EXPUNGE")
    assert "z OK" in await other.line("z UID STORE 5 +FLAGS (\\Flagged)")
    await core.deliver(ALICE, sample(subject="new"))
    await other.line("l LOGOUT")

    back = await _qresync_client(make_session)
    out = await back.line(f"r SELECT INBOX (QRESYNC ({uv} {hm}))")
    assert "* VANISHED (EARLIER) 2,4\r\n" in out, out
    fetched = re.findall(r"\* (\d+) FETCH \(UID (\d+) FLAGS \(([^)]*)\) MODSEQ \((\d+)\)\)", out)
    assert [(int(s), int(u)) for s, u, _, _ in fetched] == [(3, 5), (5, 7)], out
    assert "\\Flagged" in fetched[0][2]
    assert all(int(m) > hm for *_, m in fetched)
    assert out.index("VANISHED") < out.index("FETCH") < out.index("r OK [READ-WRITE]")
    assert "* 5 EXISTS" in out


async def test_known_uids_limit_what_is_reported(core, make_session) -> None:
    for i in range(6):
        await core.deliver(ALICE, sample(subject=f"m{i}"))
    first = await _qresync_client(make_session)
    uv, hm = _state(await first.line("s SELECT INBOX"))
    await first.line("x UID STORE 1,2,5 +FLAGS (\\Deleted)")
    await first.line("y EXPUNGE")
    await first.line("z UID STORE 3,6 +FLAGS (\\Seen)")
    await first.line("l LOGOUT")
    back = await _qresync_client(make_session)
    out = await back.line(f"r EXAMINE INBOX (QRESYNC ({uv} {hm} 2:3))")
    assert "* VANISHED (EARLIER) 2\r\n" in out, out
    assert re.findall(r"FETCH \(UID (\d+)", out) == ["3"], out


async def test_seq_match_data_is_accepted(core, make_session) -> None:
    await core.deliver(ALICE, sample())
    d = await _qresync_client(make_session)
    uv, hm = _state(await d.line("s SELECT INBOX"))
    out = await d.line(f"r SELECT INBOX (QRESYNC ({uv} {hm} 1:5 (1:2 1,3)))")
    assert "r OK" in out, out
    out = await d.line(f"r2 SELECT INBOX (QRESYNC ({uv} {hm} (1 1)))")
    assert "r2 OK" in out, out


async def test_wrong_uidvalidity_means_a_full_select(core, make_session) -> None:
    await core.deliver(ALICE, sample())
    d = await _qresync_client(make_session)
    uv, _ = _state(await d.line("s SELECT INBOX"))
    await d.line("x STORE 1 +FLAGS (\\Deleted)")
    await d.line("y EXPUNGE")
    out = await d.line(f"r SELECT INBOX (QRESYNC ({uv + 1} 1))")
    assert "r OK" in out and "VANISHED" not in out and "FETCH" not in out, out


async def test_qresync_without_enable_is_bad(core, alice) -> None:
    await core.deliver(ALICE, sample())
    out = await alice.line("r SELECT INBOX (QRESYNC (1 1))")
    assert out.startswith("r BAD"), out
    assert alice.session.view is None


async def test_expunge_answers_vanished_and_highestmodseq(core, make_session) -> None:
    for i in range(4):
        await core.deliver(ALICE, sample(subject=f"m{i}"))
    d = await _qresync_client(make_session)
    await d.line("s SELECT INBOX")
    watcher = await _qresync_client(make_session)
    await watcher.line("s SELECT INBOX")
    await d.line("x STORE 2:3 +FLAGS (\\Deleted)")
    out = await d.line("y EXPUNGE")
    assert "* VANISHED 2:3\r\n" in out and "EXPUNGE\r\n" not in out, out
    highest = int(re.search(r"y OK \[HIGHESTMODSEQ (\d+)\]", out).group(1))
    assert f"HIGHESTMODSEQ {highest})" in await d.line("t STATUS INBOX (HIGHESTMODSEQ)")
    seen = await watcher.line("n NOOP")
    assert "* VANISHED 2:3\r\n" in seen and "EXPUNGE" not in seen, seen
    assert "* 2 EXISTS" in await watcher.line("s2 SELECT INBOX")


async def test_move_announces_vanished(core, make_session) -> None:
    for i in range(3):
        await core.deliver(ALICE, sample(subject=f"m{i}"))
    d = await _qresync_client(make_session)
    await d.line("s SELECT INBOX")
    out = await d.line("m UID MOVE 1,3 Trash")
    assert "[COPYUID" in out and "* VANISHED 1,3\r\n" in out and "EXPUNGE" not in out, out


async def test_uid_fetch_vanished_modifier(core, make_session) -> None:
    for i in range(5):
        await core.deliver(ALICE, sample(subject=f"m{i}"))
    d = await _qresync_client(make_session)
    _, hm = _state(await d.line("s SELECT INBOX"))
    await d.line("x UID STORE 1,4 +FLAGS (\\Deleted)")
    await d.line("y EXPUNGE")
    await d.line("z UID STORE 5 +FLAGS (\\Seen)")
    out = await d.line(f"f UID FETCH 1:* FLAGS (CHANGEDSINCE {hm} VANISHED)")
    assert "* VANISHED (EARLIER) 1,4\r\n" in out, out
    assert re.findall(r"FETCH \(UID (\d+)", out) == ["5"], out
    narrow = await d.line(f"g UID FETCH 2:3 FLAGS (CHANGEDSINCE {hm} VANISHED)")
    assert "VANISHED" not in narrow and "FETCH (" not in narrow, narrow


@pytest.mark.parametrize(
    "command",
    [
        "b FETCH 1:* FLAGS (CHANGEDSINCE 1 VANISHED)",  # not UID FETCH
        "b UID FETCH 1:* FLAGS (VANISHED)",  # no CHANGEDSINCE
    ],
)
async def test_vanished_modifier_rules(core, make_session, command) -> None:
    await core.deliver(ALICE, sample())
    d = await _qresync_client(make_session)
    await d.line("s SELECT INBOX")
    assert (await d.line(command)).startswith("b BAD")


async def test_vanished_needs_qresync_enabled(core, alice) -> None:
    await core.deliver(ALICE, sample())
    await alice.line("s SELECT INBOX")
    assert (await alice.line("b UID FETCH 1:* FLAGS (CHANGEDSINCE 1 VANISHED)")).startswith("b BAD")


@pytest.mark.parametrize(
    "param",
    ["(QRESYNC)", "(QRESYNC ())", "(QRESYNC (1))", "(QRESYNC (0 1))", "(QRESYNC (1 0))", "(QRESYNC (1 1 1:*))"],
)
async def test_malformed_qresync_parameter_is_bad(core, make_session, param) -> None:
    d = await _qresync_client(make_session)
    assert (await d.line(f"b SELECT INBOX {param}")).startswith("b BAD")


async def test_reselect_says_closed_first(core, alice) -> None:
    await alice.line("s SELECT INBOX")
    out = await alice.line("t EXAMINE Sent")
    assert out.startswith("* OK [CLOSED]"), out
    first = await (await _login_fresh(alice)).line("s SELECT INBOX")
    assert "[CLOSED]" not in first


async def _login_fresh(alice):
    from imap_fakes import Driver

    from imap.session import Session

    s = Session(alice.session.core, tls=True, peer="test")
    s.tls_started(alice.session.client_certificate)
    d = Driver(s)
    await d.line("a AUTHENTICATE EXTERNAL =")
    return d


async def test_unknown_select_parameters_are_skipped(core, alice) -> None:
    out = await alice.line("s SELECT INBOX (X-FOO (1 2) X-BAR)")
    assert "s OK" in out, out
