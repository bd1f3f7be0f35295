"""imapclient's own live test suite (`python -m imapclient.livetest`) against a real `mss serve`.

livetest is a third-party client's idea of a working IMAP server, so it finds what our own
tests, written by the same people as the server, do not think of. It cannot present a client
certificate, and MSS serves nobody without one (docs/imap.md, "App passwords"): stunnel, in
client mode, listens on an ephemeral port of 127.0.0.1 for livetest's plain connections and
carries each one over TLS, with the professional's certificate of the demo health PKI, to MSS,
either on the implicit-TLS port or with STARTTLS (stunnel's `protocol = imap`). Through the
tunnel livetest logs in with an app password, as a mail client does.

The test pins the outcome of every livetest test: EXPECTED_FAILURES (each with why it fails)
and EXPECTED_SKIPS (capabilities MSS does not offer) must be exactly what happens, so a new
failure fails this test, and so does an expected failure that starts passing or stops running.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import Deployment, ServerProcess, make_deployment, new_app_password, start_server

STUNNEL = shutil.which("stunnel4") or shutil.which("stunnel")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ENCRYPTED = "encryption by design"

# Each reason starts with one of REASON_KINDS. The same eleven tests run twice, with and without
# UIDs, and fail the same way both times.
_BY_UID = {
    "test_append_bytes": f"{ENCRYPTED}: FETCH RFC822 returns the stored S/MIME envelope (Subject "
    "placeholder `[...]`, application/pkcs7-mime body), not the APPENDed bytes; clients decrypt it "
    "(docs/imap.md, FETCH). INTERNALDATE and keywords, checked first, pass",
    "test_append_unicode": f"{ENCRYPTED}: as test_append_bytes, the message is APPENDed as text",
    "test_copy": f"{ENCRYPTED}: the copy's RFC822 is the envelope, whose clear Subject is the "
    "placeholder, so b'something' is not in it (docs/imap.md, outer header section)",
    "test_fetch": f"{ENCRYPTED}: RFC822 is the envelope, not the message sent; the ENVELOPE checked "
    "after it would differ only by its Subject, the placeholder",
    "test_BODYSTRUCTURE": f"{ENCRYPTED}: BODY and BODYSTRUCTURE describe the S/MIME envelope "
    "(application/pkcs7-mime; smime-type=enveloped-data), not text/plain or multipart/mixed",
    "test_search": f"{ENCRYPTED}: `SEARCH NOT DELETED SMALLER 500` finds nothing, RFC822.SIZE being "
    "the ciphertext's (1078 octets for a 24-octet message); the SUBJECT searches after it would "
    "miss too, the clear Subject being the placeholder",
    "test_search_with_unicode": f"{ENCRYPTED}: SEARCH BODY never matches, the body is ciphertext "
    "(docs/imap.md, SEARCH); TEXT, searched after it, matches only the outer header fields",
    "test_sort_with_unicode": f"{ENCRYPTED}: SORT's criteria are SEARCH's, and `TEXT <smiley>` "
    "matches only the outer header fields, whose Subject is the placeholder",
    "test_thread": f"{ENCRYPTED}: the three messages have no Message-ID and their clear Subject is "
    "the same placeholder `[...]`, so REFERENCES gathers them by subject into one thread (RFC 5256 "
    "5, step 5); the subjects a, b, c that would keep them apart are inside the ciphertext",
    "test_thread_with_unicode": f"{ENCRYPTED}: as test_sort_with_unicode, TEXT sees only the outer header fields",
    # Runs since ACL is advertised (RFC 4314, shared mailboxes): GETACL needs the "a" right
    # (RFC 4314 4), which nobody holds over IMAP, the owner included: rights are the
    # operator's (`mss mailbox grant`), so GETACL is NO [NOPERM] (docs/imap.md, Shared mailboxes).
    "test_getacl": 'by design: GETACL needs the "a" right (RFC 4314 4), which nobody holds over IMAP: '
    "rights are set by the operator (mss mailbox grant), so GETACL answers NO [NOPERM]",
}

EXPECTED_FAILURES: dict[str, str] = {
    "TestGeneral.test_subscriptions": "by design: CREATE subscribes the new folder (docs/imap.md, "
    "Listing and subscriptions; RFC 9051 6.3.4 leaves it to the server), so the base folder "
    "livetest's setUp creates is in LSUB while the test expects only the folders it subscribed",
    **{f"TestWithUIDs.{name}": why for name, why in _BY_UID.items()},
    **{f"TestWithoutUIDs.{name}": why for name, why in _BY_UID.items()},
}

# How many tests imapclient 3.1's livetest has (24 pass against MSS): a run that stops short fails.
LIVETEST_TESTS = 52

REASON_KINDS = (f"{ENCRYPTED}: ", "by design: ", "the suite's own bit-rot: ", "server bug: ")

# Capabilities livetest wants and MSS does not offer (docs/imap.md, Extensions): advertising
# one makes its tests run, and their outcome must then be written down above.
_SKIPPED_BY_UID = {
    "test_gmail_labels": "X-GM-EXT-1 (Gmail's)",
    "test_gmail_search": "X-GM-EXT-1 (Gmail's)",
}
EXPECTED_SKIPS: dict[str, str] = {
    "TestGeneral.test_xlist": "XLIST (Gmail's, superseded by SPECIAL-USE)",
    **{f"TestWithUIDs.{name}": cap for name, cap in _SKIPPED_BY_UID.items()},
    **{f"TestWithoutUIDs.{name}": cap for name, cap in _SKIPPED_BY_UID.items()},
}

# Runs livetest's main() in a child process and writes every test's outcome to a JSON file.
# The imapclient 3.1 wheel ships a livetest.py from before its Python 2 support was dropped
# (the suite's own bit-rot): it imports `six`, which imapclient no longer depends on, and `imp`,
# gone in Python 3.12. Both are given here, with the few names livetest uses. unittest.main gets
# a result class that records outcomes by the class names livetest registers (TestWithUIDs,
# TestWithoutUIDs): its own report names both LiveTest.
_RUNNER = r"""
import json, sys, traceback, types, unittest

six = types.ModuleType("six")
six.binary_type, six.text_type, six.PY3 = bytes, str, True
six.iteritems = lambda d: iter(d.items())
sys.modules["six"] = six
if "imp" not in sys.modules:
    try:
        import imp  # noqa: F401
    except ImportError:
        sys.modules["imp"] = types.SimpleNamespace(new_module=types.ModuleType)

import imapclient.livetest as livetest

ini, report = sys.argv[1], sys.argv[2]
outcomes = {}

def name(test):
    if isinstance(test, unittest.TestCase):
        return f"{type(test).__name__}.{test._testMethodName}"
    return str(test)  # a setUpClass/tearDownClass failure

def summary(err):
    tb = traceback.extract_tb(err[2])
    frames = [f"{f.name}:{f.lineno}" for f in tb if f.filename.endswith("livetest.py")]
    last = traceback.format_exception_only(err[0], err[1])[-1].strip()
    return {"where": " > ".join(frames), "error": last[:400]}

class Recording(unittest.TextTestResult):
    def addSuccess(self, test):
        super().addSuccess(test)
        outcomes[name(test)] = {"outcome": "pass"}
    def addFailure(self, test, err):
        super().addFailure(test, err)
        outcomes[name(test)] = {"outcome": "fail", **summary(err)}
    def addError(self, test, err):
        super().addError(test, err)
        outcomes[name(test)] = {"outcome": "error", **summary(err)}
    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        outcomes[name(test)] = {"outcome": "skip", "error": reason}
    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        outcomes[name(test)] = {"outcome": "pass"}

program = unittest.main
unittest.main = lambda **kw: program(
    **kw, argv=["livetest"], exit=False, testRunner=unittest.TextTestRunner(resultclass=Recording, verbosity=2)
)
sys.argv = ["livetest", ini]
livetest.main()
with open(report, "w", encoding="utf-8") as fh:
    json.dump(outcomes, fh)
"""

STUNNEL_CONF = """\
foreground = yes
pid =
debug = notice
output = {log}

[imap]
client = yes
accept = 127.0.0.1:0
connect = {host}:{port}
{protocol}cert = {cert}
key = {key}
CAfile = {ca}
verifyChain = yes
checkHost = localhost
"""


def listening_port(pid: int) -> int | None:
    """The TCP port process `pid` listens on (stunnel binds `accept = 127.0.0.1:0` to an
    ephemeral port and does not say which): its socket inodes matched in /proc/net/tcp."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        m = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(fd)) if fd.is_symlink() else None
        if m:
            inodes.add(m.group(1))
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        if cols[3] == "0A" and cols[9] in inodes:  # 0A: TCP_LISTEN
            return int(cols[1].split(":")[1], 16)
    return None


def start_stunnel(tmp: Path, dep: Deployment, server: ServerProcess, entry: dict, route: str):
    """stunnel for one professional: (the process, its local port)."""
    conf = tmp / f"stunnel-{route}.conf"
    log = tmp / f"stunnel-{route}.log"
    conf.write_text(
        STUNNEL_CONF.format(
            log=log,
            host=server.host,
            port=server.port("imaps" if route == "imaps" else "imap"),
            protocol="protocol = imap\n" if route == "starttls" else "",
            cert=dep.path(entry, "tls_cert"),
            key=dep.path(entry, "tls_key"),
            ca=dep.trust_anchors,
        )
    )
    proc = subprocess.Popen([STUNNEL, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"stunnel exited with {proc.returncode}:\n{log.read_text() if log.exists() else ''}")
        port = listening_port(proc.pid)
        if port:
            return proc, port
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("stunnel did not listen within 15 s")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("livetest")
    dep, _ = make_deployment(tmp / "demo", "sqlite")
    server = start_server(dep)
    yield tmp, dep, server
    server.stop()


# One professional per route, so the two runs share no folders.
ROUTES = {"imaps": 0, "starttls": 1}


@pytest.mark.skipif(STUNNEL is None, reason="stunnel4 is not installed (`make deb-test` installs it)")
@pytest.mark.parametrize("route", list(ROUTES))
def test_imapclient_livetest_outcomes_are_the_expected_ones(served, route):
    tmp, dep, server = served
    entry = dep.mailbox("PER", ROUTES[route])
    password = new_app_password(dep, entry["address"], label=f"livetest {route}")
    tunnel, port = start_stunnel(tmp, dep, server, entry, route)
    try:
        ini = tmp / f"livetest-{route}.ini"
        ini.write_text(
            f"[DEFAULT]\nhost = 127.0.0.1\nport = {port}\nssl = false\n"
            f"username = {entry['address']}\npassword = {password}\ntimeout = 20\n"
        )
        report = tmp / f"livetest-{route}.json"
        run = subprocess.run(
            [sys.executable, "-c", _RUNNER, str(ini), str(report)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0 and report.exists(), f"livetest did not run:\n{run.stderr[-4000:]}"
        outcomes = json.loads(report.read_text())
    finally:
        tunnel.terminate()
        tunnel.wait(10)

    failing = {n: o for n, o in outcomes.items() if o["outcome"] in ("fail", "error")}
    skipped = {n for n, o in outcomes.items() if o["outcome"] == "skip"}
    new = {n: f"{o['outcome']} at {o['where']}: {o['error']}" for n, o in failing.items() if n not in EXPECTED_FAILURES}
    fixed = {n: outcomes.get(n, {"outcome": "not run"})["outcome"] for n in EXPECTED_FAILURES if n not in failing}
    assert not new and not fixed, (
        "livetest's outcomes changed.\nNew failures (classify them in EXPECTED_FAILURES): "
        + json.dumps(new, indent=1)
        + "\nExpected failures that no longer fail (remove them): "
        + json.dumps(fixed, indent=1)
    )
    assert skipped == set(EXPECTED_SKIPS), (
        f"skips changed: new {skipped - set(EXPECTED_SKIPS)}, gone {set(EXPECTED_SKIPS) - skipped}"
    )
    passed = sorted(n for n, o in outcomes.items() if o["outcome"] == "pass")
    assert len(outcomes) == LIVETEST_TESTS, (
        f"{len(outcomes)} livetest tests ran, not {LIVETEST_TESTS}; passed: {passed}"
    )


def test_every_expected_failure_says_why():
    for name, reason in EXPECTED_FAILURES.items():
        assert reason.startswith(REASON_KINDS), f"{name}: {reason!r} does not start with one of {REASON_KINDS}"
