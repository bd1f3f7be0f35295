"""Shared ORG mailboxes end to end: a real `mss serve`, real TLS with the demo PKI's client
certificates, imaplib and smtplib, rights set with `mss mailbox grant` / `revoke` as an
operator does. Claire has the `write` grant, Paul the `read` one; neither logs in with an
authorization identity (Claire with her app password, Paul by his certificate alone), and
both find the cabinet's mailbox under `Partagés/`, decrypt its mail with their own key,
keep their own \\Seen, and Paul is refused, `NO [NOPERM]`, everything `read` does not give."""

from __future__ import annotations

import imaplib
import json
import os
import re
import subprocess
import sys
import uuid

import pytest
from mail import build_message, openssl_decrypt, smtp_submission
from support import ROOT, new_app_password, start_server

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

imaplib.Commands.setdefault("LISTRIGHTS", ("AUTH", "SELECTED"))


def mss(dep, *args: str) -> dict:
    res = subprocess.run(
        [sys.executable, "-m", "mss", *args, "--json", "-c", str(dep.config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def imap(srv, dep, entry, *, password: str | None = None, authzid: str = "") -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL(srv.host, srv.port("imaps"), ssl_context=dep.client_context(entry), timeout=30)
    if password is not None:
        m.login(entry["address"], password)
    else:
        m.authenticate("EXTERNAL", lambda _: authzid.encode())
    return m


def ok(result) -> list:
    typ, data = result
    assert typ == "OK", data
    return data


def noperm(result) -> str:
    typ, data = result
    text = b" ".join(d if isinstance(d, bytes) else b"" for d in data).decode()
    assert typ == "NO" and "[NOPERM]" in text, (typ, data)
    return text


def select_read_only(m, name: str) -> None:
    """SELECT answered OK [READ-ONLY] (RFC 4314 4: no "i", "e", "t", "w"): imaplib raises
    on it though the folder is selected; told so, it goes on."""
    with pytest.raises(imaplib.IMAP4.readonly):
        m.select(name)
    assert m.state == "SELECTED"
    m.is_readonly = True


def flags_of(m, n: str = "1") -> str:
    data = ok(m.fetch(n, "(FLAGS)"))
    return re.search(rb"FLAGS \(([^)]*)\)", data[0]).group(1).decode()


def unseen(m, name: str) -> int:
    data = ok(m.status(name, "(UNSEEN)"))
    return int(re.search(rb"UNSEEN (\d+)", data[0]).group(1))


def test_two_members_read_the_shared_mailbox_with_their_own_keys_and_rights(fresh_deployment, tmp_path):
    dep = fresh_deployment
    claire, paul, org = dep.mailbox("PER", 0), dep.mailbox("PER", 1), dep.mailbox("ORG")
    address = org["address"]
    shared = f"Partag&AOk-s/{address}"
    inbox = f'"{shared}/INBOX"'
    assert mss(dep, "mailbox", "grant", address, paul["address"], "--rights", "read")["rights"] == "lrs"
    srv = start_server(dep)
    try:
        canary = "canary-" + uuid.uuid4().hex
        raw, msgid = build_message(claire["address"], [address], "cabinet", f"Compte rendu {canary}\n")
        with smtp_submission(srv, claire) as smtp:
            assert smtp.sendmail(claire["address"], [address], raw) == {}
        c = imap(srv, dep, claire, password=new_app_password(dep, claire["address"]))
        p = imap(srv, dep, paul)
        try:
            # NAMESPACE (RFC 2342) and LIST (the levels \Noselect, the folders below).
            assert ok(c.namespace())[0] == b'(("" "/")) NIL (("Partag&AOk-s/" "/"))'
            listing = b"\n".join(ok(p.list('""', "*")))
            assert b'(\\Noselect \\HasChildren) "/" "Partag&AOk-s"' in listing
            assert f'(\\Noselect \\HasChildren) "/" "{shared}"'.encode() in listing
            assert f'"/" {inbox}'.encode() in listing
            caps = ok(p.capability())[0]
            assert b" ACL " in caps + b" " and b"RIGHTS=texk" in caps

            # Both read the message delivered to the ORG address, each with their own key.
            assert ok(c.select(inbox)) == [b"1"]
            select_read_only(p, inbox)
            for m, entry in ((c, claire), (p, paul)):
                stored = ok(m.fetch("1", "(BODY.PEEK[])"))[0][1]
                assert canary.encode() not in stored
                assert canary.encode() in openssl_decrypt(dep, entry, stored, tmp_path)

            # \Seen is each member's own (RFC 4314 4); the other flags are the mailbox's.
            ok(c.fetch("1", "(BODY[])"))
            assert "\\Seen" in flags_of(c) and "\\Seen" not in flags_of(p)
            assert (unseen(c, inbox), unseen(p, inbox)) == (0, 1)
            ok(c.store("1", "+FLAGS", "(\\Flagged)"))
            assert "\\Flagged" in flags_of(p)
            assert "\\Seen" in ok(p.store("1", "+FLAGS", "(\\Seen)"))[0].decode()  # his "s"

            # MYRIGHTS, and everything `read` (lrs) does not give: NO [NOPERM], nothing done.
            assert ok(p.myrights(inbox))[0] == f"{inbox} lrs".encode()
            assert ok(c.myrights(inbox))[0] == f"{inbox} lrswikxte".encode()
            noperm(p.store("1", "+FLAGS", "(\\Deleted)"))
            noperm(p.store("1", "+FLAGS", "(\\Flagged)"))
            noperm(p.expunge())
            noperm(p.append(inbox, None, None, raw))
            noperm(p.create(f'"{shared}/Dossiers"'))
            noperm(p.delete(f'"{shared}/Junk"'))
            text = noperm(p.getacl(inbox))
            assert "mss mailbox grant" in text
            noperm(p.setacl(inbox, paul["address"], "+w"))
            noperm(p.deleteacl(inbox, claire["address"]))
            noperm(p._simple_command("LISTRIGHTS", inbox, claire["address"]))
            ok(p.append("INBOX", None, None, raw))  # his own mailbox: every right but "a"
            ok(p.select("INBOX"))
            noperm(p.copy("1", inbox))
            select_read_only(p, inbox)
            assert ok(p.search(None, "ALL")) == [b"1"] and flags_of(c).count("\\Deleted") == 0
        finally:
            c.logout()
            p.logout()

        # Through an authorization identity the ORG mailbox is the session's, under the
        # same rights.
        a = imap(srv, dep, paul, authzid=address)
        try:
            select_read_only(a, "INBOX")
            noperm(a.store("1", "+FLAGS", "(\\Flagged)"))
            noperm(a.append("INBOX", None, None, raw))
            assert ok(a.myrights("INBOX"))[0] == b'"INBOX" lrs'
        finally:
            a.logout()

        # Revoked: gone at his next login, not even selectable by name; new mail is no
        # longer encrypted to his key (the earlier one stays readable with it: E2E).
        mss(dep, "mailbox", "revoke", address, paul["address"])
        later, _ = build_message(claire["address"], [address], "after", f"Plus pour Paul {canary}\n")
        with smtp_submission(srv, claire) as smtp:
            assert smtp.sendmail(claire["address"], [address], later) == {}
        p = imap(srv, dep, paul)
        try:
            assert b"Partag" not in b"\n".join(ok(p.list('""', "*")))
            assert ok(p.namespace())[0] == b'(("" "/")) NIL NIL'
            typ, data = p.select(inbox)
            assert typ == "NO" and b"NONEXISTENT" in data[0]
            typ, data = p.myrights(inbox)
            assert typ == "NO"
        finally:
            p.logout()
        c = imap(srv, dep, claire)
        try:
            ok(c.select(inbox))
            newest = ok(c.fetch("2", "(BODY.PEEK[])"))[0][1]
            assert canary.encode() in openssl_decrypt(dep, claire, newest, tmp_path)
            with pytest.raises(subprocess.CalledProcessError):
                openssl_decrypt(dep, paul, newest, tmp_path)
        finally:
            c.logout()
    finally:
        srv.stop()
