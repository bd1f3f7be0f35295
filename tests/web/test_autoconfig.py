"""Thunderbird autoconfig and Outlook autodiscover (web.autoconfig) against a running `mss serve`:
the documents parse, and every server they advertise answers on that port in that TLS mode,
with the advertised authentication (a real TLS handshake, IMAP greeting and AUTHENTICATE
EXTERNAL, SMTP 220, EHLO and STARTTLS)."""

from __future__ import annotations

import imaplib
import smtplib
import urllib.error
import urllib.request

import pytest
from defusedxml.ElementTree import fromstring

from mss.config import Settings
from web import autoconfig

AD = "{http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006}"
ADO = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"


def fetch(server, path: str, *, data: bytes | None = None) -> tuple[int, str, bytes]:
    url = f"http://{server.host}:{server.port('http')}{path}"
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "text/xml"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def check_imap(server, entry, host: str, port: int, tls: str) -> None:
    """The port speaks IMAP in that TLS mode and the card certificate logs in (EXTERNAL)."""
    ctx = server.deployment.client_context(entry)
    if tls == "SSL":
        client = imaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=30)
    else:
        assert tls == "STARTTLS"
        client = imaplib.IMAP4(host, port, timeout=30)
        assert "STARTTLS" in client.capabilities
        client.starttls(ssl_context=ctx)
    try:
        assert client.welcome.startswith(b"* OK")
        typ, _ = client.authenticate("EXTERNAL", lambda _challenge: b"")
        assert typ == "OK"
    finally:
        client.logout()


def check_smtp(server, entry, host: str, port: int, tls: str) -> None:
    """The port speaks SMTP in that TLS mode; after TLS it offers EXTERNAL and PLAIN."""
    ctx = server.deployment.client_context(entry)
    if tls == "SSL":
        client = smtplib.SMTP_SSL(host, port, context=ctx, timeout=30)
        code, _ = client.ehlo("client.test")
    else:
        assert tls == "STARTTLS"
        client = smtplib.SMTP(host, port, timeout=30)
        client.ehlo("client.test")
        assert client.has_extn("starttls")
        code, _ = client.starttls(context=ctx)
        assert code == 220
        code, _ = client.ehlo("client.test")
    try:
        assert code == 250
        mechanisms = client.esmtp_features.get("auth", "").upper().split()
        assert "EXTERNAL" in mechanisms and "PLAIN" in mechanisms
    finally:
        client.quit()


@pytest.mark.parametrize(
    "path", ["/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml"], ids=["well-known", "autoconfig"]
)
def test_thunderbird_autoconfig_advertises_what_answers(server, path):
    dep = server.deployment
    claire = dep.mailbox("PER", 0)
    status, ctype, body = fetch(server, f"{path}?emailaddress={claire['address']}")
    assert status == 200 and ctype.startswith("application/xml")
    root = fromstring(body)
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    provider = root.find("emailProvider")
    assert provider.get("id") == dep.domain and provider.findtext("domain") == dep.domain
    incoming, outgoing = provider.findall("incomingServer"), provider.findall("outgoingServer")
    assert {(s.get("type"), s.findtext("socketType")) for s in incoming} == {("imap", "SSL"), ("imap", "STARTTLS")}
    assert {(s.get("type"), s.findtext("socketType")) for s in outgoing} == {("smtp", "SSL"), ("smtp", "STARTTLS")}
    # Implicit TLS first (RFC 8314): Thunderbird takes the first one it can use.
    assert incoming[0].findtext("socketType") == "SSL" and outgoing[0].findtext("socketType") == "SSL"
    advertised = {}
    for s in incoming + outgoing:
        assert s.findtext("hostname") == server.host
        assert [a.text for a in s.findall("authentication")] == ["TLS-client-cert", "password-cleartext"]
        assert s.findtext("username") == "%EMAILADDRESS%"
        port, tls = int(s.findtext("port")), s.findtext("socketType")
        advertised[(s.get("type"), tls)] = port
        (check_imap if s.get("type") == "imap" else check_smtp)(server, claire, s.findtext("hostname"), port, tls)
    # The ports `mss serve` bound (ephemeral here), not the zeros of the configuration file.
    assert advertised == {
        ("imap", "SSL"): server.port("imaps"),
        ("imap", "STARTTLS"): server.port("imap"),
        ("smtp", "SSL"): server.port("submissions"),
        ("smtp", "STARTTLS"): server.port("submission"),
    }
    assert server.port("mta") not in advertised.values()  # other operators' listener, not clients'


def test_thunderbird_autoconfig_refuses_other_domains(server):
    for address in ("someone@example.org", "not-an-address", "@" + server.deployment.domain):
        status, _, _ = fetch(server, f"/mail/config-v1.1.xml?emailaddress={address}")
        assert status == 404, address
    # Longer than an address can be: refused before any look-up (the listener's parameter limit).
    assert fetch(server, f"/mail/config-v1.1.xml?emailaddress={'x' * 400}@{server.deployment.domain}")[0] in (400, 404)
    # Without an address (a client asking in general) the document is served.
    assert fetch(server, "/.well-known/autoconfig/mail/config-v1.1.xml")[0] == 200


def autodiscover_request(address: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">'
        f"<Request><EMailAddress>{address}</EMailAddress>"
        "<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
        "</AcceptableResponseSchema></Request></Autodiscover>"
    ).encode()


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_outlook_autodiscover_advertises_what_answers(server, method):
    claire = server.deployment.mailbox("PER", 0)
    if method == "POST":
        status, ctype, body = fetch(
            server, "/autodiscover/autodiscover.xml", data=autodiscover_request(claire["address"])
        )
    else:
        status, ctype, body = fetch(server, f"/Autodiscover/Autodiscover.xml?emailaddress={claire['address']}")
    assert status == 200 and ctype.startswith("text/xml")
    root = fromstring(body)
    assert root.tag == f"{AD}Autodiscover"
    account = root.find(f"{ADO}Response/{ADO}Account")
    assert account.findtext(f"{ADO}AccountType") == "email" and account.findtext(f"{ADO}Action") == "settings"
    protocols = {p.findtext(f"{ADO}Type"): p for p in account.findall(f"{ADO}Protocol")}
    assert set(protocols) == {"IMAP", "SMTP"}
    for kind, p in protocols.items():
        assert p.findtext(f"{ADO}Server") == server.host
        assert p.findtext(f"{ADO}LoginName") == claire["address"]
        assert p.findtext(f"{ADO}SSL") == "on" and p.findtext(f"{ADO}Encryption") == "SSL"
        port = int(p.findtext(f"{ADO}Port"))
        if kind == "IMAP":
            assert port == server.port("imaps")
            check_imap(server, claire, server.host, port, "SSL")
        else:
            assert port == server.port("submissions")
            check_smtp(server, claire, server.host, port, "SSL")


def test_outlook_autodiscover_rejects_bad_requests(server):
    def error_code(body: bytes) -> str:
        return fromstring(body).findtext(f"{AD}Response/{AD}Error/{AD}ErrorCode")

    for bad in (b"", b"not xml", b"<Autodiscover/>", b'<!DOCTYPE x [<!ENTITY e "boom">]><x>&e;</x>'):
        status, _, body = fetch(server, "/autodiscover/autodiscover.xml", data=bad or b" ")
        assert status == 400, bad
        assert error_code(body) == "600"
    status, _, body = fetch(server, "/autodiscover/autodiscover.xml", data=autodiscover_request("a@example.org"))
    assert status == 404 and error_code(body) == "500"
    assert fetch(server, "/autodiscover/autodiscover.xml?emailaddress=a@example.org")[0] == 404


def test_outlook_autodiscover_refuses_a_dtd(server):
    """A well-formed request that would be answered, but with a DOCTYPE (no entity in it):
    defusedxml runs with forbid_dtd, so it is a bad request (docs/operations.md: "no DTD")."""
    claire = server.deployment.mailbox("PER", 0)
    good = autodiscover_request(claire["address"])
    assert fetch(server, "/autodiscover/autodiscover.xml", data=good)[0] == 200
    head, rest = good.split(b"?>", 1)
    for doctype in (b"<!DOCTYPE Autodiscover>", b'<!DOCTYPE Autodiscover SYSTEM "http://127.0.0.1:9/x.dtd">'):
        status, _, body = fetch(server, "/autodiscover/autodiscover.xml", data=head + b"?>" + doctype + rest)
        assert status == 400, doctype
        assert fromstring(body).findtext(f"{AD}Response/{AD}Error/{AD}ErrorCode") == "600"
    with pytest.raises(ValueError, match="not an XML document"):
        autoconfig.requested_address(b"<!DOCTYPE Autodiscover>" + rest)


def settings_with(**listen) -> Settings:
    return Settings(domain="hopital-demo.mssante.test", listen=listen)


def test_hostname_is_the_listen_host_the_domain_for_a_wildcard_or_the_setting():
    assert autoconfig.hostname(settings_with(host="127.0.0.1")) == "127.0.0.1"
    assert autoconfig.hostname(settings_with(host="0.0.0.0")) == "hopital-demo.mssante.test"
    assert autoconfig.hostname(settings_with(host="::")) == "hopital-demo.mssante.test"
    s = Settings(domain="d.test", listen={"host": "0.0.0.0"}, autoconfig={"hostname": "mail.d.test"})
    assert autoconfig.hostname(s) == "mail.d.test"


def test_documents_escape_what_they_carry():
    tricky = 'mail.d.test"><evil/>&amp;'
    s = Settings(domain="d.test", autoconfig={"hostname": tricky})
    for doc in (autoconfig.mozilla_document(s), autoconfig.autodiscover_document(s, "a&b@d.test")):
        root = fromstring(doc)
        assert root.find(".//evil") is None
        hosts = [e.text for e in root.iter() if e.tag.rpartition("}")[2] in ("hostname", "Server")]
        assert hosts and set(hosts) == {tricky}
    logins = [e.text for e in fromstring(autoconfig.autodiscover_document(s, "a&b@d.test")).iter(f"{ADO}LoginName")]
    assert logins == ["a&b@d.test", "a&b@d.test"]
