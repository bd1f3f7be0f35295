"""Recipient enumeration (issue 13: 2,000 unknown recipients answered `550 5.1.1` in 2.3 s on
one connection): a session that collects refused recipients is slowed down, then dropped
with `421 4.7.0`; other sessions are served meanwhile. A real `mss serve`, smtplib over TLS."""

from __future__ import annotations

import smtplib
import threading
import time

import pytest
from abuse_support import served, smtp_client

pytestmark = pytest.mark.timeout(120)

SOFT, HARD, DELAY, MAX_DELAY = 2, 5, 0.2, 0.3
SETTINGS = {
    "abuse": {
        "rcpt_soft_error_limit": SOFT,
        "rcpt_hard_error_limit": HARD,
        "rcpt_error_delay_s": DELAY,
        "rcpt_error_max_delay_s": MAX_DELAY,
    }
}


@pytest.fixture(scope="module")
def rcpt_server(backend, tmp_path_factory):
    with served(backend, tmp_path_factory.mktemp("rcpt") / "demo", SETTINGS) as srv:
        yield srv


def timed_rcpt(client, address: str) -> tuple[int, bytes, float]:
    start = time.monotonic()
    code, text = client.rcpt(address)
    return code, text, time.monotonic() - start


def test_unknown_recipients_are_slowed_down_then_the_session_is_dropped(rcpt_server):
    server = rcpt_server
    dep = server.deployment
    claire, paul = dep.mailbox("PER", 0), dep.mailbox("PER", 1)
    c = smtp_client(server, claire)
    assert c.mail(claire["address"])[0] == 250
    unknown = [f"nobody-{n}@{dep.domain}" for n in range(HARD)]
    answers = []
    for n, address in enumerate(unknown[: HARD - 1]):
        answers.append(timed_rcpt(c, address))
        if n == 0:
            # A known recipient between refusals is accepted at once and counts nothing.
            code, _, took = timed_rcpt(c, paul["address"])
            assert code == 250 and took < DELAY
    assert [(code, text[:5]) for code, text, _ in answers] == [(550, b"5.1.1")] * (HARD - 1)
    took = [t for _, _, t in answers]
    # The free ones come at once, then DELAY x refusals over the soft limit, at most MAX_DELAY.
    assert all(t < DELAY for t in took[:SOFT]), took
    assert took[SOFT] >= DELAY and took[SOFT + 1] >= MAX_DELAY, took
    # The hard limit: 421 4.7.0 and the connection closes.
    code, text = c.rcpt(unknown[-1])
    assert code == 421 and text.startswith(b"4.7.0 Too many refused recipients"), text
    with pytest.raises((OSError, smtplib.SMTPServerDisconnected)):
        c.noop()
    assert "RCPT limit reached" in server.log_text()


def test_another_session_is_served_while_one_is_slowed_down(rcpt_server):
    server = rcpt_server
    dep = server.deployment
    claire, paul = dep.mailbox("PER", 0), dep.mailbox("PER", 1)
    slow = smtp_client(server, claire)
    assert slow.mail(claire["address"])[0] == 250
    for n in range(SOFT):
        assert slow.rcpt(f"ghost-{n}@{dep.domain}")[0] == 550
    # The next refusal waits DELAY (one over the soft limit): meanwhile another session,
    # on the same event loop, gets its answers at once.
    result: list[tuple[int, bytes, float]] = []
    worker = threading.Thread(target=lambda: result.append(timed_rcpt(slow, f"ghost-x@{dep.domain}")))
    other = smtp_client(server, paul)
    assert other.mail(paul["address"])[0] == 250
    worker.start()
    time.sleep(0.02)
    code, _, took = timed_rcpt(other, claire["address"])
    worker.join(10)
    assert code == 250 and took < DELAY, took
    assert result and result[0][0] == 550 and result[0][2] >= DELAY
    # Each session counts its own: the other one's first refusal is not delayed.
    code, _, took = timed_rcpt(other, f"ghost-y@{dep.domain}")
    assert code == 550 and took < DELAY
    other.quit()
    slow.quit()
