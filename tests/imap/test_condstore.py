"""CONDSTORE (RFC 7162 3.1) through the sans-IO session over the real store: MODSEQ in
FETCH, CHANGEDSINCE, conditional STORE (UNCHANGEDSINCE, MODIFIED), SEARCH MODSEQ, the
enabling commands and the MODSEQ in every untagged FETCH once enabled."""

from __future__ import annotations

import re

import pytest
from imap_fakes import ALICE, sample


async def _three(core, alice) -> None:
    for i in range(3):
        await core.deliver(ALICE, sample(subject=f"m{i}"))
    await alice.line("s0 SELECT INBOX")
    out = await alice.line("s SELECT INBOX")  # again: \\Recent was claimed by the first
    assert "s OK" in out, out


def _modseqs(out: str) -> dict[int, int]:
    """`{seq: modseq}` from `* n FETCH (... MODSEQ (m) ...)` lines."""
    return {int(n): int(m) for n, m in re.findall(r"\* (\d+) FETCH \(.*?MODSEQ \((\d+)\)", out)}


async def test_capabilities_and_highestmodseq_in_select(core, alice) -> None:
    caps = await alice.line("c CAPABILITY")
    assert " CONDSTORE" in caps and " QRESYNC" in caps, caps
    for i in range(3):
        await core.deliver(ALICE, sample(subject=f"m{i}"))
    out = await alice.line("s SELECT INBOX")
    highest = int(re.search(r"\* OK \[HIGHESTMODSEQ (\d+)\]", out).group(1))
    status = await alice.line("t STATUS INBOX (HIGHESTMODSEQ)")
    assert f"HIGHESTMODSEQ {highest})" in status, status


async def test_fetch_modseq_enables_condstore_and_reports_highestmodseq_once(core, alice) -> None:
    await _three(core, alice)
    out = await alice.line("f FETCH 1:* (MODSEQ)")
    assert out.count("[HIGHESTMODSEQ") == 1, out
    seqs = _modseqs(out)
    assert sorted(seqs) == [1, 2, 3] and len(set(seqs.values())) == 3, out
    again = await alice.line("g FETCH 1 (MODSEQ)")
    assert "HIGHESTMODSEQ" not in again, again  # once only
    # Once enabled, FLAGS go with their MODSEQ.
    flags = await alice.line("h FETCH 2 (FLAGS)")
    assert re.search(r"\* 2 FETCH \(FLAGS \(\) MODSEQ \(\d+\)\)", flags), flags


async def test_store_gives_a_new_modseq_and_changedsince_sees_only_it(core, alice) -> None:
    await _three(core, alice)
    before = _modseqs(await alice.line("f FETCH 1:* (MODSEQ)"))
    out = await alice.line("st STORE 2 +FLAGS (\\Flagged)")
    after = _modseqs(out)
    assert after[2] > max(before.values()), out
    assert re.search(r"\* 2 FETCH \(UID 2 FLAGS \(\\Flagged\) MODSEQ \(\d+\)\)", out), out
    changed = await alice.line(f"c FETCH 1:* (FLAGS) (CHANGEDSINCE {max(before.values())})")
    assert re.findall(r"\* (\d+) FETCH", changed) == ["2"], changed
    assert "MODSEQ (" in changed
    # A STORE that changes nothing leaves the MODSEQ alone.
    same = await alice.line("st2 STORE 2 +FLAGS (\\Flagged)")
    assert _modseqs(same)[2] == after[2], same


async def test_conditional_store_skips_what_changed_since(core, alice, make_session) -> None:
    await _three(core, alice)
    seen = _modseqs(await alice.line("f FETCH 1:* (MODSEQ)"))
    bob = make_session()
    await bob.line("a AUTHENTICATE EXTERNAL =")
    await bob.line("s SELECT INBOX")
    assert "b OK" in await bob.line("b STORE 2 +FLAGS (\\Seen)")
    since = max(seen.values())
    out = await alice.line(f"u STORE 1:3 (UNCHANGEDSINCE {since}) +FLAGS (\\Deleted)")
    assert "u OK [MODIFIED 2]" in out, out
    fresh = make_session()
    await fresh.line("a AUTHENTICATE EXTERNAL =")
    await fresh.line("e EXAMINE INBOX")
    flags = await fresh.line("f FETCH 1:3 (FLAGS)")
    assert "* 1 FETCH (FLAGS (\\Deleted))" in flags, flags
    assert "* 2 FETCH (FLAGS (\\Seen))" in flags, flags  # not deleted: it had changed
    assert "* 3 FETCH (FLAGS (\\Deleted))" in flags, flags


async def test_uid_store_reports_modified_as_uids_and_zero_fails_everything(core, alice) -> None:
    for i in range(4):
        await core.deliver(ALICE, sample(subject=f"m{i}"))
    await alice.line("s0 SELECT INBOX")
    await alice.line("s SELECT INBOX")
    assert "x OK" in await alice.line("x STORE 1 +FLAGS (\\Deleted)")
    assert "y OK" in await alice.line("y EXPUNGE")  # UIDs 2,3,4 are now numbers 1,2,3
    out = await alice.line("z UID STORE 2:4 (UNCHANGEDSINCE 0) +FLAGS (\\Seen)")
    assert "z OK [MODIFIED 2:4]" in out, out
    assert "FETCH" not in out.replace("OK [MODIFIED", ""), out
    out = await alice.line("w STORE 1:3 (UNCHANGEDSINCE 0) +FLAGS (\\Seen)")
    assert "w OK [MODIFIED 1:3]" in out, out


async def test_silent_store_still_reports_the_new_modseq(core, alice) -> None:
    await _three(core, alice)
    await alice.line("e FETCH 1 (MODSEQ)")
    out = await alice.line("s STORE 1,3 +FLAGS.SILENT (\\Answered)")
    assert re.search(r"\* 1 FETCH \(UID 1 MODSEQ \(\d+\)\)\r\n", out), out
    assert re.search(r"\* 3 FETCH \(UID 3 MODSEQ \(\d+\)\)\r\n", out), out
    assert "FLAGS" not in out, out
    unchanged = await alice.line("t STORE 1 +FLAGS.SILENT (\\Answered)")
    assert "FETCH" not in unchanged, unchanged


async def test_other_sessions_flag_changes_carry_uid_and_modseq(core, alice, make_session) -> None:
    await _three(core, alice)
    assert "* ENABLED" not in await alice.line("n NOOP")
    await alice.line("e FETCH 1 (MODSEQ)")
    bob = make_session()
    await bob.line("a AUTHENTICATE EXTERNAL =")
    await bob.line("s SELECT INBOX")
    await bob.line("b STORE 3 +FLAGS (\\Flagged)")
    out = await alice.line("n NOOP")
    assert re.search(r"\* 3 FETCH \(UID 3 FLAGS \(\\Flagged\) MODSEQ \(\d+\)\)", out), out


async def test_search_modseq(core, alice) -> None:
    await _three(core, alice)
    seqs = _modseqs(await alice.line("f FETCH 1:* (MODSEQ)"))
    out = await alice.line("st STORE 1 +FLAGS (\\Seen)")
    new = _modseqs(out)[1]
    found = await alice.line(f"q SEARCH MODSEQ {max(seqs.values()) + 1}")
    assert f"* SEARCH 1 (MODSEQ {new})\r\n" in found, found
    found = await alice.line(f'q2 SEARCH MODSEQ "/flags/\\\\seen" all {seqs[2]}')
    assert f"* SEARCH 1 2 3 (MODSEQ {new})\r\n" in found, found
    none = await alice.line(f"q3 SEARCH MODSEQ {new + 1}")
    assert "* SEARCH\r\n" in none, none  # nothing found: no MODSEQ
    es = await alice.line(f"q4 SEARCH RETURN (COUNT) MODSEQ {new}")
    assert f'* ESEARCH (TAG "q4") COUNT 1 MODSEQ {new}\r\n' in es, es


async def test_search_modseq_enables_condstore_when_selected(core, alice) -> None:
    await _three(core, alice)
    out = await alice.line("q SEARCH MODSEQ 1")
    assert "* OK [HIGHESTMODSEQ" in out, out
    assert "MODSEQ (" in await alice.line("f FETCH 1 (FLAGS)")


async def test_select_condstore_parameter_enables(core, alice) -> None:
    await core.deliver(ALICE, sample())
    await alice.line("e SELECT INBOX")  # claims \\Recent
    out = await alice.line("s SELECT INBOX (CONDSTORE)")
    assert "s OK" in out and "* OK [HIGHESTMODSEQ" in out, out
    assert re.search(r"\* 1 FETCH \(FLAGS \(\) MODSEQ \(\d+\)\)", await alice.line("f FETCH 1 FLAGS"))


@pytest.mark.parametrize(
    "command",
    [
        "b FETCH 1 (FLAGS) (CHANGEDSINCE 0)",  # mod-sequence-value is at least 1
        "b FETCH 1 (FLAGS) (CHANGEDSINCE)",
        "b FETCH 1 (FLAGS) (BOGUS 1)",
        "b FETCH 1 (FLAGS) (CHANGEDSINCE 1 CHANGEDSINCE 2)",
        "b FETCH 1 (FLAGS) ()",
        "b FETCH 1 (FLAGS) (CHANGEDSINCE 99999999999999999999)",
        "b STORE 1 (UNCHANGEDSINCE) +FLAGS (\\Seen)",
        "b STORE 1 (BOGUS 3) +FLAGS (\\Seen)",
        "b STORE 1 (UNCHANGEDSINCE 1 UNCHANGEDSINCE 2) +FLAGS (\\Seen)",
        "b SEARCH MODSEQ",
        'b SEARCH MODSEQ "/other/x" all 3',
        'b SEARCH MODSEQ "/flags/\\\\seen" every 3',
    ],
)
async def test_malformed_modifiers_are_bad_and_change_nothing(core, alice, command) -> None:
    await core.deliver(ALICE, sample())
    await alice.line("e SELECT INBOX")  # claims \\Recent
    await alice.line("s SELECT INBOX")
    out = await alice.line(command)
    assert out.startswith("b BAD"), out
    assert "* 1 FETCH (FLAGS ())" in await alice.line("f FETCH 1 FLAGS")
