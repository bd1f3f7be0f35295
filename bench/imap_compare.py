"""`python -m bench imap`: MSS's IMAP against Dovecot's on the same folder, same client, same run.

Both servers get the same N messages (10 KB, one INBOX):
- MSS: a `mss demo` deployment on SQLite, filled by IMAP APPEND through the real path (each
  message S/MIME-encrypted to the mailbox's key and group-committed);
- Dovecot: Debian's, in a scratch folder (`bench/dovecot.py`), filled by LMTP into its Maildir.

The same `imaplib` client then times, interleaving the two servers round by round, over TLS
(MSS: implicit TLS with the professional's client certificate and AUTHENTICATE EXTERNAL;
Dovecot: STARTTLS and LOGIN): a whole session (connect, log in, SELECT, logout), SELECT alone,
`FETCH 1:* (FLAGS ENVELOPE)`, `UID FETCH 1:* (BODY.PEEK[])` and `UID SEARCH ALL`; then the
session cycle: 10 clients at once, each repeating log in → SELECT → FETCH (the newest 20) →
STORE → APPEND (to a folder of its own) → LOGOUT, as cycles per second. Reported
per round and as medians, with the ratio Dovecot time / MSS time (above 1: MSS faster) and the
server CPU per operation (process trees, /proc).

    python -m bench imap [--messages 10000] [--rounds 3] [--quick]

Needs root and `make deb-test` for Dovecot (`--no-reference` measures MSS alone).
"""

from __future__ import annotations

import argparse
import imaplib
import json
import smtplib
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from mail import build_message  # noqa: E402
from support import make_deployment, start_server  # noqa: E402

from bench.dovecot import PASSWORD, ScratchDovecot, dovecot_available  # noqa: E402
from bench.relay_bench import tree_cpu_s  # noqa: E402

OPERATIONS = ("session", "select", "fetch_flags_envelope", "fetch_body_peek", "uid_search_all", "cycle")
#: The folder the session cycle appends to (made at fill time on both servers), so that the
#: 10,000-message INBOX the other operations read stays as it is.
CYCLE_FOLDER = "Bench"


def _messages(n: int, sender: str, rcpt: str) -> list[bytes]:
    body = ("x" * 76 + "\n") * 130  # about 10 KB
    return [build_message(sender, [rcpt], f"bench {i}", body)[0] for i in range(n)]


class MssImap:
    name = "mss"

    def __init__(self, tmp: Path, workers: str = "auto") -> None:
        self.deployment, _ = make_deployment(tmp, "sqlite")
        self.entry = self.deployment.mailbox("PER", 0)
        self.server = None
        #: `workers` of the node (mss.workers): "auto" is one per core, as Dovecot spreads
        #: its imap processes over every core.
        self.workers = workers

    def start(self) -> None:
        self.server = start_server(self.deployment, env={"MSS_WORKERS": self.workers})

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def pids(self) -> list[int]:
        return [self.server.proc.pid]

    def connect(self) -> imaplib.IMAP4:
        ctx = self.deployment.client_context(self.entry)
        m = imaplib.IMAP4_SSL(self.server.host, self.server.port("imaps"), ssl_context=ctx, timeout=600)
        m.authenticate("EXTERNAL", lambda _: b"")
        return m

    def fill(self, raws: list[bytes]) -> None:
        def part(chunk: list[bytes]) -> None:
            m = self.connect()
            for raw in chunk:
                typ, data = m.append("INBOX", None, None, raw)
                assert typ == "OK", data
            m.logout()

        chunks = [raws[i::4] for i in range(4)]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(part, chunks))
        _create_cycle_folder(self)


class DovecotImap:
    name = "dovecot"

    def __init__(self, tmp: Path, pki_dir: Path, trust_anchors: Path) -> None:
        from crypto.pki import TestPKI
        from mss.demo import structure_id

        folder = tmp / "dovecot-tls"
        folder.mkdir()
        serv = TestPKI.load(pki_dir).issue_serv(
            ["localhost"], structure_id("69000795"), "BENCH DOVECOT", ip_addresses=["127.0.0.1"]
        )
        serv.write_pem(folder / "serv.crt", folder / "serv.key", with_chain=True)
        self.trust_anchors = trust_anchors
        self.dovecot = ScratchDovecot(["alice"], folder / "serv.crt", folder / "serv.key")

    def start(self) -> None:
        self.dovecot.start()

    def stop(self) -> None:
        self.dovecot.stop()

    def pids(self) -> list[int]:
        return [self.dovecot.proc.pid]

    def connect(self) -> imaplib.IMAP4:
        m = imaplib.IMAP4("localhost", self.dovecot.imap_port, timeout=600)
        m.starttls(ssl.create_default_context(cafile=str(self.trust_anchors)))
        m.login("alice", PASSWORD)
        return m

    def fill(self, raws: list[bytes]) -> None:
        lmtp = smtplib.LMTP("127.0.0.1", self.dovecot.lmtp_port)
        for raw in raws:
            lmtp.sendmail("bob@bench.test", ["alice@bench.test"], raw)
        lmtp.quit()
        _create_cycle_folder(self)


def _create_cycle_folder(target: MssImap | DovecotImap) -> None:
    m = target.connect()
    typ, data = m.create(CYCLE_FOLDER)
    assert typ == "OK", data
    m.logout()


def _ops(target: MssImap | DovecotImap) -> dict[str, Callable[[imaplib.IMAP4], None]]:
    def check(res: tuple[str, list]) -> None:
        assert res[0] == "OK", res

    return {
        "select": lambda m: check(m.select("INBOX")),
        "fetch_flags_envelope": lambda m: check(m.fetch("1:*", "(FLAGS ENVELOPE)")),
        "fetch_body_peek": lambda m: check(m.uid("FETCH", "1:*", "(BODY.PEEK[])")),
        "uid_search_all": lambda m: check(m.uid("SEARCH", "ALL")),
    }


def cycle(m: imaplib.IMAP4, k: int, raw: bytes) -> None:
    """One client's work after logging in: SELECT, a FETCH of the newest 20 messages' flags
    and envelopes, a STORE on one message, an APPEND (to `CYCLE_FOLDER`), LOGOUT."""

    def check(res: tuple[str, list]) -> None:
        assert res[0] == "OK", res

    typ, data = m.select("INBOX")
    check((typ, data))
    n = int(data[0])
    check(m.fetch(f"{max(1, n - 19)}:{n}", "(FLAGS ENVELOPE)"))
    check(m.store(str(1 + k % n), "+FLAGS" if k % 2 else "-FLAGS", "(\\Flagged)"))
    check(m.append(CYCLE_FOLDER, None, None, raw))
    m.logout()


def measure_cycles(target: MssImap | DovecotImap, clients: int, per_client: int, raw: bytes) -> tuple[float, float]:
    """`clients` threads each running `per_client` login → select → fetch → store → append →
    logout cycles at once: (cycles per second, server CPU seconds per cycle)."""

    def run(c: int) -> None:
        for i in range(per_client):
            cycle(target.connect(), c * per_client + i, raw)

    cpu0 = tree_cpu_s(target.pids())
    t = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(run, range(clients)))
    wall = time.perf_counter() - t
    total = clients * per_client
    return total / wall, (tree_cpu_s(target.pids()) - cpu0) / total


def measure(target: MssImap | DovecotImap, repeat: int) -> dict[str, tuple[float, float]]:
    """Per operation: (median seconds, server CPU seconds per operation)."""
    out: dict[str, tuple[float, float]] = {}
    times: list[float] = []
    cpu0 = tree_cpu_s(target.pids())
    for _ in range(repeat):
        t = time.perf_counter()
        m = target.connect()
        check = m.select("INBOX")
        assert check[0] == "OK", check
        m.logout()
        times.append(time.perf_counter() - t)
    out["session"] = (statistics.median(times), (tree_cpu_s(target.pids()) - cpu0) / repeat)
    m = target.connect()
    m.select("INBOX")
    try:
        for name, op in _ops(target).items():
            times = []
            cpu0 = tree_cpu_s(target.pids())
            for _ in range(repeat):
                t = time.perf_counter()
                op(m)
                times.append(time.perf_counter() - t)
            out[name] = (statistics.median(times), (tree_cpu_s(target.pids()) - cpu0) / repeat)
    finally:
        m.logout()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench imap", description=__doc__.split("\n", 1)[0])
    ap.add_argument("--messages", type=int, help="messages in the folder (default 10000, --quick 500)")
    ap.add_argument("--rounds", type=int, help="rounds (default 3, --quick 1)")
    ap.add_argument("--repeat", type=int, default=3, help="times each operation runs per round")
    ap.add_argument("--clients", type=int, default=10, help="clients of the session cycle")
    ap.add_argument("--cycles", type=int, default=10, help="cycles per client per round")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--workers", default="auto", help="MSS worker processes (default auto: one per core)")
    args = ap.parse_args(argv)
    n = args.messages or (500 if args.quick else 10_000)
    rounds = args.rounds or (1 if args.quick else 3)
    why_not = "--no-reference" if args.no_reference else dovecot_available()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="mss-imap-bench-") as tmp_s:
        tmp = Path(tmp_s)
        mss = MssImap(tmp / "mss", args.workers)
        targets: list[MssImap | DovecotImap] = [mss]
        if why_not is None:
            pki = mss.deployment.directory / "pki" / "ca"
            targets.append(DovecotImap(tmp, pki, mss.deployment.trust_anchors))
        else:
            print(f"reference skipped: {why_not}", file=sys.stderr)
        try:
            raws = _messages(n, "bob@bench.test", mss.entry["address"])
            for t in targets:
                t.start()
                t0 = time.perf_counter()
                t.fill(raws)
                print(f"{t.name}: {n} messages stored in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
            for r in range(1, rounds + 1):
                res = {t.name: measure(t, args.repeat) for t in targets}
                for t in targets:
                    # A cycle's time is 1 / (cycles per second), so the ratio reads as the others.
                    rate, cpu = measure_cycles(t, args.clients, args.cycles, raws[0])
                    res[t.name]["cycle"] = (1 / rate, cpu)
                for op in OPERATIONS:
                    row: dict = {"bench": "imap", "round": r, "messages": n, "op": op}
                    for name, per_op in res.items():
                        secs, cpu = per_op[op]
                        row[f"{name}_ms"] = round(secs * 1000, 2)
                        row[f"{name}_cpu_ms"] = round(cpu * 1000, 2)
                        if op == "cycle":
                            row[f"{name}_cycles_per_s"] = round(1 / secs, 1)
                    if "dovecot" in res:
                        row["speed_ratio_mss_vs_dovecot"] = round(res["dovecot"][op][0] / res["mss"][op][0], 3)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        finally:
            for t in targets:
                t.stop()
    print()
    print(f"{n} messages, {rounds} round(s), medians (ms; ratio > 1: MSS faster;")
    print(f"cycle: ms per cycle, {args.clients} clients x {args.cycles} cycles at once, CPU per cycle):")
    print(f"{'operation':24} {'MSS':>10} {'Dovecot':>10} {'ratio':>8} {'MSS CPU':>9} {'Dov. CPU':>9}")
    for op in OPERATIONS:
        sel = [r for r in rows if r["op"] == op]

        def med(key: str, sel: list[dict] = sel) -> str:
            vals = [r[key] for r in sel if key in r]
            return f"{statistics.median(vals):.2f}" if vals else "-"

        print(
            f"{op:24} {med('mss_ms'):>10} {med('dovecot_ms'):>10} {med('speed_ratio_mss_vs_dovecot'):>8} "
            f"{med('mss_cpu_ms'):>9} {med('dovecot_cpu_ms'):>9}"
        )


if __name__ == "__main__":
    main()
