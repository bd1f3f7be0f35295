"""IMAP pre-authentication caps that do not lock legitimate users out, and failed TLS
handshakes that are logged (issue 13). A real `mss serve` with small `[limits]`; raw sockets
for anonymous connections, imaplib with the demo certificates for the users, and a client
certificate from a CA the server does not trust, made here with `cryptography`."""

from __future__ import annotations

import imaplib
import socket
import ssl
from datetime import UTC, datetime, timedelta

import pytest
from abuse_support import IMAP4From, IMAP4PlainFrom, served, wait_for
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

pytestmark = pytest.mark.timeout(120)

PREAUTH = 3
LIMITS = {
    "limits": {"imap_max_preauth_per_ip": PREAUTH, "imap_max_connections_per_ip": 2, "imap_preauth_evict_after_s": 0}
}


@pytest.fixture(scope="module")
def imap_server(backend, tmp_path_factory):
    with served(backend, tmp_path_factory.mktemp("imapcaps") / "demo", LIMITS) as srv:
        yield srv


def anonymous(server, source: str) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection((server.host, server.port("imap")), 10, source_address=(source, 0))
    return sock, _line(sock)


def _line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_anonymous_connections_do_not_lock_out_a_user_of_the_same_address(imap_server):
    server = imap_server
    claire = server.deployment.mailbox("PER", 0)
    # Many more anonymous connections than the pre-authentication cap: every newcomer is
    # greeted, the oldest ones are told why and closed, never more than the cap stay open.
    socks = []
    for _ in range(4 * PREAUTH):
        sock, greeting = anonymous(server, "127.0.0.2")
        assert greeting.startswith(b"* OK"), greeting
        socks.append(sock)
    evicted = socks[:-PREAUTH]
    for sock in evicted:
        sock.settimeout(10)
        said = _line(sock)
        assert said.startswith(b"* BYE Too many unauthenticated connections"), said
        assert sock.recv(1) == b""
    # The user on the same address gets in, by implicit TLS or by STARTTLS.
    ctx = server.deployment.client_context(claire)
    m = IMAP4From(server.host, server.port("imaps"), source="127.0.0.2", ssl_context=ctx)
    assert m.authenticate("EXTERNAL", lambda _: b"")[0] == "OK"
    assert m.select("INBOX")[0] == "OK"
    m.logout()
    s = IMAP4PlainFrom(server.host, server.port("imap"), source="127.0.0.2")
    s.starttls(ssl_context=ctx)
    assert s.authenticate("EXTERNAL", lambda _: b"")[0] == "OK"
    s.logout()
    for sock in socks:
        sock.close()


def test_authenticated_connections_per_address_are_capped_and_freed(imap_server):
    server = imap_server
    claire = server.deployment.mailbox("PER", 0)
    ctx = server.deployment.client_context(claire)
    held = [IMAP4From(server.host, server.port("imaps"), source="127.0.0.3", ssl_context=ctx) for _ in range(2)]
    with pytest.raises(imaplib.IMAP4.error, match="your address"):
        IMAP4From(server.host, server.port("imaps"), source="127.0.0.3", ssl_context=ctx)
    # Anonymous connections from that address are not refused: their own cap.
    sock, greeting = anonymous(server, "127.0.0.3")
    assert greeting.startswith(b"* OK")
    sock.close()
    held.pop().logout()

    def admitted() -> bool:
        try:
            IMAP4From(server.host, server.port("imaps"), source="127.0.0.3", ssl_context=ctx).logout()
        except imaplib.IMAP4.error:
            return False
        return True

    assert wait_for(admitted)
    held[0].logout()


@pytest.fixture(scope="module")
def foreign_client(tmp_path_factory) -> tuple[str, str]:
    """A client certificate (and key) from a CA no trust anchor knows of."""
    tmp = tmp_path_factory.mktemp("foreign-ca")
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Foreign Test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Mallory")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "mallory.crt", tmp / "mallory.key"
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


def _handshake_fails(fn) -> bool:
    try:
        fn()
    except (ssl.SSLError, imaplib.IMAP4.abort, ConnectionError, OSError):
        return True
    return False


def test_a_foreign_ca_certificate_is_logged_with_peer_and_reason(imap_server, foreign_client):
    server = imap_server
    ctx = server.deployment.client_context(cert=foreign_client[0], key=foreign_client[1])

    def implicit() -> None:
        m = IMAP4From(server.host, server.port("imaps"), source="127.0.0.4", ssl_context=ctx)
        m.noop()  # TLS 1.3: the refusal arrives on the first read after the handshake

    def starttls() -> None:
        s = IMAP4PlainFrom(server.host, server.port("imap"), source="127.0.0.4")
        s.starttls(ssl_context=ctx)
        s.noop()

    assert _handshake_fails(implicit) and _handshake_fails(starttls)

    def logged() -> bool:
        log = server.log_text()
        return "imap tls handshake failed peer=127.0.0.4:" in log and "via=STARTTLS" in log

    assert wait_for(logged), server.log_text()[-3000:]
    line = next(ln for ln in server.log_text().splitlines() if "imap tls handshake failed peer=127.0.0.4:" in ln)
    assert "via=implicit" in line and "reason=CERTIFICATE_VERIFY_FAILED" in line, line
    # Nothing was let in, and a user is still served.
    claire = server.deployment.mailbox("PER", 0)
    m = IMAP4From(
        server.host, server.port("imaps"), source="127.0.0.4", ssl_context=server.deployment.client_context(claire)
    )
    assert m.authenticate("EXTERNAL", lambda _: b"")[0] == "OK"
    m.logout()
