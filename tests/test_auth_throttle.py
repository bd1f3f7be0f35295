"""Authentication failures counted across connections and protocols (issue 13, "Abuse
resistance"): a real `mss serve` with small `[abuse]` settings, smtplib and imaplib over TLS
from chosen loopback source addresses (each one a different client for the counters).

- failures on SMTP back IMAP off from the same address (`454 4.7.0` / `NO [UNAVAILABLE]`),
  while the same mailbox from another address is served meanwhile;
- a success resets the (mailbox, address) counter;
- the mailbox-wide counter gives way after its short cap: an attacker cannot keep the owner
  out for longer, and certificate-only EXTERNAL is never backed off.
"""

from __future__ import annotations

import imaplib
import time

import pytest
from abuse_support import (
    auth_plain,
    imap_login,
    imaps,
    retry_after,
    seed_failures,
    served,
    smtp_client,
    throttle_rows,
    throttle_wait,
)
from support import new_app_password

from mss.auth import AuthThrottle
from mss.config import Settings
from mss.throttle import Throttle, stored_key

pytestmark = pytest.mark.timeout(180)


# -- the key families (no database needed) ----------------------------------------------------


def test_each_key_family_gets_its_own_allowance():
    settings = Settings(
        domain="example.test",
        abuse={
            "auth_free_failures": 2,
            "auth_max_backoff_s": 30,
            "auth_mailbox_free_failures": 40,
            "auth_mailbox_max_backoff_s": 5,
            "auth_address_free_failures": 20,
            "auth_address_max_backoff_s": 600,
        },
        portal={"account_free_failures": 3, "account_wide_free_failures": 70, "address_free_failures": 60},
    )
    t = Throttle(settings, None)  # type: ignore[arg-type] - allowances only
    got = {
        k: (t.allowance(stored_key(k)).free, t.allowance(stored_key(k)).max_backoff_s)
        for k in (
            "auth-mailbox:a@x.test|127.0.0.1",
            "auth-mailbox:a@x.test",
            "auth-address:127.0.0.1",
            "account:1850869|10.0.0.0/24",
            "account:1850869",
            "address:10.0.0.0/24",
            "totp:1850869",
            "auth-mailbox:" + "x" * 400 + "|127.0.0.1",  # hashed: still a pair key
            "auth-mailbox:" + "x" * 400,  # hashed: still mailbox-wide
        )
    }
    assert list(got.values()) == [
        (2, 30),
        (40, 5),
        (20, 600),
        (3, 900),
        (70, 900),
        (60, 900),
        (3, 900),
        (2, 30),
        (40, 5),
    ]


# -- across connections and protocols, on real sockets ------------------------------------------

#: Few free failures per (mailbox, address), many per mailbox and per address.
CROSS = {"abuse": {"auth_free_failures": 2, "auth_mailbox_free_failures": 50, "auth_address_free_failures": 100}}


def test_a_failure_on_smtp_backs_imap_off_from_that_address_only(backend, tmp_path):
    with served(backend, tmp_path / "demo", CROSS) as server:
        dep = server.deployment
        claire = dep.mailbox("PER", 0)
        password = new_app_password(dep, claire["address"])
        keys = AuthThrottle.keys("127.0.0.1:1", claire["address"])
        # This address guessed Claire's password hours ago (its back-off long over), so the
        # next failure waits 2**(6-2-1) = 8 s: long enough to look at from every side.
        seed_failures(dep, [keys.pair], 5)
        assert throttle_wait(dep, keys.all) == 0

        c = smtp_client(server, claire)
        assert auth_plain(c, claire["address"], "wrong")[0] == 535
        # Backed off now, even with the right password (nothing is checked meanwhile):
        code, text = auth_plain(c, claire["address"], password)
        assert code == 454 and text.startswith(b"4.7.0 Too many failed authentication attempts"), text
        assert 1 <= retry_after(text.decode()) <= 8
        c.close()
        # ... on IMAP too, from the same address:
        refused = imap_login(server, claire, password)
        assert "[UNAVAILABLE]" in refused and 1 <= retry_after(refused) <= 8, refused
        m = imaps(server, claire)
        try:
            typ, data = m._simple_command("AUTHENTICATE", "PLAIN", _b64(f"\0{claire['address']}\0{password}"))
        except imaplib.IMAP4.error as exc:
            typ, data = "NO", [str(exc).encode()]
        finally:
            m.shutdown()
        assert typ == "NO" and b"[UNAVAILABLE]" in data[-1], data
        # Meanwhile the same mailbox from another address is served at once.
        assert imap_login(server, claire, password, source="127.0.0.2") == "OK"
        c = smtp_client(server, claire, source="127.0.0.2")
        assert auth_plain(c, claire["address"], password)[0] == 235
        c.close()

        log = server.log_text()
        assert "auth throttled" in log and "reason=backoff" in log
        assert "protocol=imap" in log.partition("auth throttled")[2]


def test_a_success_resets_the_address_counter_only(backend, tmp_path):
    with served(backend, tmp_path / "demo", CROSS) as server:
        dep = server.deployment
        claire = dep.mailbox("PER", 0)
        password = new_app_password(dep, claire["address"])
        keys = AuthThrottle.keys("127.0.0.1:1", claire["address"])
        for n in range(2):
            assert "[AUTHENTICATIONFAILED]" in imap_login(server, claire, f"wrong-{n}")
        assert {k: v for k, v in throttle_rows(dep).items() if k in keys.all} == {
            keys.pair: 2,
            keys.mailbox: 2,
            keys.address: 2,
        }
        assert imap_login(server, claire, password) == "OK"
        # The pair is forgotten; the mailbox-wide and address counters keep their failures
        # (only the success's own reservation is given back: a guesser cannot clear them).
        rows = throttle_rows(dep)
        assert keys.pair not in rows and rows[keys.mailbox] == 2 and rows[keys.address] == 2
        # So two more wrong passwords are plain refusals again, not a back-off.
        for n in range(2):
            assert "[AUTHENTICATIONFAILED]" in imap_login(server, claire, f"again-{n}")
        assert throttle_wait(dep, keys.all) == 0


#: The mailbox-wide key: 3 free failures, then at most 2 s; the guessers' own keys: 2 free
#: and up to an hour.
LOCKOUT = {
    "abuse": {
        "auth_free_failures": 2,
        "auth_max_backoff_s": 3600,
        "auth_mailbox_free_failures": 3,
        "auth_mailbox_max_backoff_s": 2,
        "auth_address_free_failures": 100,
    }
}


def test_an_attacker_cannot_keep_the_owner_out_for_longer_than_the_cap(backend, tmp_path):
    with served(backend, tmp_path / "demo", LOCKOUT) as server:
        dep = server.deployment
        claire = dep.mailbox("PER", 0)
        password = new_app_password(dep, claire["address"])
        # A distributed guess went on for hours: the mailbox-wide counter is far over its
        # allowance (each back-off there capped at 2 s, the last one over).
        seed_failures(dep, [AuthThrottle.keys("127.0.0.9:1", claire["address"]).mailbox], 20)
        # One more guess from yet another address starts the longest wait there is: the cap.
        assert "[AUTHENTICATIONFAILED]" in imap_login(server, claire, "guess", source="127.0.0.2")
        started = time.monotonic()
        # The owner, from their own address with the right password, is held that long...
        held = imap_login(server, claire, password, source="127.0.0.1")
        assert "[UNAVAILABLE]" in held and retry_after(held) <= 2, held
        # ... their certificate alone is never held (nothing guessable: EXTERNAL)...
        m = imaps(server, claire)
        try:
            assert m.authenticate("EXTERNAL", lambda _: b"")[0] == "OK"
        finally:
            m.logout()
        # ... and guessers, however many, do not make it longer (held replies count nothing).
        for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
            answer = imap_login(server, claire, "guess-more", source=source)
            assert "[UNAVAILABLE]" in answer and retry_after(answer) <= 2, answer
        time.sleep(max(0.0, 2.1 - (time.monotonic() - started)))
        assert imap_login(server, claire, password, source="127.0.0.1") == "OK"


def test_attempts_without_a_valid_certificate_touch_no_shared_counter(backend, tmp_path):
    """PLAIN without a client certificate, or with one not entitled to the mailbox, tests no
    password: no shared counter keeps anything of it (neither the mailbox's nor the
    address's), so guessers without a certificate cannot lock out a user with a valid
    certificate who shares their address. The address allows a single free failure here:
    before the fix, these attempts alone put 127.0.0.2 into back-off."""
    settings = {"abuse": {"auth_free_failures": 1, "auth_mailbox_free_failures": 1, "auth_address_free_failures": 1}}
    with served(backend, tmp_path / "demo", settings) as server:
        dep = server.deployment
        claire = dep.mailbox("PER", 0)
        other = dep.mailbox("PER", 1)  # a valid certificate, of somebody else
        password = new_app_password(dep, claire["address"])
        for entry in (None, None, other, other):
            c = smtp_client(server, entry, source="127.0.0.2")  # no certificate / not claire's
            assert auth_plain(c, claire["address"], password)[0] == 535
            c.close()
        keys = AuthThrottle.keys("127.0.0.2:1", claire["address"])
        rows = throttle_rows(dep)
        assert (rows.get(keys.address, 0), rows.get(keys.mailbox, 0), rows.get(keys.pair, 0)) == (0, 0, 0), rows
        # The owner behind the same address, with their certificate and app password, is in.
        assert imap_login(server, claire, password, source="127.0.0.2") == "OK"
        c = smtp_client(server, claire, source="127.0.0.2")
        try:
            assert auth_plain(c, claire["address"], password)[0] == 235
        finally:
            c.close()


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def test_incoherent_or_unsafe_abuse_settings_are_refused():
    from pydantic import ValidationError

    for abuse in (
        {"rcpt_soft_error_limit": 20, "rcpt_hard_error_limit": 20},  # never slowed before the drop
        {"auth_mailbox_max_backoff_s": 3600},  # a mailbox-wide lockout of an hour
        {"auth_free_failures": 0},
        {"auth_free_failure": 5},  # misspelt: not silently ignored
    ):
        with pytest.raises(ValidationError):
            Settings(domain="example.test", abuse=abuse)
    assert Settings(domain="example.test").abuse.auth_mailbox_max_backoff_s == 60
