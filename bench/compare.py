"""`python -m bench compare`: MSS against the reference mail stack, same load, same minutes.

What is compared is a message submitted over SMTP until it is delivered and durable:

- **MSS** (a `mss demo` deployment on SQLite, and on the local PostgreSQL when it answers):
  STARTTLS on the submission port with a professional's client certificate (checked against
  the health PKI, identity bound to the sender), recipient resolved in the directory, the
  message protected and S/MIME-encrypted to the recipient's key, committed in a group commit
  before the `250`. A `250` *is* delivered-and-durable, so the time of the last `250` ends the
  round.
- **Reference** (Debian's packages, started in scratch folders by this benchmark): Postfix
  (`smtpd` with STARTTLS, no client certificate) queues the message, then hands it to Dovecot
  over LMTP; Dovecot writes it to a Maildir (fsync at the end of each delivery, its default).
  The round ends when the N files are in the Maildir's `new/`. The Maildir is emptied before
  each round, so every round starts from the same state.

Both are driven by the same load generator: S sessions (threads, one `smtplib` connection
each, reused for all its messages), 10 KB messages of 76-octet lines, one recipient. Rounds
alternate MSS (each database), then the reference, so all see the same minute of this shared
machine. For each round: delivered msg/s, server CPU ms per message (user + system of the
server process trees, reaped children included, from /proc: the figure least disturbed by
other load), p50/p99 latency from the end of DATA to the `250`, and the ratio MSS/reference
of the same round. JSON lines on stdout as they come, then a table of medians.

    python -m bench compare [--messages 500] [--sessions 10,50] [--rounds 3] [--quick] [--no-pg]

The reference needs root and the `postfix`, `dovecot-imapd` and `dovecot-lmtpd` packages
(`make deb-test`); without them MSS is measured alone and the reason is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import smtplib
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from mail import build_message, smtp_submission  # noqa: E402
from relay.postfix import ScratchPostfix, free_port, postfix_available  # noqa: E402
from support import (  # noqa: E402
    ServerProcess,
    drop_pg_database,
    make_deployment,
    start_server,
    stored_messages,
)

from bench.dovecot import ScratchDovecot, dovecot_available  # noqa: E402
from bench.relay_bench import tree_cpu_s  # noqa: E402

REFERENCE_DOMAIN = "reference.test"
PG_DEFAULT = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


# --- the load generator, the same for every target -----------------------------------------


@dataclass
class Load:
    """What one round sends: `messages` over `sessions` connections, `size` bytes each."""

    messages: int
    sessions: int
    size: int

    def body(self) -> str:
        return ("x" * 76 + "\n") * max(1, self.size // 77)


@dataclass
class Sent:
    latencies_s: list[float] = field(default_factory=list)
    last_250_s: float = 0.0


def drive(connect: Callable[[], AbstractContextManager[smtplib.SMTP]], sender: str, rcpt: str, load: Load) -> Sent:
    """Send the load; per message, the time from the end of DATA to the 250."""
    shares = [
        load.messages // load.sessions + (1 if i < load.messages % load.sessions else 0) for i in range(load.sessions)
    ]
    body = load.body()
    out = Sent()
    lock = threading.Lock()

    def one(n: int) -> None:
        if not n:
            return
        mine: list[float] = []
        with connect() as smtp:
            for _ in range(n):
                raw, _id = build_message(sender, [rcpt], "bench compare", body)
                smtp.mail(sender)
                code, _ = smtp.rcpt(rcpt)
                assert code == 250, code
                # smtplib's data() sends the content and the final dot, then reads the reply.
                t = time.perf_counter()
                code, msg = smtp.data(raw)
                mine.append(time.perf_counter() - t)
                assert code == 250, (code, msg)
        with lock:
            out.latencies_s += mine

    t0 = time.perf_counter()
    with ThreadPoolExecutor(load.sessions) as pool:
        list(pool.map(one, shares))
    out.last_250_s = time.perf_counter() - t0
    return out


def wait_until(count: Callable[[], int], target: int, t0: float, timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    got = count()
    while got < target:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: {got} of {target} delivered after {timeout:.0f}s")
        time.sleep(0.02)
        got = count()
    return time.perf_counter() - t0


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))] if s else 0.0


# --- targets -----------------------------------------------------------------------------


class MssTarget:
    """One `mss serve` of a demo deployment on one database."""

    def __init__(self, tmp: Path, backend: str, workers: str = "auto") -> None:
        self.name = f"mss-{backend}"
        #: `workers` of the node (mss.workers): "auto" is one per core, as the reference
        #: stack spreads over every core too.
        self.workers = workers
        self.pg_name: str | None = None
        self.deployment, self.pg_name = make_deployment(tmp, backend)
        # 50 sessions from one address: above the per-address defaults meant for the internet
        # (Postfix exempts $mynetworks from its own).
        config = self.deployment.config
        config.write_text(
            config.read_text().replace(
                "[limits]\n", "[limits]\nsmtp_max_preauth_per_ip = 500\nsmtp_max_connections_per_ip = 500\n", 1
            )
        )
        self.rcpt = self.deployment.mailbox("PER", 0)
        self.sender = self.deployment.mailbox("PER", 1)
        self.server: ServerProcess | None = None

    def start(self) -> None:
        self.server = start_server(self.deployment, env={"MSS_WORKERS": self.workers})

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.pg_name:
            drop_pg_database(self.pg_name)

    def pids(self) -> list[int]:
        return [self.server.proc.pid] if self.server else []

    def connect(self) -> AbstractContextManager[smtplib.SMTP]:
        assert self.server is not None
        return smtp_submission(self.server, self.sender)

    def stored(self) -> int:
        import asyncio

        return len(asyncio.run(stored_messages(self.deployment, self.rcpt["address"])))

    def round(self, load: Load, timeout: float) -> dict:
        cpu0 = tree_cpu_s(self.pids())
        sent = drive(self.connect, self.sender["address"], self.rcpt["address"], load)
        cpu = tree_cpu_s(self.pids()) - cpu0
        # The 250 follows the commit: delivered and durable when the last one came.
        return {"elapsed_s": sent.last_250_s, "cpu_s": cpu, "latencies_s": sent.latencies_s}


class ReferenceTarget:
    """Postfix -> LMTP -> Dovecot (Maildir), from Debian's packages, in scratch folders."""

    name = "reference"

    def __init__(self, tmp: Path, pki_dir: Path, trust_anchors: Path) -> None:
        from crypto.pki import TestPKI
        from mss.demo import structure_id

        folder = tmp / "reference"
        folder.mkdir(parents=True)
        serv = TestPKI.load(pki_dir).issue_serv(
            ["localhost", REFERENCE_DOMAIN], structure_id("69000793"), "BENCH REFERENCE", ip_addresses=["127.0.0.1"]
        )
        serv.write_pem(folder / "serv.crt", folder / "serv.key", with_chain=True)
        self.user = "alice"
        self.rcpt = f"{self.user}@{REFERENCE_DOMAIN}"
        self.sender = f"bob@{REFERENCE_DOMAIN}"
        self.trust_anchors = trust_anchors
        self.dovecot = ScratchDovecot([self.user], folder / "serv.crt", folder / "serv.key", lmtp_port=free_port())
        self.postfix = ScratchPostfix(
            folder,
            REFERENCE_DOMAIN,
            [self.user],
            folder / "serv.crt",
            folder / "serv.key",
            trust_anchors,
            extra={
                # Recipients still checked against virtual_mailbox_maps at RCPT; delivery by LMTP.
                "virtual_transport": f"lmtp:inet:127.0.0.1:{self.dovecot.lmtp_port}",
                "lmtp_destination_concurrency_limit": "20",
            },
        )

    def start(self) -> None:
        self.dovecot.start()
        self.postfix.start()

    def stop(self) -> None:
        for part in (self.postfix, self.dovecot):
            try:
                part.stop()
            except Exception as exc:  # cleanup goes on
                print(f"reference stop: {exc}", file=sys.stderr)

    def pids(self) -> list[int]:
        return [p.proc.pid for p in (self.postfix, self.dovecot) if p.proc is not None]

    def connect(self) -> AbstractContextManager[smtplib.SMTP]:
        ctx = ssl.create_default_context(cafile=str(self.trust_anchors))
        c = smtplib.SMTP("localhost", self.postfix.port, timeout=60)
        c.ehlo("client.test")
        c.starttls(context=ctx)
        c.ehlo("client.test")
        return c

    def round(self, load: Load, timeout: float) -> dict:
        self.dovecot.empty_maildir(self.user)
        cpu0 = tree_cpu_s(self.pids())
        t0 = time.perf_counter()
        sent = drive(self.connect, self.sender, self.rcpt, load)
        try:
            elapsed = wait_until(
                lambda: self.dovecot.delivered(self.user), load.messages, t0, timeout, "Dovecot Maildir"
            )
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{self.postfix.queue()}\n{self.dovecot.diagnostics()[-2000:]}") from None
        cpu = tree_cpu_s(self.pids()) - cpu0
        return {"elapsed_s": elapsed, "cpu_s": cpu, "latencies_s": sent.latencies_s}


# --- the run ----------------------------------------------------------------------------


def _row(target: str, r: int, load: Load, res: dict) -> dict:
    lat = res["latencies_s"]
    return {
        "bench": "compare-smtp",
        "impl": target,
        "round": r,
        "messages": load.messages,
        "sessions": load.sessions,
        "size": load.size,
        "elapsed_s": round(res["elapsed_s"], 4),
        "msg_per_s": round(load.messages / res["elapsed_s"], 2),
        "cpu_ms_per_msg": round(res["cpu_s"] * 1000 / load.messages, 3),
        "p50_ms": round(percentile(lat, 0.5) * 1000, 2),
        "p99_ms": round(percentile(lat, 0.99) * 1000, 2),
    }


def _ratio(m: dict, ref: dict) -> dict:
    return {
        "bench": "compare-smtp",
        "impl": f"ratio {m['impl']}/reference",
        "round": m["round"],
        "sessions": m["sessions"],
        "msg_per_s": round(m["msg_per_s"] / ref["msg_per_s"], 3),
        "cpu_ms_per_msg": round(m["cpu_ms_per_msg"] / ref["cpu_ms_per_msg"], 3) if ref["cpu_ms_per_msg"] else None,
        "p99_ms": round(m["p99_ms"] / ref["p99_ms"], 3) if ref["p99_ms"] else None,
    }


def _table(rows: list[dict]) -> None:
    print()
    print("medians over rounds:")
    print(f"{'':30} {'sessions':>8} {'msg/s':>9} {'CPU ms/msg':>11} {'p50 ms':>8} {'p99 ms':>8}")
    keys = sorted({(r["impl"], r["sessions"]) for r in rows}, key=lambda k: (k[1], k[0].startswith("ratio"), k[0]))
    for impl, sessions in keys:
        sel = [r for r in rows if r["impl"] == impl and r["sessions"] == sessions]

        def med(key: str, sel: list[dict] = sel) -> str:
            vals = [r[key] for r in sel if r.get(key) is not None]
            return f"{statistics.median(vals):.2f}" if vals else "-"

        print(
            f"{impl:30} {sessions:8} {med('msg_per_s'):>9} {med('cpu_ms_per_msg'):>11} {med('p50_ms'):>8} {med('p99_ms'):>8}"
        )


def _pg_answers(url: str) -> bool:
    import asyncio

    import asyncpg

    from mss.cluster_events import asyncpg_dsn

    async def ping() -> bool:
        try:
            conn = await asyncpg.connect(asyncpg_dsn(url), timeout=3)
        except (OSError, asyncpg.PostgresError):
            return False
        await conn.close()
        return True

    return asyncio.run(ping())


def _sigterm(*_: object) -> None:
    raise SystemExit(143)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench compare", description=__doc__.split("\n", 1)[0])
    ap.add_argument("--messages", type=int, help="messages per round and session count (default 500, --quick 60)")
    ap.add_argument("--sessions", default=None, help="comma-separated session counts (default 10,50; --quick 10)")
    ap.add_argument("--size", type=int, default=10 * 1024, help="body bytes per message")
    ap.add_argument("--rounds", type=int, help="rounds (default 3, --quick 1)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 60 messages, 10 sessions, 1 round")
    ap.add_argument("--no-pg", action="store_true", help="MSS on SQLite only")
    ap.add_argument("--no-reference", action="store_true", help="MSS only (no root, no Postfix/Dovecot)")
    ap.add_argument("--workers", default="auto", help="MSS worker processes (mss.workers; default auto: one per core)")
    args = ap.parse_args(argv)
    n = args.messages or (60 if args.quick else 500)
    sessions = [int(x) for x in (args.sessions or ("10" if args.quick else "10,50")).split(",")]
    rounds = args.rounds or (1 if args.quick else 3)
    timeout = 120 + n / 2
    signal.signal(signal.SIGTERM, _sigterm)

    why_not = "--no-reference" if args.no_reference else (postfix_available() or dovecot_available())
    pg_url = os.environ.get("MSS_TEST_DATABASE_URL") or PG_DEFAULT
    use_pg = not args.no_pg and _pg_answers(pg_url)
    if use_pg:
        os.environ["MSS_TEST_DATABASE_URL"] = pg_url  # tests/support.py creates the scratch database there
    else:
        print(
            "MSS on PostgreSQL skipped: " + ("--no-pg" if args.no_pg else f"{pg_url} does not answer"), file=sys.stderr
        )

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="mss-compare-") as tmp_s:
        tmp = Path(tmp_s)
        targets: list[MssTarget | ReferenceTarget] = [MssTarget(tmp / "mss-sqlite", "sqlite", args.workers)]
        if use_pg:
            targets.append(MssTarget(tmp / "mss-postgresql", "postgresql", args.workers))
        first = targets[0]
        assert isinstance(first, MssTarget)
        if why_not is None:
            targets.append(
                ReferenceTarget(tmp, first.deployment.directory / "pki" / "ca", first.deployment.trust_anchors)
            )
        else:
            print(f"reference skipped: {why_not}", file=sys.stderr)
        try:
            for t in targets:
                t.start()
            for t in targets:  # warm-up: connections, TLS, caches, the first pages
                t.round(Load(5, 1, args.size), timeout)
            for s in sessions:
                load = Load(n, min(s, n), args.size)
                for r in range(1, rounds + 1):
                    by_target = {}
                    for t in targets:
                        row = _row(t.name, r, load, t.round(load, timeout))
                        by_target[t.name] = row
                        rows.append(row)
                        print(json.dumps(row), flush=True)
                    ref = by_target.get("reference")
                    for name, row in by_target.items():
                        if ref is not None and name != "reference":
                            ratio = _ratio(row, ref)
                            rows.append(ratio)
                            print(json.dumps(ratio), flush=True)
        finally:
            for t in targets:
                t.stop()
    _table(rows)


if __name__ == "__main__":
    main()
