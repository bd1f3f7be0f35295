"""Parsing a message once: the one scanner against the code it replaced, side by side.

Every row runs the old code (the frozen copies in tests/frozen/) and the new code on the same
bytes in the same process, and reports old/new: these machines are noisy, ratios hold.

    python bench/parse_bench.py [--lines 200000] [--rounds 3] [--quick]

Rows:
- split       crypto.smime._split_message vs crypto.rfc5322.scan, one field folded over N lines
- parse       mss.message's four old checks + outer_headers vs parse_message (same input)
- parse-10k   the same on an ordinary 10 KB message
- protect     the old hp/protected-headers regex path vs smime.protect, Content-Type folded
              over blank lines (the old expression is quadratic: kept to 20,000 lines)
- imap        imap.mime parse + BODYSTRUCTURE + ENVELOPE, old vs new, typical stored message
- deliver-N   N x protect_and_encrypt (old: split + protect per target) vs protect once +
              N x encrypt, 100 KB message, RSA-2048 recipients
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402
from frozen import imap_mime_v0, message_v0, smime_v0  # noqa: E402

from crypto import smime  # noqa: E402
from crypto.rfc5322 import scan  # noqa: E402
from imap import mime  # noqa: E402
from mss.message import parse_message  # noqa: E402


class _Anyone:
    def may_use(self, address: str) -> bool:
        return True


def best(rounds: int, fn: Callable[[], object]) -> float:
    result = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        result = min(result, time.perf_counter() - t0)
    return result


def row(name: str, size: int, old: float, new: float) -> None:
    print(
        f"{name:<14} {size / 1e6:>8.2f} MB  old {old * 1e3:>10.1f} ms  new {new * 1e3:>8.2f} ms  old/new {old / new:>8.1f}"
    )


def folded(lines: int) -> bytes:
    return b"From: <a@b.test>\r\nX-Long: start\r\n" + b"\tcontinuation\r\n" * lines + b"\r\nbody\r\n"


def ordinary(size: int) -> bytes:
    head = (
        b"From: Claire <claire@h.test>\r\nTo: paul@h.test, sec@h.test\r\nSubject: Compte rendu\r\n"
        b"Date: Mon, 02 Nov 2026 10:00:00 +0100\r\nMessage-ID: <abc@h.test>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n'
    )
    return head + (b"x" * 76 + b"\r\n") * max(1, (size - len(head)) // 78)


def old_parse(raw: bytes) -> object:
    message_v0.check_line_endings(raw)
    message_v0.check_headers(raw)
    message_v0.check_header_senders(_Anyone(), raw)  # type: ignore[arg-type]
    return message_v0.outer_headers(raw)


def old_payload(raw: bytes) -> bytes:
    """The payload half of the old protect_and_encrypt, line for line."""
    fields, body = smime_v0._split_message(smime_v0._to_crlf(raw))
    outer = [f for name in smime_v0.OUTER_HEADERS for f in fields if f.key == name.lower()]
    return smime_v0._build_payload(fields, body, [(f.name, f.value) for f in outer] + [("Subject", b"[...]")])


def certificates(n: int) -> list[x509.Certificate]:
    out = []
    now = dt.datetime.now(dt.UTC)
    for i in range(n):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bench {i}")])
        out.append(
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=200_000, help="continuation lines of the folded field")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--targets", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="20,000 lines: the old splitter takes ~0.3 s, not ~30 s")
    args = ap.parse_args()
    lines = 20_000 if args.quick else args.lines
    big = 25 * 1024 * 1024

    raw = folded(lines)
    assert [(f.name, f.terminated) for f in scan(raw).fields] == [
        (f.name, f.raw) for f in smime_v0._split_message(raw)[0]
    ]
    old_rounds = 1 if lines > 50_000 else args.rounds
    row(
        f"split {lines // 1000}k",
        len(raw),
        best(old_rounds, lambda: smime_v0._split_message(raw)),
        best(args.rounds, lambda: scan(raw)),
    )
    row(
        f"parse {lines // 1000}k",
        len(raw),
        best(args.rounds, lambda: old_parse(raw)),
        best(args.rounds, lambda: parse_message(raw, max_size=big)),
    )
    plain = ordinary(10_240)
    row(
        "parse-10k",
        len(plain),
        best(args.rounds * 100, lambda: old_parse(plain)),
        best(args.rounds * 100, lambda: parse_message(plain, max_size=big)),
    )

    blank = b"From: a\r\nContent-Type: text/plain;\r\n" + b"\t\r\n" * 20_000 + b"\r\nbody\r\n"
    section = scan(blank)
    assert old_payload(blank) == smime.protect(section.fields, section.body).payload
    row(
        "protect 20k",
        len(blank),
        best(1, lambda: old_payload(blank)),
        best(args.rounds, lambda: smime.protect(scan(blank).fields, scan(blank).body)),
    )

    certs = certificates(args.targets)
    stored = smime.protect_and_encrypt(plain, certs[:1])
    row(
        "imap",
        len(stored),
        best(
            args.rounds * 100,
            lambda: (lambda p: (imap_mime_v0.bodystructure(p), imap_mime_v0.envelope(p)))(imap_mime_v0.parse(stored)),
        ),
        best(args.rounds * 100, lambda: (lambda p: (mime.bodystructure(p), mime.envelope(p)))(mime.parse(stored))),
    )

    message = ordinary(100 * 1024)

    def old_delivery() -> None:
        for cert in certs:
            smime_v0.protect_and_encrypt(message, [cert])

    def new_delivery() -> None:
        s = scan(message)
        protected = smime.protect(s.fields, s.body)
        for cert in certs:
            smime.encrypt(protected, [cert])

    row(f"deliver-{args.targets}", len(message), best(args.rounds, old_delivery), best(args.rounds, new_delivery))


if __name__ == "__main__":
    main()
