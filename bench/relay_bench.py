"""Operator-to-operator relay (issue 10): MSS -> MSS against Postfix -> Postfix, side by side.

MSS: two operators on one machine, A made by `mss demo` and B by `mss demo --peer A` (one
test PKI, each other's domain on the whitelist, routes, DKIM keys and the PER certificates,
so A seals each message to the recipient's key). N messages of SIZE bytes are submitted at
A's submission port over a few STARTTLS connections with a professional's client
certificate, to one PER mailbox at B; they cross A's durable queue and relay worker and
mutual TLS (SERV certificates) to B's `mta` listener and B's store. Timed from the first
send until all N are in B's INBOX, read through the store's own code (`Store.get_folder`,
as tests/relay/test_two_operators.py's wait_messages does; the servers are other processes).

Reference: two real Debian Postfix instances (tests/relay/postfix.py ScratchPostfix) with
SERV certificates of the same test PKI. The first one's transport map sends B's domain to
the second, both ways verified (the second requires the first's client certificate,
`smtpd_tls_req_ccert`; the first checks the second's name, `secure` + nexthop); the second
delivers to a Maildir through virtual(8). Same messages and addresses, submitted to the first
with STARTTLS; timed until N files are in the Maildir's new/.

Server CPU: user + system seconds of each server's whole process tree (live processes and
the children they reaped, from /proc), after minus before the round, divided by N. Rounds
alternate MSS, Postfix, MSS, Postfix... so both see the same minute of this machine.

    python bench/relay_bench.py [--messages 200] [--sessions 4] [--size 10240] [--rounds 3] [--quick]

The reference needs root and the `postfix` package (`--no-postfix` measures MSS alone).
Prints one JSON line per measurement and round, then a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import smtplib
import ssl
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from mail import build_message, smtp_submission  # noqa: E402
from relay.postfix import ScratchPostfix, free_port, postfix_available  # noqa: E402
from support import Deployment, ServerProcess, start_server  # noqa: E402

A_DOMAIN = "hopital-a.mssante.test"
B_DOMAIN = "clinique-b.mssante.test"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- CPU of process trees, from /proc (Linux) -------------------------------------------


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, utime + stime + cutime + cstime in seconds) for every process."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        # fields[0] is the state; ppid, then utime, stime, cutime, cstime at 11..14.
        table[int(entry.name)] = (int(fields[1]), sum(int(x) for x in fields[11:15]) / CLK_TCK)
    return table


def tree_cpu_s(roots: list[int]) -> float:
    """CPU seconds of the process trees under `roots`: each live process's own time plus what
    its reaped children used (so a daemon that exited still counts, through its parent)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0.0, [r for r in roots if r in table], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += table[pid][1]
        todo += children.get(pid, [])
    return total


# --- load --------------------------------------------------------------------------------


def send_all(connect, sender: str, rcpt: str, total: int, sessions: int, size: int) -> float:
    """Submit `total` messages over `sessions` connections; seconds until the last 250."""
    body = ("x" * 76 + "\n") * max(1, size // 77)  # RFC 5321 lines, not one long one
    shares = [total // sessions + (1 if i < total % sessions else 0) for i in range(sessions)]

    def one(n: int) -> None:
        if not n:
            return
        with connect() as smtp:
            for _ in range(n):
                raw, _id = build_message(sender, [rcpt], "bench relay", body)
                refused = smtp.sendmail(sender, [rcpt], raw)
                assert refused == {}, refused

    t0 = time.perf_counter()
    with ThreadPoolExecutor(sessions) as pool:
        list(pool.map(one, shares))
    return time.perf_counter() - t0


def wait_until(count, target: int, t0: float, timeout: float, what: str, poll: float = 0.1) -> float:
    """Poll `count()` until it reaches `target`; seconds since `t0` (perf_counter) then."""
    deadline = time.monotonic() + timeout
    got = count()
    while got < target:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: {got} of {target} delivered after {timeout:.0f}s")
        time.sleep(poll)
        got = count()
    return time.perf_counter() - t0


# --- MSS: two operators --------------------------------------------------------------------


class MssPair:
    def __init__(self, tmp: Path) -> None:
        from mss.demo import create_demo

        url = "sqlite+aiosqlite:///mss.db"
        create_demo(tmp / "a", domain=A_DOMAIN, base_port=0, database_url=url, patients=False)
        doc_b = create_demo(tmp / "b", domain=B_DOMAIN, base_port=0, database_url=url, patients=False, peer=tmp / "a")
        doc_a = json.loads((tmp / "a" / "demo.json").read_text())  # updated by --peer
        self.a = Deployment(tmp / "a", doc_a, url, "sqlite")
        self.b = Deployment(tmp / "b", doc_b, url, "sqlite")
        self.sender, self.rcpt = self.a.mailbox("PER", 0), self.b.mailbox("PER", 0)
        self.servers: list[ServerProcess] = []

    def start(self) -> None:
        for dep in (self.b, self.a):  # one at a time, so that stop() finds each one started
            self.servers.append(start_server(dep))

    def stop(self) -> None:
        for srv in self.servers:
            srv.stop()

    @property
    def sa(self) -> ServerProcess:
        return self.servers[1]

    def pids(self) -> list[int]:
        return [s.proc.pid for s in self.servers]

    def delivered(self) -> int:
        """Messages in the recipient's INBOX at B, counted by the store (no content read)."""
        from mss.config import resolve_database_url
        from mss.db.engine import create_engine, sessionmaker
        from mss.store import Store

        async def go() -> int:
            engine = create_engine(resolve_database_url(self.b.database_url, self.b.directory))
            try:
                info = await Store(sessionmaker(engine)).get_folder(self.rcpt["address"], "INBOX")
                return 0 if info is None else info.exists
            finally:
                await engine.dispose()

        return asyncio.run(go())

    def check_warmup(self) -> None:
        """The message B stored came sealed by A (S/MIME to the recipient's key), over A->B."""
        from support import stored_messages

        last = asyncio.run(stored_messages(self.b, self.rcpt["address"]))[-1]
        head = last.split(b"\r\n\r\n", 1)[0].lower()
        if b"pkcs7-mime" not in head or B_DOMAIN.encode() not in head:
            raise RuntimeError(f"unexpected message at B:\n{head[:2000].decode(errors='replace')}")

    def check_alive(self) -> None:
        for srv in self.servers:
            if srv.proc.poll() is not None:
                raise RuntimeError(f"mss serve exited with {srv.proc.returncode}:\n{srv.log_text()[-4000:]}")

    def round(self, n: int, sessions: int, size: int, timeout: float) -> dict:
        self.check_alive()
        before = self.delivered()
        cpu0 = tree_cpu_s(self.pids())
        t0 = time.perf_counter()
        accepted = send_all(
            lambda: smtp_submission(self.sa, self.sender),
            self.sender["address"],
            self.rcpt["address"],
            n,
            sessions,
            size,
        )
        elapsed = wait_until(self.delivered, before + n, t0, timeout, "mss B INBOX")
        cpu = tree_cpu_s(self.pids()) - cpu0
        return {"accepted_s": accepted, "elapsed_s": elapsed, "cpu_s": cpu}


# --- reference: two Postfix instances ------------------------------------------------------


class PostfixPair:
    def __init__(self, tmp: Path, pki_dir: Path, trust_anchors: Path, rcpt: str) -> None:
        from crypto.pki import TestPKI
        from mss.demo import structure_id

        pki = TestPKI.load(pki_dir)
        self.user = rcpt.partition("@")[0]
        self.rcpt = rcpt
        self.trust_anchors = trust_anchors
        made = []
        for name, domain, finess in (("pf-a", A_DOMAIN, "69000791"), ("pf-b", B_DOMAIN, "69000792")):
            folder = tmp / name
            folder.mkdir(parents=True)
            serv = pki.issue_serv(
                ["localhost", domain], structure_id(finess), f"BENCH {name.upper()}", ip_addresses=["127.0.0.1"]
            )
            serv.write_pem(folder / "serv.crt", folder / "serv.key", with_chain=True)
            made.append(folder)
        self.client_cert = (made[0] / "serv.crt", made[0] / "serv.key")
        b_port = free_port()
        # B: delivers its domain to the Maildir of one user, requires a verified client
        # certificate (mutual TLS, not only asked for).
        self.b = ScratchPostfix(
            made[1],
            B_DOMAIN,
            [self.user],
            made[1] / "serv.crt",
            made[1] / "serv.key",
            trust_anchors,
            port=b_port,
            extra={"smtpd_tls_req_ccert": "yes"},
        )
        # A: accepts submissions from 127.0.0.0/8 (mynetworks) over STARTTLS and relays B's
        # domain through its transport map, presenting its SERV certificate and checking B's.
        self.a = ScratchPostfix(
            made[0],
            A_DOMAIN,
            ["postmaster"],
            made[0] / "serv.crt",
            made[0] / "serv.key",
            trust_anchors,
            transports={B_DOMAIN: f"localhost:{b_port}"},
        )

    def start(self) -> None:
        self.b.start()
        self.a.start()

    def stop(self) -> None:
        for pf in (self.a, self.b):
            try:
                pf.stop()
            except Exception as exc:  # cleanup goes on
                print(f"postfix stop: {exc}", file=sys.stderr)

    def pids(self) -> list[int]:
        return [pf.proc.pid for pf in (self.a, self.b) if pf.proc is not None]

    def delivered(self) -> int:
        new = self.b.mail_base / self.user / "new"
        try:
            return sum(1 for _ in os.scandir(new))
        except FileNotFoundError:
            return 0

    def check_warmup(self) -> None:
        """B's Received: says TLS with A's client certificate verified."""
        new = self.b.mail_base / self.user / "new"
        last = max(new.iterdir(), key=lambda p: p.stat().st_mtime_ns).read_bytes()
        head = last.split(b"\n\n", 1)[0]
        if b"verified OK" not in head or b"(using TLS" not in head:
            raise RuntimeError(f"unexpected message at Postfix B:\n{head[:2000].decode(errors='replace')}")

    def connect(self) -> smtplib.SMTP:
        ctx = ssl.create_default_context(cafile=str(self.trust_anchors))
        ctx.load_cert_chain(*self.client_cert)
        c = smtplib.SMTP("localhost", self.a.port, timeout=30)
        c.ehlo("client.test")
        c.starttls(context=ctx)
        c.ehlo("client.test")
        return c

    def round(self, n: int, sessions: int, size: int, timeout: float, sender: str) -> dict:
        before = self.delivered()
        cpu0 = tree_cpu_s(self.pids())
        t0 = time.perf_counter()
        accepted = send_all(self.connect, sender, self.rcpt, n, sessions, size)
        try:
            elapsed = wait_until(self.delivered, before + n, t0, timeout, "postfix B Maildir")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\nqueue of A:\n{self.a.queue()}\n{self.a.diagnostics()[-3000:]}") from None
        cpu = tree_cpu_s(self.pids()) - cpu0
        return {"accepted_s": accepted, "elapsed_s": elapsed, "cpu_s": cpu}


# --- main ----------------------------------------------------------------------------------


def _sigterm(*_: object) -> None:
    raise SystemExit(143)  # unwinds through the finally blocks: servers stopped, folders removed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--messages", type=int, help="messages per round (default 200, --quick 20)")
    ap.add_argument("--sessions", type=int, default=4, help="submission connections at A")
    ap.add_argument("--size", type=int, default=10 * 1024, help="body bytes per message")
    ap.add_argument("--rounds", type=int, help="rounds of each (default 3, --quick 1)")
    ap.add_argument("--quick", action="store_true", help="20 messages, 1 round (a smoke run)")
    ap.add_argument("--timeout", type=float, help="seconds to wait for delivery (default 60 + N/2)")
    ap.add_argument("--no-postfix", action="store_true", help="MSS only (no root, no postfix)")
    args = ap.parse_args()
    n = args.messages or (20 if args.quick else 200)
    rounds = args.rounds or (1 if args.quick else 3)
    sessions = max(1, min(args.sessions, n))
    timeout = args.timeout or 60 + n / 2
    why_not = "--no-postfix" if args.no_postfix else postfix_available()
    signal.signal(signal.SIGTERM, _sigterm)

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="mss-relay-bench-") as tmp_s:
        tmp = Path(tmp_s)
        mss = MssPair(tmp / "mss")
        pf = None
        if why_not is None:
            pf = PostfixPair(tmp / "postfix", mss.a.directory / "pki" / "ca", mss.a.trust_anchors, mss.rcpt["address"])
        else:
            print(f"reference skipped: {why_not}", file=sys.stderr)
        try:
            mss.start()
            if pf is not None:
                pf.start()
            # One message through each path first (connections, TLS caches, SQLite pages),
            # and a look at it: the paths measured are the ones described above.
            mss.round(1, 1, args.size, timeout)
            mss.check_warmup()
            if pf is not None:
                pf.round(1, 1, args.size, timeout, mss.sender["address"])
                pf.check_warmup()
            for r in range(1, rounds + 1):
                for name in ("mss", "postfix"):
                    if name == "postfix" and pf is None:
                        continue
                    if name == "mss":
                        res = mss.round(n, sessions, args.size, timeout)
                    else:
                        res = pf.round(n, sessions, args.size, timeout, mss.sender["address"])
                    row = {
                        "bench": "relay",
                        "impl": name,
                        "round": r,
                        "messages": n,
                        "size": args.size,
                        "sessions": sessions,
                        "accepted_s": round(res["accepted_s"], 4),
                        "elapsed_s": round(res["elapsed_s"], 4),
                        "msg_per_s": round(n / res["elapsed_s"], 2),
                        "cpu_s": round(res["cpu_s"], 3),
                        "cpu_ms_per_msg": round(res["cpu_s"] * 1000 / n, 3),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        finally:
            if pf is not None:
                pf.stop()
            mss.stop()

    def med(impl: str, key: str) -> float | None:
        vals = [r[key] for r in rows if r["impl"] == impl]
        return statistics.median(vals) if vals else None

    ratios = []
    for r in range(1, rounds + 1):
        m = next((x for x in rows if x["impl"] == "mss" and x["round"] == r), None)
        p = next((x for x in rows if x["impl"] == "postfix" and x["round"] == r), None)
        if m and p:
            ratio = {
                "bench": "relay",
                "impl": "ratio mss/postfix",
                "round": r,
                "msg_per_s": round(m["msg_per_s"] / p["msg_per_s"], 3),
                "cpu_ms_per_msg": round(m["cpu_ms_per_msg"] / p["cpu_ms_per_msg"], 3) if p["cpu_ms_per_msg"] else None,
            }
            ratios.append(ratio)
            print(json.dumps(ratio), flush=True)

    print()
    print(f"{n} msgs x {args.size} B, {sessions} submission sessions, {rounds} round(s); medians:")
    print(f"{'':22} {'msg/s e2e':>10} {'accept s':>9} {'CPU ms/msg':>11}")
    for impl in ("mss", "postfix"):
        if med(impl, "msg_per_s") is not None:
            print(
                f"{impl:22} {med(impl, 'msg_per_s'):10.1f} {med(impl, 'accepted_s'):9.2f} "
                f"{med(impl, 'cpu_ms_per_msg'):11.2f}"
            )
    if ratios:
        rate = statistics.median(x["msg_per_s"] for x in ratios)
        cpus = [x["cpu_ms_per_msg"] for x in ratios if x["cpu_ms_per_msg"] is not None]
        cpu_txt = f"{statistics.median(cpus):11.2f}" if cpus else f"{'n/a':>11}"
        print(f"{'ratio mss/postfix':22} {rate:10.2f} {'':9} {cpu_txt}")


if __name__ == "__main__":
    main()
