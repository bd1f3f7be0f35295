"""The tamper-evident audit trail (mss.audit, `mss audit`), on both backends: the events a
known workload on a running `mss serve` leaves, the chain across concurrent writers, and
`mss audit verify` naming a row edited, deleted or inserted with SQL behind the server's back
(through a connection of the test's own, the server stopped), and a tail cut off (anchor)."""

from __future__ import annotations

import asyncio
import imaplib
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mail import smtp_submission
from sqlalchemy import text
from support import ROOT, run_alembic, start_server

from mss import audit
from mss.audit import GENESIS, AuditTrail, Record, canonical, row_hash
from mss.db.engine import create_engine, is_sqlite, sessionmaker

pytestmark = pytest.mark.timeout(180)


def run_mss(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m mss ARGS -c CONFIG`, as an operator runs it."""
    res = subprocess.run(
        [sys.executable, "-m", "mss", *args, "-c", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if check and res.returncode != 0:
        raise AssertionError(f"mss {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def exported(config: Path, *args: str) -> list[dict]:
    out = run_mss(config, "audit", "export", *args).stdout
    return [json.loads(line) for line in out.splitlines()]


async def execute(url: str, *statements: str, params: dict | None = None) -> None:
    """SQL on a connection of the test's own, as a DBA would (the triggers dropped first)."""
    engine = create_engine(url)
    try:
        async with engine.begin() as c:
            for sql in statements:
                await c.execute(text(sql), params or {})
    finally:
        await engine.dispose()


def unprotect(url: str) -> list[str]:
    """What a DBA runs before rewriting the table: the append-only triggers go."""
    if is_sqlite(url):
        return ["DROP TRIGGER audit_event_no_update", "DROP TRIGGER audit_event_no_delete"]
    return ["ALTER TABLE audit_event DISABLE TRIGGER USER"]


async def fetch(url: str, sql: str, params: dict | None = None) -> list:
    engine = create_engine(url)
    try:
        async with engine.connect() as c:
            return list((await c.execute(text(sql), params or {})).all())
    finally:
        await engine.dispose()


# -- a database with only the schema, and a config for the CLI on it ----------------------------


@pytest.fixture
def db(empty_database_url: str, tmp_path: Path) -> tuple[str, Path]:
    run_alembic(empty_database_url, "upgrade", "head")
    config = tmp_path / "mss.toml"
    config.write_text(f'domain = "audit.test"\ndatabase_url = "{empty_database_url}"\nlog_file = ""\n')
    return empty_database_url, config


async def record_events(url: str, n: int, *, start: int = 0) -> None:
    engine = create_engine(url)
    trail = AuditTrail(sessionmaker(engine))
    try:
        for i in range(start, start + n):
            await trail.record("test.event", actor="cli:tester", subject=f"box{i}@audit.test", n=i)
    finally:
        await engine.dispose()


def verify(config: Path, *args: str) -> tuple[int, str, dict]:
    res = run_mss(config, "audit", "verify", *args, check=False)
    doc = json.loads(run_mss(config, "audit", "verify", "--json", *args, check=False).stdout)
    return res.returncode, res.stdout, doc


# -- the chain format ----------------------------------------------------------------------------


def test_the_documented_serialisation_is_what_is_hashed():
    """docs/operations.md gives the format; a verifier written from it must agree."""
    fields = audit.fields_json({"b": 1, "a": "é"})
    assert fields == '{"a":"é","b":1}'
    raw = canonical(1, "2026-12-02T10:00:00.000000Z", "login", "PS:1", "x@y", "ok", fields, GENESIS)
    assert (
        raw
        == (
            '["mss-audit-1",1,"2026-12-02T10:00:00.000000Z","login","PS:1","x@y","ok","{\\"a\\":\\"é\\",\\"b\\":1}",'
            f'"{GENESIS}"]'
        ).encode()
    )
    import hashlib

    assert row_hash(1, "2026-12-02T10:00:00.000000Z", "login", "PS:1", "x@y", "ok", fields, GENESIS) == (
        hashlib.sha256(raw).hexdigest()
    )


@pytest.mark.parametrize("name", ["password", "app_password", "secret", "token", "content", "body", "code"])
def test_an_event_may_not_carry_a_field_named_like_a_secret(name):
    with pytest.raises(ValueError, match="looks like a secret"):
        Record.of("x", actor="cli:a", **{name: "hunter2"})


def test_long_client_values_are_cut():
    rec = Record.of("x", actor="cli:a", detail="A" * 5000)
    assert len(json.loads(rec.fields)["detail"]) < 300


# -- schema ---------------------------------------------------------------------------------------


async def test_migration_up_down_up_and_the_table_refuses_update_and_delete(empty_database_url):
    url = empty_database_url
    await asyncio.to_thread(run_alembic, url, "upgrade", "head")
    await record_events(url, 2)
    for sql in ("UPDATE audit_event SET outcome = 'x' WHERE seq = 1", "DELETE FROM audit_event WHERE seq = 2"):
        with pytest.raises(Exception, match="append-only"):
            await execute(url, sql)
    if not is_sqlite(url):
        with pytest.raises(Exception, match="append-only"):
            await execute(url, "TRUNCATE audit_event")
    assert [r[0] for r in await fetch(url, "SELECT seq FROM audit_event ORDER BY seq")] == [1, 2]

    await asyncio.to_thread(run_alembic, url, "downgrade", "0006")
    tables = {r[0] for r in await fetch(url, _TABLES[is_sqlite(url)])}
    assert "audit_event" not in tables and "audit_head" not in tables and "portal_session" in tables

    # Idempotent: a half-done earlier run (the table there, no head, no triggers) completes.
    await execute(url, "CREATE TABLE audit_event (seq BIGINT PRIMARY KEY, at VARCHAR(32) NOT NULL, "
                  "type VARCHAR(64) NOT NULL, actor VARCHAR(400) NOT NULL, subject VARCHAR(400) NOT NULL, "
                  "outcome VARCHAR(16) NOT NULL, fields TEXT NOT NULL, prev_hash VARCHAR(64) NOT NULL, "
                  "hash VARCHAR(64) NOT NULL)")  # fmt: skip
    await asyncio.to_thread(run_alembic, url, "upgrade", "head")
    assert await fetch(url, "SELECT id, seq, hash FROM audit_head") == [(1, 0, GENESIS)]
    await record_events(url, 1)
    with pytest.raises(Exception, match="append-only"):
        await execute(url, "DELETE FROM audit_event")


_TABLES = {
    True: "SELECT name FROM sqlite_master WHERE type = 'table'",
    False: "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
}


# -- writers across processes ---------------------------------------------------------------------

_WRITER = """
import asyncio, sys
from mss.audit import AuditTrail
from mss.db.engine import create_engine, sessionmaker

async def main(url, name, n):
    engine = create_engine(url)
    trail = AuditTrail(sessionmaker(engine))
    async with engine.connect():  # connected: then wait for the start (both at once)
        pass
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(n // 2):  # half durable one by one, half through the group-commit queue
        await trail.record("test.concurrent", actor=f"cli:{name}", subject=name, n=i)
    for i in range(n // 2, n):
        trail.submit("test.concurrent", actor=f"cli:{name}", subject=name, n=i)
    await trail.close()
    await engine.dispose()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def test_concurrent_appends_from_two_processes_keep_one_valid_chain(db):
    url, config = db
    n = 150
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, url, name, str(n)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name in ("writer-a", "writer-b")
    ]
    for p in procs:
        assert p.stdout.readline() == b"ready\n", p.stderr.read().decode()
    for p in procs:
        p.stdin.write(b"go\n")
        p.stdin.flush()
    # Verified while they write: the appends in flight do not look like a broken chain.
    while all(p.poll() is None for p in procs):
        code, out, _ = verify(config)
        assert code == 0, out
    for p in procs:
        _, err = p.communicate(timeout=150)
        assert p.returncode == 0, err.decode()
    rows = asyncio.run(fetch(url, "SELECT seq, subject FROM audit_event ORDER BY seq"))
    assert [r[0] for r in rows] == list(range(1, 2 * n + 1))  # gapless, unique
    assert {r[1] for r in rows} == {"writer-a", "writer-b"}
    # Interleaved, not one process after the other (else the test proves nothing): at least
    # a, then b, then a again. On a loaded machine the scheduler may give each a long run.
    switches = sum(1 for a, b in itertools.pairwise(rows) if a[1] != b[1])
    assert switches >= 2
    code, out, doc = verify(config)
    assert code == 0, out
    assert doc["events"] == 2 * n and doc["ok"]


# -- verify: edits, deletions, insertions, a cut tail ---------------------------------------------


def test_verify_names_an_edited_row(db):
    url, config = db
    asyncio.run(record_events(url, 10))
    assert verify(config)[0] == 0
    asyncio.run(execute(url, *unprotect(url), "UPDATE audit_event SET actor = 'cli:someone-else' WHERE seq = 4"))
    code, out, doc = verify(config)
    assert code == 1
    assert "seq 4: content does not match its hash" in out
    assert [p["seq"] for p in doc["problems"]] == [4]


def test_verify_names_an_edited_row_whose_hash_was_recomputed(db):
    """The editor recomputes the row's hash: the next row's link names it."""
    url, config = db
    asyncio.run(record_events(url, 10))
    (row,) = asyncio.run(
        fetch(url, "SELECT seq, at, type, actor, subject, outcome, fields, prev_hash FROM audit_event WHERE seq = 6")
    )
    forged = row_hash(row[0], row[1], row[2], "cli:nobody", *row[4:])
    asyncio.run(
        execute(
            url,
            *unprotect(url),
            "UPDATE audit_event SET actor = 'cli:nobody', hash = :h WHERE seq = 6",
            params={"h": forged},
        )
    )
    code, out, doc = verify(config)
    assert code == 1
    assert [p["seq"] for p in doc["problems"]] == [7]
    assert "not the hash of seq 6" in out and "seq 6 was rewritten" in out


def test_verify_names_a_deleted_row(db):
    url, config = db
    asyncio.run(record_events(url, 10))
    asyncio.run(execute(url, *unprotect(url), "DELETE FROM audit_event WHERE seq = 5"))
    code, out, doc = verify(config)
    assert code == 1
    assert "seq 6: seq 5 missing before it: row(s) deleted" in out
    assert [p["seq"] for p in doc["problems"]] == [6]


def test_verify_names_an_inserted_row(db):
    """A row slipped in at seq 4 with a well-formed hash: the later rows were renumbered to
    make room, and the first of them no longer links to its predecessor."""
    url, config = db
    asyncio.run(record_events(url, 8))
    rows = asyncio.run(fetch(url, "SELECT seq, hash FROM audit_event ORDER BY seq"))
    prev = rows[2][1]  # seq 3
    at = "2026-12-02T10:00:00.000000Z"
    fields = audit.fields_json({})
    forged = row_hash(4, at, "mailbox.created", "cli:root", "evil@audit.test", "ok", fields, prev)
    renumber = [f"UPDATE audit_event SET seq = {s + 1} WHERE seq = {s}" for s in range(8, 3, -1)]  # noqa: S608
    asyncio.run(
        execute(
            url,
            *unprotect(url),
            *renumber,
            "INSERT INTO audit_event (seq, at, type, actor, subject, outcome, fields, prev_hash, hash) "
            "VALUES (4, :at, 'mailbox.created', 'cli:root', 'evil@audit.test', 'ok', :f, :p, :h)",
            params={"at": at, "f": fields, "p": prev, "h": forged},
        )
    )
    code, out, doc = verify(config)
    assert code == 1
    assert "seq 5: its prev_hash is the hash of the row before seq 4: seq 4 was inserted" in out
    assert "seq 5: this row was seq 4 (renumbered" in out
    assert doc["problems"][0]["seq"] == 5
    assert all(p["seq"] >= 5 for p in doc["problems"])  # seq 1..4 verify


def test_a_cut_tail_is_caught_by_the_anchor_only(db, tmp_path):
    """Deleting the last rows and moving the head back leaves a valid chain: the anchor
    exported before is what shows the cut."""
    url, config = db
    asyncio.run(record_events(url, 5))
    anchor = tmp_path / "anchor.json"
    printed = json.loads(run_mss(config, "audit", "anchor", "--out", str(anchor)).stdout)
    assert printed == json.loads(anchor.read_text()) and printed["seq"] == 5
    asyncio.run(record_events(url, 2, start=5))
    code, out, _ = verify(config, "--anchor", str(anchor))
    assert code == 0 and "reaches the anchor seq 5" in out

    (seq3,) = asyncio.run(fetch(url, "SELECT hash FROM audit_event WHERE seq = 3"))
    asyncio.run(
        execute(
            url,
            *unprotect(url),
            "DELETE FROM audit_event WHERE seq > 3",
            "UPDATE audit_head SET seq = 3, hash = :h",
            params={"h": seq3[0]},
        )
    )
    assert verify(config)[0] == 0  # what a bare chain cannot see
    code, out, doc = verify(config, "--anchor", str(anchor))
    assert code == 1
    assert "seq 5: the anchor's seq 5 is not in the chain (it ends at seq 3): the tail was cut" in out


def test_a_cut_tail_without_moving_the_head_is_named(db):
    url, config = db
    asyncio.run(record_events(url, 5))
    asyncio.run(execute(url, *unprotect(url), "DELETE FROM audit_event WHERE seq >= 4"))
    code, out, _ = verify(config)
    assert code == 1 and "audit_head says the chain ends at seq 5" in out and "it ends at seq 3" in out


def test_anchor_of_a_day_and_its_hmac(db, tmp_path):
    url, config = db
    asyncio.run(record_events(url, 3))
    key = tmp_path / "anchor.key"
    key.write_text("k" * 32)
    config.write_text(config.read_text() + f'\n[audit]\nanchor_key_file = "{key}"\n')
    old = json.loads(run_mss(config, "audit", "anchor", "--day", "2020-01-01").stdout)
    assert old["seq"] == 0 and old["day"] == "2020-01-01"  # nothing recorded by then
    anchor = tmp_path / "a.json"
    run_mss(config, "audit", "anchor", "--out", str(anchor))
    doc = json.loads(anchor.read_text())
    assert doc["seq"] == 3 and len(doc["hmac_sha256"]) == 64
    assert verify(config, "--anchor", str(anchor))[0] == 0
    doc["seq"] = 2  # someone "fixes" the anchor to match a shortened chain
    anchor.write_text(json.dumps(doc))
    res = run_mss(config, "audit", "verify", "--anchor", str(anchor), check=False)
    assert res.returncode != 0 and "hmac_sha256 does not match" in res.stderr
    bad = run_mss(config, "audit", "anchor", "--day", "2999-01-01", check=False)
    assert bad.returncode == 2 and "in the future" in bad.stderr


def test_export_since_writes_json_lines(db, tmp_path):
    url, config = db
    asyncio.run(record_events(url, 4))
    rows = asyncio.run(fetch(url, "SELECT seq, at FROM audit_event ORDER BY seq"))
    since = rows[2][1].replace("Z", "+00:00")
    lines = exported(config, "--since", since)
    assert [e["seq"] for e in lines] == [3, 4]
    assert lines[0]["fields"] == {"n": 2} and lines[0]["type"] == "test.event"
    out = tmp_path / "events.jsonl"
    run_mss(config, "audit", "export", "--out", str(out))
    assert [json.loads(line)["seq"] for line in out.read_text().splitlines()] == [1, 2, 3, 4]
    assert exported(config, "--since", "2999-01-01") == []
    bad = run_mss(config, "audit", "export", "--since", "yesterday", check=False)
    assert bad.returncode == 2 and "not an ISO date" in bad.stderr


async def test_a_queued_event_survives_a_database_outage_and_a_full_queue_is_recorded(db):
    """`submit()` keeps events while the database refuses writes and writes them after;
    events beyond `max_pending` are not silently lost: their count is an `audit.dropped` event."""
    url, config = db
    engine = create_engine(url)
    trail = AuditTrail(sessionmaker(engine), max_pending=100, retry_s=0.01)
    broken = AuditTrail(sessionmaker(create_engine("sqlite+aiosqlite:////nonexistent/dir/x.db")), retry_s=0.01)
    try:
        # An unreachable database: nothing raises into the caller, and a stop that cannot
        # write keeps the event counted (and logs it), not forgotten.
        broken.submit("test.outage", actor="cli:a")
        await broken.close(timeout=0.2)
        assert broken.pending == 1
        for i in range(105):
            trail.submit("test.burst", actor="cli:a", n=i)  # no await: the queue overflows
        await trail.flush()
        rows = await fetch(url, "SELECT type, fields FROM audit_event ORDER BY seq")
        assert rows[0] == ("audit.dropped", '{"count":5}')
        assert [json.loads(f)["n"] for t, f in rows[1:]] == list(range(100))
        assert verify(config)[0] == 0
    finally:
        await trail.close()
        await engine.dispose()


# -- a known workload on a running server -----------------------------------------------------------


def test_a_running_servers_workload_is_audited_and_tampering_caught(fresh_deployment, tmp_path):
    dep = fresh_deployment
    config = dep.config
    claire = dep.mailbox("PER", 0)
    created = json.loads(
        run_mss(config, "mailbox", "app-password", claire["address"], "--label", "audit", "--json").stdout
    )
    srv = start_server(dep)
    try:
        ctx = dep.client_context(claire)
        m = imaplib.IMAP4_SSL(srv.host, srv.port("imaps"), ssl_context=ctx, timeout=20)
        assert m.login(claire["address"], created["password"])[0] == "OK"
        m.logout()
        m = imaplib.IMAP4_SSL(srv.host, srv.port("imaps"), ssl_context=ctx, timeout=20)
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            m.login(claire["address"], "not-the-password")
        m.logout()
        m = imaplib.IMAP4_SSL(srv.host, srv.port("imaps"), ssl_context=ctx, timeout=20)
        m.authenticate("EXTERNAL", lambda _: b"")
        m.logout()
        smtp = smtp_submission(srv, claire)  # STARTTLS: the certificate is checked at once
        assert smtp.mail(claire["address"])[0] == 250  # MAIL waits for that check
        smtp.quit()
    finally:
        assert srv.stop() == 0  # a clean stop writes the queued login events
    run_mss(config, "mailbox", "app-password", claire["address"], "--revoke", str(created["id"]))

    events = exported(config)
    everything = json.dumps(events)
    assert created["password"] not in everything and "not-the-password" not in everything
    made = [e for e in events if e["type"] == "app_password.created"]
    assert made[-1]["subject"] == claire["address"] and made[-1]["fields"] == {"id": created["id"], "label": "audit"}
    assert made[-1]["actor"].startswith("cli:")
    logins = [e for e in events if e["type"] == "login" and e["fields"]["protocol"] == "imap"]
    who = f"PS:{claire['idnat']}"
    assert [(e["outcome"], e["fields"]["mechanism"]) for e in logins] == [
        ("ok", "LOGIN"),
        ("refused", "LOGIN"),
        ("ok", "EXTERNAL"),
    ]
    assert logins[0]["actor"] == who and logins[0]["subject"] == claire["address"]
    assert logins[1]["fields"]["reason"] == "app_password:wrong" and logins[1]["actor"].startswith("peer:127.0.0.1")
    (smtp_cert,) = [e for e in events if e["type"] == "login.certificate"]
    assert (smtp_cert["outcome"], smtp_cert["actor"], smtp_cert["fields"]["protocol"]) == ("ok", who, "smtp")
    revoked = events[-1]
    assert revoked["type"] == "app_password.revoked" and revoked["fields"] == {"count": 1, "ids": str(created["id"])}
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert verify(config)[0] == 0

    # The server stopped: someone turns the refused login into a success behind its back.
    refused = logins[1]["seq"]
    asyncio.run(
        execute(
            dep.settings().resolved_database_url,
            *unprotect(dep.database_url),
            "UPDATE audit_event SET outcome = 'ok' WHERE seq = :seq",
            params={"seq": refused},
        )
    )
    code, out, doc = verify(config)
    assert code == 1 and f"seq {refused}: content does not match its hash" in out
    assert [p["seq"] for p in doc["problems"]] == [refused]


def test_revocation_and_mailbox_life_cycle_are_audited(fresh_deployment, tmp_path):
    dep = fresh_deployment
    config = dep.config
    address = f"nouveau.medecin@{dep.domain}"
    run_mss(config, "mailbox", "create", address, "--type", "PER", "--idnat", "810001234565", "--out", str(tmp_path))
    rolled = json.loads(run_mss(config, "mailbox", "rollover", address, "--out", str(tmp_path), "--json").stdout)
    revoked = json.loads(
        run_mss(config, "pki", "revoke", rolled["cert"], "--reason", "key_compromise", "--json").stdout
    )
    events = exported(config)
    kinds = [(e["type"], e["subject"]) for e in events[-3:]]
    assert kinds == [
        ("mailbox.created", address),
        ("mailbox.key_rollover", address),
        ("certificate.revoked", f"certificate:{revoked['revoked']}"),
    ]
    assert events[-2]["fields"] == {"key_serial": rolled["serial"], "retired": 1}
    assert events[-1]["fields"]["reason"] == "key_compromise"
    assert verify(config)[0] == 0


# -- review fixes: unstorable strings, what is not recorded, enabled = false, read-only CLI ------


def test_strings_are_cleaned_to_storable_text():
    """A lone surrogate (client bytes decoded with surrogateescape) and NUL and other controls
    become escapes in every column and field: the hash input always encodes, PostgreSQL text
    always takes it."""
    rec = Record.of("x\x00", actor="peer:\udcff", subject="a\r\nb", outcome="ok", detail="alg=\x00\ud800\x7f")
    assert (rec.type, rec.actor, rec.subject) == ("x\\x00", "peer:\\udcff", "a\\x0d\\x0ab")
    assert json.loads(rec.fields) == {"detail": "alg=\\x00\\ud800\\x7f"}
    row_hash(1, rec.at, rec.type, rec.actor, rec.subject, rec.outcome, rec.fields, GENESIS)  # encodes
    assert Record.of("x", actor="PS:é €", detail="日本").actor == "PS:é €"  # printable text kept


def test_ipv6_peers_lose_their_port_in_the_actor():
    from mss.peers import peer_host

    assert peer_host("[2001:db8::1]:4000") == "2001:db8::1"
    assert peer_host("192.0.2.7:4000") == "192.0.2.7"
    assert peer_host("2001:db8::1") == "2001:db8::1" and peer_host("?") == "?"
    trail = AuditTrail(None)  # no loop: submit only queues
    trail.submit_login("imap", "[2001:db8::1]:4000", "auth", "refused", "LOGIN", {"reason": "app_password:wrong"})
    (rec,) = trail._pending
    assert rec.actor == "peer:2001:db8::1" and json.loads(rec.fields)["peer"] == "[2001:db8::1]:4000"


@pytest.mark.parametrize(
    ("event", "outcome", "mechanism", "reason", "kept"),
    [
        ("auth", "malformed", "PLAIN", "plain_malformed", False),
        ("auth", "cancelled", "PLAIN", "client_cancelled", False),
        ("auth", "unsupported", "FOO", "mechanism_not_offered", False),
        ("certificate", "refused", None, "no_certificate", False),
        ("certificate", "refused", None, "expired", True),
        ("auth", "refused", "EXTERNAL", "no_certificate", True),
        ("auth", "refused", "LOGIN", "app_password:wrong", True),
        ("auth", "throttled", "LOGIN", "backoff", True),
        ("auth", "unavailable", "LOGIN", "error", True),
        ("auth", "unauthorized", "PLAIN", "authzid_not_entitled", True),
        ("auth", "ok", "EXTERNAL", "", True),
    ],
)
def test_only_results_about_a_credential_are_recorded(event, outcome, mechanism, reason, kept):
    trail = AuditTrail(None)
    trail.submit_login("smtp", "192.0.2.1:25", event, outcome, mechanism, {"reason": reason})
    assert trail.pending == (1 if kept else 0)


async def test_surrogates_and_nul_are_stored_and_an_unstorable_event_does_not_block_the_queue(db):
    url, config = db
    engine = create_engine(url)
    trail = AuditTrail(sessionmaker(engine), retry_s=0.01)
    try:
        # Through the API: cleaned, stored, verifiable, on both backends.
        await trail.record("test.dirty", actor="peer:\udcff", subject="x\x00y", detail="alg=\x00\udc80")
        trail.submit("test.dirty", actor="peer:a\x00", detail="\ud800")
        await asyncio.wait_for(trail.flush(), 30)
        rows = await fetch(url, "SELECT actor, subject, fields FROM audit_event ORDER BY seq")
        assert rows == [
            ("peer:\\udcff", "x\\x00y", '{"detail":"alg=\\\\x00\\\\udc80"}'),
            ("peer:a\\x00", "", '{"detail":"\\\\ud800"}'),
        ]
        # Records that escaped the cleaning (built by hand): the one the database cannot take
        # is quarantined and recorded; the events queued with and after it are written.
        at = audit.format_time(audit.datetime.now(audit.UTC))
        trail._pending.extend(
            [
                Record("test.before", "cli:a", "", "ok", "{}", at),
                Record("test.poison", "cli:\udcff", "", "ok", "{}", at),  # canonical() cannot encode it
                Record("test.nul", "cli:a\x00", "", "ok", "{}", at),  # PostgreSQL text refuses NUL
            ]
        )
        from mss.metrics import AUDIT_EVENTS_DROPPED

        unstorable_before = AUDIT_EVENTS_DROPPED.labels("unstorable")._value.get()
        trail.submit("test.after", actor="cli:a")
        await asyncio.wait_for(trail.flush(), 30)  # before the fix: retried forever
        trail.submit("test.later", actor="cli:a")
        await asyncio.wait_for(trail.flush(), 30)
        rows = await fetch(url, "SELECT type, fields FROM audit_event WHERE seq > 2 ORDER BY seq")
        types = [t for t, _ in rows]
        unstorable = ["test.poison"] + ([] if is_sqlite(url) else ["test.nul"])  # SQLite stores a NUL
        dropped = [json.loads(f) for t, f in rows if t == "audit.dropped"]
        assert dropped == [{"count": 1, "event": e, "reason": "unstorable"} for e in unstorable]
        assert trail.quarantined == len(unstorable)
        # ... and counted where an operator's alert can see it.
        assert AUDIT_EVENTS_DROPPED.labels("unstorable")._value.get() - unstorable_before == len(unstorable)
        assert [t for t in types if t != "audit.dropped"] == [
            "test.before",
            *([] if unstorable == ["test.poison", "test.nul"] else ["test.nul"]),
            "test.after",
            "test.later",
        ]
        assert trail.pending == 0
        assert verify(config)[0] == 0
    finally:
        await trail.close()
        await engine.dispose()


def test_probes_and_exchanges_that_test_no_credential_add_no_row(fresh_deployment):
    """`AUTHENTICATE FOO`, a malformed and a cancelled PLAIN exchange (IMAP), `AUTH FOO` and a
    STARTTLS connection without a certificate (SMTP: a monitoring probe) leave log lines and
    no audit row; a refused password still does."""
    import smtplib

    dep = fresh_deployment
    claire = dep.mailbox("PER", 0)
    before = asyncio.run(fetch(dep.settings().resolved_database_url, "SELECT max(seq) FROM audit_event"))[0][0] or 0
    srv = start_server(dep)
    try:
        m = imaplib.IMAP4_SSL(srv.host, srv.port("imaps"), ssl_context=dep.client_context(claire), timeout=20)
        # FOO: unsupported; PLAIN without NULs: malformed; None makes imaplib send "*": cancelled.
        for mech, answer in (("FOO", b""), ("PLAIN", b"no-nul-separators"), ("PLAIN", None)):
            with pytest.raises(imaplib.IMAP4.error):
                m.authenticate(mech, lambda _, a=answer: a)
        m.logout()
        for _ in range(3):  # a monitoring probe: STARTTLS, no certificate, QUIT
            s = smtplib.SMTP(srv.host, srv.port("submission"), timeout=20)
            s.ehlo("probe.test")
            s.starttls(context=dep.client_context())
            s.ehlo("probe.test")
            assert s.docmd("AUTH", "FOO")[0] == 504
            s.quit()
        m = imaplib.IMAP4_SSL(srv.host, srv.port("imaps"), ssl_context=dep.client_context(claire), timeout=20)
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            m.login(claire["address"], "not-the-password")
        m.logout()
    finally:
        assert srv.stop() == 0  # the queue is written
    log = srv.log_text()
    assert "auth unsupported" in log and "auth malformed" in log and "reason=no_certificate" in log
    events = [e for e in exported(dep.config) if e["seq"] > before]
    assert [(e["type"], e["outcome"], e["fields"]["reason"]) for e in events] == [
        ("login", "refused", "app_password:wrong")
    ]


def test_audit_disabled_means_no_event_from_the_cli_either(fresh_deployment, tmp_path):
    dep = fresh_deployment
    config = dep.config
    config.write_text(config.read_text() + "\n[audit]\nenabled = false\n")
    url = dep.settings().resolved_database_url
    count = "SELECT count(*) FROM audit_event"
    before = asyncio.run(fetch(url, count))[0][0]
    claire = dep.mailbox("PER", 0)
    made = json.loads(run_mss(config, "mailbox", "app-password", claire["address"], "--json").stdout)
    run_mss(config, "mailbox", "app-password", claire["address"], "--revoke", str(made["id"]))
    address = f"sans.audit@{dep.domain}"
    run_mss(config, "mailbox", "create", address, "--type", "PER", "--idnat", "810001234565", "--out", str(tmp_path))
    rolled = json.loads(run_mss(config, "mailbox", "rollover", address, "--out", str(tmp_path), "--json").stdout)
    run_mss(config, "pki", "revoke", rolled["cert"], "--reason", "superseded")
    assert asyncio.run(fetch(url, count))[0][0] == before


def _newest_migration() -> str:
    """The head revision: the highest-numbered file of mss/db/migrations/versions."""
    versions = Path(__file__).resolve().parents[1] / "mss" / "db" / "migrations" / "versions"
    return max(p.name[:4] for p in versions.glob("[0-9][0-9][0-9][0-9]_*.py"))


def test_verify_and_export_do_not_migrate_the_database(empty_database_url, tmp_path):
    url = empty_database_url
    run_alembic(url, "upgrade", "0006")
    config = tmp_path / "mss.toml"
    config.write_text(f'domain = "audit.test"\ndatabase_url = "{url}"\nlog_file = ""\n')
    for args in (("verify",), ("verify", "--json"), ("export",), ("anchor",)):
        res = run_mss(config, "audit", *args, check=False)
        assert res.returncode == 1, (args, res.stdout, res.stderr)
        assert f"schema at 0006, the newest is {_newest_migration()}" in res.stderr and "do not migrate" in res.stderr
        assert res.stdout == ""
    assert asyncio.run(fetch(url, "SELECT version_num FROM alembic_version")) == [("0006",)]
    tables = {r[0] for r in asyncio.run(fetch(url, _TABLES[is_sqlite(url)]))}
    assert "audit_event" not in tables
    if is_sqlite(url):  # a mistyped path is not turned into a new, empty database
        missing = tmp_path / "missing.db"
        config.write_text(f'domain = "audit.test"\ndatabase_url = "sqlite+aiosqlite:///{missing}"\nlog_file = ""\n')
        res = run_mss(config, "audit", "verify", check=False)
        assert res.returncode == 1 and "does not exist" in res.stderr and not missing.exists()


def test_export_after_seq_is_incremental(db):
    url, config = db
    asyncio.run(record_events(url, 5))
    assert [e["seq"] for e in exported(config, "--after-seq", "3")] == [4, 5]
    assert [e["seq"] for e in exported(config, "--after-seq", "0")] == [1, 2, 3, 4, 5]
    assert exported(config, "--after-seq", "5") == []
    rows = asyncio.run(fetch(url, "SELECT at FROM audit_event WHERE seq = 2"))
    since = rows[0][0].replace("Z", "+00:00")
    assert [e["seq"] for e in exported(config, "--since", since, "--after-seq", "3")] == [4, 5]
    bad = run_mss(config, "audit", "export", "--after-seq", "-1", check=False)
    assert bad.returncode == 2 and "--after-seq" in bad.stderr


async def test_a_portal_note_does_not_ask_for_the_operators_login(monkeypatch):
    """getpass.getuser() may block on an NSS lookup: only operator events call it."""
    from mss import patients

    seen: list[str] = []

    class Trail:
        async def record_in(self, s, type, *, actor, subject, **fields):
            seen.append(actor)

    def no_lookup() -> str:
        raise AssertionError("cli_actor() called for a portal event")

    monkeypatch.setattr(patients, "cli_actor", no_lookup)
    host = type("Host", (), {"audit": Trail()})()
    await patients.PatientSpaces._audit(host, None, "patient.login", "1234", "patient")
    await patients.PatientSpaces._audit(host, None, "patient.blocked", "1234", "PS", "81000")
    assert seen == ["portal:1234", "PS:81000"]
    monkeypatch.setattr(patients, "cli_actor", lambda: "cli:op")
    await patients.PatientSpaces._audit(host, None, "patient.created", "1234", "operator")
    assert seen[-1] == "cli:op"
