"""Delivery throughput: MSS end to end vs a bare aiosmtpd sink, side by side.

MSS: TLS with a client certificate, policy, S/MIME encryption per recipient, group-committed
durable store. Baseline (DESIGN.md "Known ground"): aiosmtpd over the same TLS, writing and
fsyncing each message to a file before its 250. Both run in this minute on this machine, so
the ratio holds when the machine's speed drifts.

    python bench/smtp_bench.py [--messages 400] [--sessions 10] [--size 10240] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from mail import build_message, smtp_submission  # noqa: E402
from support import make_deployment, start_server  # noqa: E402


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its reaped children, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


def run_clients(connect, sender: str, rcpt: str, total: int, sessions: int, size: int) -> float:
    body = ("x" * 76 + "\n") * max(1, size // 77)  # RFC 5321 lines, not one long one
    per = total // sessions

    def one(_: int) -> None:
        with connect() as smtp:
            for _ in range(per):
                raw, _id = build_message(sender, [rcpt], "bench", body)
                smtp.sendmail(sender, [rcpt], raw)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(sessions) as pool:
        list(pool.map(one, range(sessions)))
    return per * sessions / (time.perf_counter() - t0)


class FsyncSink:
    """aiosmtpd handler: write the message to its own file and fsync before 250."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        path = self.directory / f"{self.n}.eml"

        def write() -> None:
            with open(path, "wb") as fh:
                fh.write(envelope.original_content)
                fh.flush()
                os.fsync(fh.fileno())

        await asyncio.to_thread(write)
        return "250 OK"


def start_baseline(dep, spool: Path):
    from aiosmtpd.smtp import SMTP

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(dep.directory / "pki/server.crt", dep.directory / "pki/server.key")
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.load_verify_locations(dep.trust_anchors)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder = {}

    async def main() -> None:
        srv = await loop.create_server(
            lambda: SMTP(FsyncSink(spool), require_starttls=True, tls_context=ctx, data_size_limit=50 * 2**20),
            "127.0.0.1",
            0,
        )
        holder["port"] = srv.sockets[0].getsockname()[1]
        ready.set()

    threading.Thread(target=lambda: (loop.run_until_complete(main()), loop.run_forever()), daemon=True).start()
    ready.wait(10)
    return holder["port"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=400)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--size", type=int, default=10 * 1024)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        dep, _ = make_deployment(Path(tmp) / "demo", "sqlite")
        claire, paul = dep.mailbox("PER", 0), dep.mailbox("PER", 1)
        srv = start_server(dep)
        spool = Path(tmp) / "spool"
        spool.mkdir()
        base_port = start_baseline(dep, spool)
        ctx = dep.client_context(claire)

        def baseline_client():
            import smtplib

            c = smtplib.SMTP("127.0.0.1", base_port, timeout=30)
            c.ehlo("bench")
            c.starttls(context=ctx)
            c.ehlo("bench")
            return c

        ratios, mss_rates, base_rates, cpu_ms = [], [], [], []
        try:
            for r in range(args.rounds):
                cpu0 = process_cpu_s(srv.proc.pid)
                m = run_clients(
                    lambda: smtp_submission(srv, claire),
                    claire["address"],
                    paul["address"],
                    args.messages,
                    args.sessions,
                    args.size,
                )
                cpu_ms.append((process_cpu_s(srv.proc.pid) - cpu0) * 1000 / args.messages)
                b = run_clients(
                    baseline_client, claire["address"], paul["address"], args.messages, args.sessions, args.size
                )
                mss_rates.append(m)
                base_rates.append(b)
                ratios.append(m / b)
                print(
                    f"round {r + 1}: mss {m:7.1f} msg/s ({cpu_ms[-1]:.2f} ms server CPU/msg)   "
                    f"baseline {b:7.1f} msg/s   ratio {m / b:.2f}"
                )
        finally:
            srv.stop()
        print(
            f"median over {args.rounds} rounds ({args.messages} msgs x {args.size} B, {args.sessions} sessions): "
            f"mss {statistics.median(mss_rates):.1f} msg/s at {statistics.median(cpu_ms):.2f} ms server CPU/msg, "
            f"baseline {statistics.median(base_rates):.1f} msg/s, "
            f"ratio mss/baseline {statistics.median(ratios):.2f}"
        )


if __name__ == "__main__":
    main()
