"""A message with 200,000 folded header lines (~2.6 MB) goes through a real `mss serve` while
another client keeps being answered (issue 7: one signed-in user froze every listener).

Responsiveness is measured, with a generous bound: the point is that the server does not
stop answering, not how fast it parses (that is `bench/parse_bench.py`'s job).
"""

from __future__ import annotations

import threading
import time

import pytest
from mail import build_message, find_stored, openssl_decrypt, smtp_submission
from support import stored_messages

FOLDED_LINES = 200_000
#: The longest a command on another connection may wait while the big message is processed.
MAX_STALL_S = 5.0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_folded_header_bomb_is_stored_and_other_sessions_keep_being_answered(server, deployment, tmp_path):
    import asyncio

    claire, paul = deployment.mailbox("PER", 0), deployment.mailbox("PER", 1)
    folded = "X-Folded: start\r\n" + " continuation\r\n" * FOLDED_LINES
    raw, msgid = build_message(claire["address"], [paul["address"]], "folded", "body\n", extra=folded)
    assert len(raw) > 2_500_000

    outcome: dict[str, object] = {}

    def send_big() -> None:
        t0 = time.monotonic()
        with smtp_submission(server, claire, timeout=240) as smtp:
            outcome["refused"] = smtp.sendmail(claire["address"], [paul["address"]], raw)
        outcome["seconds"] = time.monotonic() - t0

    watcher = smtp_submission(server, paul)
    try:
        sender = threading.Thread(target=send_big)
        sender.start()
        stalls: list[float] = []
        while sender.is_alive():
            t0 = time.monotonic()
            assert watcher.rset()[0] == 250  # (NOOP is capped at 50 per session)
            stalls.append(time.monotonic() - t0)
            time.sleep(0.05)
        sender.join()
    finally:
        watcher.quit()

    assert outcome.get("refused") == {}, outcome
    assert len(stalls) >= 3, "the big message went through too fast to measure anything"
    assert max(stalls) < MAX_STALL_S, (
        f"another session waited {max(stalls):.1f} s (of {len(stalls)} commands; big one {outcome['seconds']:.1f} s)"
    )
    stored = find_stored(asyncio.run(stored_messages(deployment, paul["address"])), msgid)
    inner = openssl_decrypt(deployment, paul, stored, tmp_path)
    assert inner.count(b" continuation\r\n") == FOLDED_LINES  # kept byte for byte, inside the envelope
    assert b"X-Folded" not in stored  # and not in clear outside it
