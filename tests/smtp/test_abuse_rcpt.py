"""Recipient enumeration (issue 13: 2,000 unknown recipients answered `550 5.1.1` in 2.3 s on
one connection): a session that collects refused recipients is slowed down, then dropped
with `421 4.7.0`; other sessions are served meanwhile. A real `mss serve`, smtplib over TLS."""

from __future__ import annotations

import asyncio
import smtplib
import threading
import time

import pytest
from abuse_support import served, smtp_client
from mail import build_message
from support import stored_messages

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
    slow = smtp_client(server, claire, source="127.0.0.5")  # claire's count from 127.0.0.1 is spent
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


def test_reconnecting_does_not_start_the_count_again(rcpt_server):
    """Refusals are counted per principal and source address across sessions: an enumerator
    that reconnects before the hard limit keeps its delays and is dropped all the same."""
    server = rcpt_server
    dep = server.deployment
    claire = dep.mailbox("PER", 0)
    source = "127.0.0.6"
    first = smtp_client(server, claire, source=source)
    assert first.mail(claire["address"])[0] == 250
    for n in range(SOFT):  # the free ones
        code, _, took = timed_rcpt(first, f"probe-{n}@{dep.domain}")
        assert code == 550 and took < DELAY, took
    first.quit()
    second = smtp_client(server, claire, source=source)
    assert second.mail(claire["address"])[0] == 250
    # A new session, but the next refusal is the third: delayed.
    code, _, took = timed_rcpt(second, f"probe-x@{dep.domain}")
    assert code == 550 and took >= DELAY, took
    second.quit()
    third = smtp_client(server, claire, source=source)
    assert third.mail(claire["address"])[0] == 250
    assert third.rcpt(f"probe-y@{dep.domain}")[0] == 550  # the fourth
    code, text = third.rcpt(f"probe-z@{dep.domain}")  # the fifth: the hard limit
    assert code == 421 and text.startswith(b"4.7.0 Too many refused recipients (5)"), text
    with pytest.raises((OSError, smtplib.SMTPServerDisconnected)):
        third.noop()


def test_nothing_pipelined_after_the_421_runs(rcpt_server):
    """A DATA and its message pipelined behind the RCPT that reached the hard limit are not
    acted on: the session ends at the 421, nothing is stored."""
    server = rcpt_server
    dep = server.deployment
    claire, paul = dep.mailbox("PER", 0), dep.mailbox("PER", 1)
    before = len(asyncio.run(stored_messages(dep, paul["address"])))
    c = smtp_client(server, claire, source="127.0.0.7")
    assert c.mail(claire["address"])[0] == 250
    assert c.rcpt(paul["address"])[0] == 250
    for n in range(HARD - 1):
        assert c.rcpt(f"pipe-{n}@{dep.domain}")[0] == 550
    message, _ = build_message(claire["address"], [paul["address"]], "pipelined", "Bonjour.")
    c.sock.sendall(f"RCPT TO:<pipe-last@{dep.domain}>\r\nDATA\r\n".encode() + message + b".\r\nQUIT\r\n")
    c.sock.settimeout(10)
    said = b""
    while chunk := c.sock.recv(4096):
        said += chunk
    assert said.startswith(b"421 4.7.0 Too many refused recipients"), said
    assert b"354" not in said and b"250" not in said, said
    c.close()
    assert len(asyncio.run(stored_messages(dep, paul["address"]))) == before


def test_refusals_are_forgotten_one_per_decay_period():
    from smtp.handler import RefusalMemory

    now = [0.0]
    memory = RefusalMemory(10, clock=lambda: now[0])
    assert [memory.add("claire|127.0.0.1") for _ in range(3)] == [1, 2, 3]
    now[0] = 20  # two forgotten
    assert memory.add("claire|127.0.0.1") == 2
    assert memory.add("paul|127.0.0.1") == 1  # each key its own
    now[0] = 1000
    assert memory.add("claire|127.0.0.1") == 1
