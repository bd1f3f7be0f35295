"""IMAP end to end: a real `mss serve`, real TLS with the demo PKI's client certificates,
real clients (imaplib, aioimaplib). Each test works in a folder of its own, so the shared
server's other traffic does not matter."""

from __future__ import annotations

import asyncio
import imaplib
import re
import ssl
import uuid

import aioimaplib
import pytest

pytestmark = pytest.mark.timeout(60)


def message(subject: str, frm: str, to: str, body: str = "Consultation notes\r\n") -> bytes:
    return (
        f"From: {frm}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Mon, 02 Nov 2026 10:00:00 +0100\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@test>\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    ).encode()


def connect(server, deployment, entry, *, implicit: bool = True, authzid: str | None = None) -> imaplib.IMAP4:
    ctx = deployment.client_context(entry)
    if implicit:
        m = imaplib.IMAP4_SSL(server.host, server.port("imaps"), ssl_context=ctx, timeout=20)
    else:
        m = imaplib.IMAP4(server.host, server.port("imap"), timeout=20)
        m.starttls(ssl_context=ctx)
    m.authenticate("EXTERNAL", lambda _: (authzid or "").encode())
    return m


@pytest.fixture
def claire(deployment):
    return deployment.mailbox("PER", 0)


@pytest.fixture
def paul(deployment):
    return deployment.mailbox("PER", 1)


@pytest.fixture
def folder():
    return "t-" + uuid.uuid4().hex[:10]


def test_before_starttls_only_capability_starttls_noop_logout(server, deployment):
    import socket

    with socket.create_connection((server.host, server.port("imap")), timeout=20) as s:
        f = s.makefile("rb")
        greeting = f.readline()
        assert greeting.startswith(b"* OK") and b"STARTTLS" in greeting and b"LOGINDISABLED" in greeting
        assert b"AUTH=EXTERNAL" not in greeting
        s.sendall(b"a1 AUTHENTICATE EXTERNAL =\r\na2 LOGIN claire secret\r\na3 SELECT INBOX\r\na4 NOOP\r\n")
        assert f.readline().startswith(b"a1 NO [PRIVACYREQUIRED]")
        assert f.readline().startswith(b"a2 NO [PRIVACYREQUIRED]")
        assert f.readline().startswith(b"a3 NO [PRIVACYREQUIRED]")
        assert f.readline().startswith(b"a4 OK")
        # STARTTLS injection: what follows STARTTLS in the same packet is dropped.
        s.sendall(b"a5 STARTTLS\r\na6 AUTHENTICATE EXTERNAL =\r\n")
        assert f.readline().startswith(b"a5 OK")
        ctx = deployment.client_context(deployment.mailbox("PER", 0))
        with ctx.wrap_socket(s, server_hostname=server.host) as t:
            tf = t.makefile("rb")
            t.sendall(b"a7 NOOP\r\n")
            assert tf.readline().startswith(b"a7 OK")  # nothing answered a6


def test_starttls_authenticate_external_list_select(server, deployment, claire):
    m = connect(server, deployment, claire, implicit=False)
    try:
        assert m.state == "AUTH"
        typ, data = m.list('""', "*")
        assert typ == "OK"
        lines = [d.decode() for d in data]
        assert any(l.endswith('"INBOX"') for l in lines)
        assert any("\\Sent" in l and '"Sent"' in l for l in lines)
        typ, data = m.select("INBOX")
        assert typ == "OK"
        assert m.response("UIDVALIDITY")[1][0] is not None
    finally:
        m.logout()


def test_no_client_certificate_is_refused(server, deployment):
    ctx = ssl.create_default_context(cafile=str(deployment.trust_anchors))
    m = imaplib.IMAP4_SSL(server.host, server.port("imaps"), ssl_context=ctx, timeout=20)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            m.authenticate("EXTERNAL", lambda _: b"")
    finally:
        m.logout()


def test_login_without_the_app_password_is_refused_after_tls(server, deployment, claire):
    m = imaplib.IMAP4_SSL(server.host, server.port("imaps"), ssl_context=deployment.client_context(claire), timeout=20)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            m.login(claire["address"], "password")
    finally:
        m.logout()


def test_authzid_of_another_professional_is_refused(server, deployment, claire, paul):
    m = imaplib.IMAP4_SSL(server.host, server.port("imaps"), ssl_context=deployment.client_context(claire), timeout=20)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHORIZATIONFAILED"):
            m.authenticate("EXTERNAL", lambda _: paul["address"].encode())
    finally:
        m.logout()


def test_org_member_opens_the_org_mailbox_with_authzid(server, deployment, claire, folder):
    org = deployment.mailbox("ORG", 0)
    assert claire["address"] in org["members"]
    m = connect(server, deployment, claire, authzid=org["address"])
    try:
        # The demo's members have the `write` grant (lrswikxte): folder management included.
        assert m.create(folder)[0] == "OK"
        raw = message("org " + folder, claire["address"], org["address"])
        typ, data = m.append(folder, None, None, raw)
        assert typ == "OK" and b"APPENDUID" in data[0]
    finally:
        m.logout()
    # Paul (not the ORG mailbox's owner through this session) sees his own mailbox only.
    p = connect(server, deployment, deployment.mailbox("PER", 1))
    try:
        assert p.select(folder)[0] == "NO"
    finally:
        p.logout()


def test_append_then_fetch_search_store_expunge(server, deployment, claire, folder):
    m = connect(server, deployment, claire)
    try:
        assert m.create(folder)[0] == "OK"
        raw = message("canary " + folder, claire["address"], claire["address"], "secret-" + folder + "\r\n")
        typ, data = m.append(folder, "(\\Flagged)", imaplib.Time2Internaldate(1_700_000_000), raw)
        assert typ == "OK"
        uid = int(re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1))
        typ, data = m.select(folder)
        assert typ == "OK" and data[0] == b"1"

        typ, data = m.uid("FETCH", str(uid), "(UID FLAGS RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY.PEEK[])")
        assert typ == "OK"
        head, body = data[0]
        assert b"\\Flagged" in head and b"ENVELOPE" in head
        assert b"APPLICATION" in head and b"PKCS7-MIME" in head  # stored encrypted
        assert b"secret-" + folder.encode() not in body  # never in clear
        size = int(re.search(rb"RFC822.SIZE (\d+)", head).group(1))
        assert size == len(body)
        assert body.startswith(b"From:") or b"\r\n\r\n" in body

        typ, data = m.search(None, "FLAGGED", "UNSEEN")
        assert data[0].split() == [b"1"]
        typ, data = m.uid("SEARCH", "FROM", claire["address"].split("@")[0])
        assert data[0].split() == [str(uid).encode()]
        typ, data = m.search(None, "SUBJECT", "no-such-thing-" + folder)
        assert data[0] == b""

        typ, data = m.fetch("1", "(BODY[HEADER.FIELDS (FROM TO)])")
        assert b"From:" in data[0][1] and b"Subject" not in data[0][1]
        typ, data = m.fetch("1", "(FLAGS)")
        assert b"\\Seen" in data[0]  # BODY[] without PEEK set \Seen

        typ, data = m.store("1", "+FLAGS", "(\\Deleted)")
        assert typ == "OK" and b"\\Deleted" in data[0]
        typ, data = m.expunge()
        assert typ == "OK" and data == [b"1"]
        typ, data = m.select(folder)
        assert data[0] == b"0"
    finally:
        m.logout()


def test_copy_and_move_with_copyuid(server, deployment, claire, folder):
    m = connect(server, deployment, claire)
    try:
        m.create(folder)
        m.create(folder + "-b")
        for i in range(3):
            m.append(folder, None, None, message(f"m{i}", claire["address"], claire["address"]))
        m.select(folder)
        typ, data = m.copy("1:2", folder + "-b")
        assert typ == "OK" and b"COPYUID" in data[0]
        typ, data = m._simple_command("MOVE", "3", folder + "-b")
        assert typ == "OK"
        assert m.status(folder + "-b", "(MESSAGES)")[1][0].endswith(b"(MESSAGES 3)")
        assert m.status(folder, "(MESSAGES)")[1][0].endswith(b"(MESSAGES 2)")
        typ, data = m.copy("1", "no-such-" + folder)
        assert typ == "NO"
    finally:
        m.logout()


async def aio_connect(server, deployment, entry):
    client = aioimaplib.IMAP4_SSL(
        server.host, server.port("imaps"), ssl_context=deployment.client_context(entry), timeout=20
    )
    await client.wait_hello_from_server()
    proto = client.protocol
    resp = await proto.execute(aioimaplib.Command("AUTHENTICATE", proto.new_tag(), "EXTERNAL", "=", loop=proto.loop))
    assert resp.result == "OK", resp
    proto.state = aioimaplib.AUTH
    return client


async def test_idle_push_across_two_connections(server, deployment, claire, folder):
    writer = await aio_connect(server, deployment, claire)
    watcher = await aio_connect(server, deployment, claire)
    try:
        assert (await writer.create(folder)).result == "OK"
        await writer.append(message("first", claire["address"], claire["address"]), mailbox=folder)
        assert (await watcher.select(folder)).result == "OK"
        idle = await watcher.idle_start(timeout=30)  # returns once "+ idling" came
        resp = await writer.append(message("second", claire["address"], claire["address"]), mailbox=folder)
        assert resp.result == "OK"
        pushed = await asyncio.wait_for(watcher.wait_server_push(), 10)
        assert any(b"2 EXISTS" in (l if isinstance(l, bytes) else l.encode()) for l in pushed), pushed
        # A flag change by the writer reaches the watcher as FETCH FLAGS.
        await writer.select(folder)
        await writer.store("1", "+FLAGS", "(\\Flagged)")
        pushed = await asyncio.wait_for(watcher.wait_server_push(), 10)
        assert any(b"FETCH" in l and b"\\Flagged" in l for l in pushed if isinstance(l, bytes)), pushed
        watcher.idle_done()
        await asyncio.wait_for(idle, 10)
        resp = await watcher.fetch("1:*", "(FLAGS)")
        assert resp.result == "OK"
    finally:
        await writer.logout()
        await watcher.logout()


async def test_aioimaplib_search_and_fetch_over_implicit_tls(server, deployment, paul, folder):
    c = await aio_connect(server, deployment, paul)
    try:
        await c.create(folder)
        await c.append(message("aio " + folder, paul["address"], paul["address"]), mailbox=folder)
        await c.select(folder)
        resp = await c.search("ALL")
        assert resp.result == "OK" and resp.lines[0] == b"1"
        resp = await c.uid("fetch", "1:*", "(FLAGS INTERNALDATE)")
        assert resp.result == "OK" and b"INTERNALDATE" in resp.lines[0]
    finally:
        await c.logout()


def test_malformed_and_oversized_input(server, deployment, claire):
    ctx = deployment.client_context(claire)
    import socket

    with socket.create_connection((server.host, server.port("imaps")), timeout=20) as raw:
        with ctx.wrap_socket(raw, server_hostname=server.host) as s:
            f = s.makefile("rb")
            assert f.readline().startswith(b"* OK")
            s.sendall(b"a1 AUTHENTICATE EXTERNAL =\r\n")
            assert f.readline().startswith(b"a1 OK")
            s.sendall(b"a2 FROBNICATE\r\n")
            assert f.readline().startswith(b"a2 BAD")
            s.sendall(b"a3 APPEND INBOX {999999999999}\r\n")
            assert f.readline().startswith(b"a3 BAD")
            s.sendall(b"a4 " + b"x" * 200_000 + b"\r\n")
            assert f.readline().startswith(b"a4 BAD")
            s.sendall(b"a5 NOOP\r\n")
            assert f.readline().startswith(b"a5 OK")
            s.sendall(b"a6 APPEND INBOX {99999999999+}\r\n")
            assert f.readline().startswith(b"a6 BAD")
            assert f.readline().startswith(b"* BYE")


def test_uid_move_untagged_copyuid_then_expunges_highest_first(server, deployment, claire, folder):
    m = connect(server, deployment, claire)
    try:
        m.create(folder)
        m.create(folder + "-b")
        for i in range(4):
            m.append(folder, None, None, message(f"m{i}", claire["address"], claire["address"]))
        m.select(folder)
        m.send(f"x1 UID MOVE 1,3 {folder}-b\r\n".encode())
        lines = []
        while not lines or not lines[-1].startswith(b"x1 "):
            lines.append(m.readline().rstrip(b"\r\n"))
        assert re.fullmatch(rb"\* OK \[COPYUID \d+ 1,3 1:2\] .*", lines[0]), lines
        assert lines[1:] == [b"* 3 EXPUNGE", b"* 1 EXPUNGE", b"x1 OK UID MOVE completed"]
        typ, data = m.uid("FETCH", "1:*", "(FLAGS)")
        assert typ == "OK" and [int(u) for u in re.findall(rb"UID (\d+)", b" ".join(data))] == [2, 4]
        assert m.status(folder + "-b", "(MESSAGES)")[1][0].endswith(b"(MESSAGES 2)")
    finally:
        m.logout()
