"""Two real MSS operators on one machine (`mss demo B --peer A`), end to end.

Each operator is its own `mss serve` process with its own database; mail goes from A's
submission port, through A's durable queue and relay worker, over mutual TLS with SERV
certificates to B's `mta` listener, and lands encrypted in B's store. The tests read the
stores only through tests/support.py (another process holds the SQLite files) and open what
they find with `openssl cms` and the recipient's private key.

Slow (each pair is two demos and two servers): `pytest -m "not slow"` leaves them out.
"""

from __future__ import annotations

import json
import re
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mail import build_message, openssl_decrypt, smtp_submission
from support import (
    ROOT,
    Deployment,
    ServerProcess,
    create_pg_database,
    drop_pg_database,
    start_server,
    stored_messages,
)

from mss.demo import create_demo, update_relay_config

pytestmark = pytest.mark.slow

A_DOMAIN = "hopital-a.mssante.test"
B_DOMAIN = "clinique-b.mssante.test"
# Fast relay for tests: a retry a second after a failure, a lease that a killed node gives
# back within seconds, a short poll.
FAST_RELAY = {"retry_schedule_s": [1.0], "poll_interval_s": 0.5, "lease_s": 5, "connect_timeout_s": 5}


@dataclass
class Operators:
    a: Deployment
    b: Deployment
    pg_names: list[str] = field(default_factory=list)
    servers: list[ServerProcess] = field(default_factory=list)

    def start(self, dep: Deployment) -> ServerProcess:
        srv = start_server(dep)
        self.servers.append(srv)
        return srv

    def stop_all(self) -> None:
        for srv in self.servers:
            srv.stop()
        for name in self.pg_names:
            drop_pg_database(name)


def make_operators(tmp: Path, backend: str, **relay: object) -> Operators:
    """Operator A, then B made with `--peer A`; both configs get `relay` settings."""
    urls, names = [], []
    for _ in range(2):
        if backend == "postgresql":
            name, url = create_pg_database()
            names.append(name)
        else:
            url = "sqlite+aiosqlite:///mss.db"
        urls.append(url)
    doc_a = create_demo(tmp / "a", domain=A_DOMAIN, base_port=0, database_url=urls[0], patients=False)
    doc_b = create_demo(tmp / "b", domain=B_DOMAIN, base_port=0, database_url=urls[1], patients=False, peer=tmp / "a")
    doc_a = json.loads((tmp / "a" / "demo.json").read_text())
    for d in ("a", "b"):
        update_relay_config(tmp / d / "mss.toml", **{**FAST_RELAY, **relay})
    return Operators(
        Deployment(tmp / "a", doc_a, urls[0], backend), Deployment(tmp / "b", doc_b, urls[1], backend), names
    )


def messages(dep: Deployment, address: str, folder: str = "INBOX") -> list[bytes]:
    import asyncio

    return asyncio.run(stored_messages(dep, address, folder))


def wait_messages(dep: Deployment, address: str, count: int, timeout: float = 30) -> list[bytes]:
    """Poll the store (through the store's own code) until `count` messages are there."""
    deadline = time.monotonic() + timeout
    got: list[bytes] = []
    while time.monotonic() < deadline:
        got = messages(dep, address)
        if len(got) >= count:
            return got
        time.sleep(0.3)
    raise AssertionError(f"{address}: {len(got)} message(s) after {timeout}s, expected {count}")


def queue_json(dep: Deployment) -> list[dict]:
    out = subprocess.run(
        [sys.executable, "-m", "mss", "queue", "list", "--json", "-c", str(dep.config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)["entries"]


def send(srv: ServerProcess, entry: dict, to: list[str], subject: str, body: str, **kw) -> str:
    raw, msgid = build_message(entry["address"], to, subject, body, extra=kw.pop("extra", ""))
    with smtp_submission(srv, entry) as client:
        refused = client.sendmail(entry["address"], to, raw, **kw)
    assert refused == {}, refused
    return msgid


def opened(dep: Deployment, entry: dict, stored: bytes, tmp: Path) -> bytes:
    return openssl_decrypt(dep, entry, stored, tmp)


def with_text(dep: Deployment, entry: dict, found: list[bytes], needle: bytes, tmp: Path) -> list[bytes]:
    """The decrypted messages among `found` that contain `needle`."""
    return [inner for inner in (opened(dep, entry, m, tmp) for m in found) if needle in inner]


@pytest.fixture(scope="module")
def running(backend, tmp_path_factory) -> Iterator[tuple[Operators, ServerProcess, ServerProcess]]:
    ops = make_operators(tmp_path_factory.mktemp(f"two-operators-{backend}"), backend)
    try:
        sa, sb = ops.start(ops.a), ops.start(ops.b)
        yield ops, sa, sb
    finally:
        ops.stop_all()


def test_a_professional_writes_to_another_operator_and_is_answered(running, tmp_path):
    ops, sa, sb = running
    claire, sophie = ops.a.mailbox("PER", 0), ops.b.mailbox("PER", 0)
    canary = f"canary-{time.time_ns()}"
    t0 = time.monotonic()
    send(sa, claire, [sophie["address"]], "Avis cardio", f"Bonjour, {canary}.", extra="X-MSS-Demo: garde\r\n")
    found = wait_messages(ops.b, sophie["address"], 1, timeout=15)
    assert time.monotonic() - t0 < 15
    assert canary.encode() not in found[-1]  # stored encrypted at B
    inner = opened(ops.b, sophie, found[-1], tmp_path)
    assert canary.encode() in inner
    # B verified A's DKIM signature with the key the demo configured and recorded it (RFC 8601):
    # inside the message B sealed (clear relay), or on the S/MIME message A sealed end to end.
    field = rb"^Authentication-Results:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*"
    outer_head = re.split(rb"\r?\n\r?\n", found[-1], maxsplit=1)[0]
    results = re.findall(field, inner, re.M | re.I) or re.findall(field, outer_head, re.M | re.I)
    assert results, inner[:2000]
    assert re.search(rb"dkim=pass", results[0]) and B_DOMAIN.encode() in results[0]
    assert re.search(rb"header\.d=" + re.escape(A_DOMAIN.encode()), results[0])
    # End to end across operators: the demo publishes each side's PER certificates to the other,
    # so A sealed the message to Sophie's key and B stored A's S/MIME as it came, with B's trace
    # fields on top (RFC 5321 4.4).
    assert re.search(rb"^Received: from .* by .*", outer_head, re.M)
    # B's verdict on A's signature sits on the S/MIME message A sealed, not inside it.
    assert re.findall(field, outer_head, re.M | re.I) and not re.findall(field, inner, re.M | re.I)
    assert re.search(rb"^X-MSS-Demo: garde\r?$", inner, re.M)  # X-MSS-* headers cross operators as they are
    # Nothing is left in A's queue once B said 250.
    assert queue_json(ops.a) == []
    # B answers: the same way back.
    reply = f"reply-{time.time_ns()}"
    send(sb, sophie, [claire["address"]], "Re: Avis cardio", f"Bien recu, {reply}.")
    back = wait_messages(ops.a, claire["address"], 1, timeout=15)
    assert with_text(ops.a, claire, back, reply.encode(), tmp_path)


def test_an_unknown_recipient_at_b_returns_a_failure_dsn_with_5_1_1(running, tmp_path):
    ops, sa, _ = running
    paul = ops.a.mailbox("PER", 1)
    before = len(messages(ops.a, paul["address"]))
    send(sa, paul, [f"nobody@{B_DOMAIN}"], "Pour personne", "Ce message n'arrivera pas.")
    found = wait_messages(ops.a, paul["address"], before + 1, timeout=20)
    dsn = with_text(ops.a, paul, found, b"report-type=delivery-status", tmp_path)
    assert len(dsn) == 1, "one failure DSN"
    assert b"Status: 5.1.1" in dsn[0] and b"Action: failed" in dsn[0]
    assert f"Final-Recipient: rfc822;nobody@{B_DOMAIN}".encode() in dsn[0].replace(b"; ", b";")
    assert queue_json(ops.a) == []


def test_notify_success_gives_a_success_dsn(running, tmp_path):
    ops, sa, sb = running
    claire, luc = ops.a.mailbox("PER", 0), ops.b.mailbox("PER", 1)
    before_claire, before_luc = len(messages(ops.a, claire["address"])), len(messages(ops.b, luc["address"]))
    send(
        sa,
        claire,
        [luc["address"]],
        "Avec accuse",
        "Merci de confirmer.",
        mail_options=["RET=HDRS", "ENVID=test-envid-1"],
        rcpt_options=["NOTIFY=SUCCESS,FAILURE"],
    )
    wait_messages(ops.b, luc["address"], before_luc + 1, timeout=15)
    found = wait_messages(ops.a, claire["address"], before_claire + 1, timeout=20)
    dsn = with_text(ops.a, claire, found, b"test-envid-1", tmp_path)
    assert len(dsn) == 1, "one success DSN"
    assert b"Action: delivered" in dsn[0] or b"Action: relayed" in dsn[0]
    assert b"Status: 2." in dsn[0]
    assert b"Original-Envelope-Id: test-envid-1" in dsn[0]


def test_queued_while_b_is_down_and_delivered_once_after_kill_9(backend, tmp_path):
    ops = make_operators(tmp_path, backend)
    try:
        claire, paul = ops.a.mailbox("PER", 0), ops.a.mailbox("PER", 1)
        sophie, luc = ops.b.mailbox("PER", 0), ops.b.mailbox("PER", 1)
        sa = ops.start(ops.a)
        # B is down: A answers 250 and keeps the message in its queue.
        first = f"first-{time.time_ns()}"
        send(sa, claire, [sophie["address"]], "B est arrete", first)
        time.sleep(2)
        entries = queue_json(ops.a)
        assert [r["address"] for e in entries for r in e["recipients"]] == [sophie["address"]]
        assert entries[0]["attempts"] >= 1 and entries[0]["last_error"]
        # B comes up: the next retry delivers it.
        sb = ops.start(ops.b)
        found = wait_messages(ops.b, sophie["address"], 1, timeout=20)
        assert with_text(ops.b, sophie, found, first.encode(), tmp_path)
        sb.stop()
        # B down again, three messages queued, then A is killed without a chance to clean up.
        tags = [f"queued-{i}-{time.time_ns()}" for i in range(3)]
        send(sa, claire, [sophie["address"], luc["address"]], "Un", tags[0])
        send(sa, paul, [luc["address"]], "Deux", tags[1])
        send(sa, claire, [sophie["address"]], "Trois", tags[2])
        time.sleep(1)
        assert sa.stop(signal.SIGKILL) == -signal.SIGKILL
        assert len(queue_json(ops.a)) == 3
        sb = ops.start(ops.b)
        ops.start(ops.a)
        got_sophie = wait_messages(ops.b, sophie["address"], 3, timeout=30)
        got_luc = wait_messages(ops.b, luc["address"], 2, timeout=30)
        time.sleep(3)  # a duplicate would arrive at the next retry
        got_sophie, got_luc = messages(ops.b, sophie["address"]), messages(ops.b, luc["address"])
        assert len(got_sophie) == 3 and len(got_luc) == 2
        texts_s = [opened(ops.b, sophie, m, tmp_path) for m in got_sophie]
        texts_l = [opened(ops.b, luc, m, tmp_path) for m in got_luc]
        for tag, where in ((tags[0], texts_s), (tags[0], texts_l), (tags[1], texts_l), (tags[2], texts_s)):
            assert sum(tag.encode() in t for t in where) == 1, tag
        assert queue_json(ops.a) == []
    finally:
        ops.stop_all()


def test_a_message_that_cannot_be_delivered_in_time_returns_a_failure_dsn(backend, tmp_path):
    ops = make_operators(tmp_path, backend, max_age_s=4)
    try:
        claire, sophie = ops.a.mailbox("PER", 0), ops.b.mailbox("PER", 0)
        sa = ops.start(ops.a)  # B never starts
        send(sa, claire, [sophie["address"]], "Trop tard", "Jamais livre.", rcpt_options=["NOTIFY=FAILURE"])
        found = wait_messages(ops.a, claire["address"], 1, timeout=30)
        dsn = with_text(ops.a, claire, found, b"report-type=delivery-status", tmp_path)
        assert len(dsn) == 1
        assert b"Action: failed" in dsn[0] and re.search(rb"Status: 4\.\d\.\d", dsn[0]), dsn[0][:3000]
        assert f"rfc822;{sophie['address']}".encode() in dsn[0].replace(b"; ", b";")
        assert queue_json(ops.a) == []
        assert messages(ops.b, sophie["address"]) == []
    finally:
        ops.stop_all()


def test_a_domain_outside_the_trust_space_is_refused_at_submission(running):
    """A's submission knows B is another operator; a domain outside the whitelist is refused
    at A already (nothing is queued for it)."""
    ops, sa, _ = running
    claire = ops.a.mailbox("PER", 0)
    with smtp_submission(sa, claire) as client:
        client.mail(claire["address"])
        code, _ = client.rcpt("someone@gmail.com")
        assert code == 550
    assert all(e["domain"] != "gmail.com" for e in queue_json(ops.a))


def test_b_mta_listener_offers_what_a_relay_needs(running):
    """B's mta listener as A's relay sees it: STARTTLS offered, DSN advertised."""
    ops, _, sb = running
    with smtplib.SMTP(sb.host, sb.port("mta"), timeout=10) as c:
        c.ehlo("localhost")
        assert c.has_extn("starttls")
        c.starttls(
            context=ops.a.client_context(
                cert=ops.a.directory / "pki/server.crt", key=ops.a.directory / "pki/server.key"
            )
        )
        c.ehlo("localhost")
        for ext in ("dsn", "8bitmime", "pipelining", "enhancedstatuscodes", "smtputf8"):
            assert c.has_extn(ext), ext
