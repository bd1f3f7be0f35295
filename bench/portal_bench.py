"""What the patient portal costs the server, per operation, beside the bare framework.

A real `mss serve` (SQLite, the demo's patients) serves the portal over loopback HTTP. A
professional first sends messages to the activated demo patient; then the benchmark signs
in as the browser does (the key derivation runs in this process, outside the timings: it is
the browser's work) and times, over real HTTP with connection reuse:

- `health`: `GET /health`, the floor (uvicorn + FastAPI + the security middleware): the
  reference run beside every portal operation, in the same server and the same minute;
- `login`: `POST /portal/api/login` (Argon2id of the auth key, a session, the record);
- `inbox`: `GET /portal/messages` (a page of 20 conversations, read state);
- `conversation`: `GET /portal/conversations/{id}` (marks it read, journals the view);
- `message`: `GET /portal/api/messages/{mid}` (the stored ciphertext of one message).

Printed per operation: median wall time, server CPU ms per operation (from /proc, the most
noise-robust figure on a shared machine), and the CPU ratio to `health`.

    python bench/portal_bench.py [--messages 40] [--repeat 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from mail import build_message, smtp_submission  # noqa: E402
from support import make_deployment, start_server  # noqa: E402

from crypto.patient_client import PatientClient  # noqa: E402


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its reaped children, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


def csrf_of(html: str) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]*)">', html)
    if not found:
        raise SystemExit("no CSRF token on the page: is the portal served?")
    return found.group(1)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def measure(pid: int, repeat: int, op: Callable[[], httpx.Response]) -> tuple[float, float]:
    """(median wall ms, server CPU ms per operation) over `repeat` calls."""
    walls = []
    cpu0 = process_cpu_s(pid)
    for _ in range(repeat):
        t0 = time.perf_counter()
        response = op()
        walls.append((time.perf_counter() - t0) * 1000)
        if response.status_code >= 400:
            raise SystemExit(f"{response.request.url}: {response.status_code} {response.text[:200]}")
    return statistics.median(walls), (process_cpu_s(pid) - cpu0) * 1000 / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mss-portal-bench-") as tmp:
        dep, _ = make_deployment(Path(tmp), "sqlite", patients=True)
        srv = start_server(dep)
        try:
            patient = next(p for p in dep.doc["patients"] if "password" in p)
            claire = dep.mailbox("PER", 0)
            with smtp_submission(srv, claire) as smtp:
                for n in range(args.messages):
                    raw, _ = build_message(
                        claire["address"], [patient["address"]], f"bench {n}", ("x" * 76 + "\n") * 130
                    )
                    smtp.sendmail(claire["address"], [patient["address"]], raw)

            base = f"http://{srv.host}:{srv.port('http')}"
            # The portal's cookies are `__Host-…; Secure`: browsers send them to http://127.0.0.1
            # (loopback counts as a secure context), httpx does not, so they are kept here.
            jar: dict[str, str] = {}

            def keep(response: httpx.Response) -> None:
                for name, value in response.cookies.items():
                    jar[name] = value

            def send_cookies(request: httpx.Request) -> None:
                if jar:
                    request.headers["cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())

            hooks = {"request": [send_cookies], "response": [keep]}
            with httpx.Client(base_url=base, headers={"user-agent": "portal-bench"}, event_hooks=hooks) as http:
                token = csrf_of(http.get("/portal/connexion").text)
                headers = {"x-csrf-token": token, "sec-fetch-site": "same-origin"}
                params = http.post("/portal/api/prelogin", json={"login": patient["ins"]}, headers=headers).json()
                iterations = int(params["iterations"])
                auth_key = PatientClient(iterations=iterations).login(patient["password"], params)
                body = {"login": patient["ins"], "auth_key": b64url(auth_key)}

                def login() -> httpx.Response:
                    jar.pop("__Host-mss-session", None)
                    return http.post("/portal/api/login", json=body, headers=headers)

                login()
                inbox = http.get("/portal/messages").text
                conversation = re.search(r'href="/portal/conversations/(\d+)"', inbox)
                latest = re.search(r'data-latest="(/portal/api/messages/\d+)"', inbox)
                if not conversation or not latest:
                    raise SystemExit("no conversation in the inbox")
                ops: dict[str, Callable[[], httpx.Response]] = {
                    "health": lambda: http.get("/health"),
                    "login": login,
                    "inbox": lambda: http.get("/portal/messages"),
                    "conversation": lambda: http.get(f"/portal/conversations/{conversation.group(1)}"),
                    "message": lambda: http.get(latest.group(1)),
                }
                results: dict[str, list[tuple[float, float]]] = {name: [] for name in ops}
                for round_no in range(1, args.rounds + 1):
                    for name, op in ops.items():  # interleaved: every round runs every operation
                        results[name].append(measure(srv.proc.pid, args.repeat, op))
                    line = {n: round(r[-1][1], 2) for n, r in results.items()}
                    print(json.dumps({"round": round_no, "cpu_ms_per_op": line}))
        finally:
            srv.stop()

    floor = statistics.median(cpu for _, cpu in results["health"]) or 1e-9
    print(f"\n{'operation':<14}{'wall ms (p50)':>15}{'server CPU ms/op':>19}{'CPU / health':>15}")
    for name, runs in results.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"{name:<14}{wall:>15.2f}{cpu:>19.2f}{cpu / floor:>14.1f}x")
    print(f"\n{args.messages} messages of 10 KB in the inbox, {args.repeat} calls × {args.rounds} rounds, medians.")


if __name__ == "__main__":
    main()
