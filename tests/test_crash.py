"""Nothing is lost: every message that got a 250 is there after `kill -9` and a restart."""

from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import ssl
import threading
import time

import pytest
from mail import build_message, smtp_submission
from support import start_server, stored_messages


@pytest.mark.slow
def test_kill_9_while_clients_send_loses_no_acknowledged_message(fresh_deployment):
    dep = fresh_deployment
    claire, paul = dep.mailbox("PER", 0), dep.mailbox("PER", 1)
    srv = start_server(dep)
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def sender() -> None:
        try:
            with smtp_submission(srv, claire, timeout=10) as smtp:
                while not stop.is_set():
                    raw, msgid = build_message(claire["address"], [paul["address"]], "crash", ("x" * 70 + "\n") * 30)
                    smtp.sendmail(claire["address"], [paul["address"]], raw)
                    with lock:  # reached only after the server's 250
                        acked.append(msgid)
        except (smtplib.SMTPException, OSError, ssl.SSLError):
            return

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(srv.proc.pid, signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(20)
    srv.proc.wait(10)
    assert len(acked) >= 40, "the server did not accept enough messages before the kill"

    srv2 = start_server(dep)
    try:
        stored = b"\n".join(asyncio.run(stored_messages(dep, paul["address"])))
        missing = [m for m in acked if m.encode() not in stored]
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged messages lost"
        # And the restarted server accepts mail again.
        raw, msgid = build_message(claire["address"], [paul["address"]], "after", "after restart")
        with smtp_submission(srv2, claire) as smtp:
            assert smtp.sendmail(claire["address"], [paul["address"]], raw) == {}
    finally:
        srv2.stop()
