"""`mss demo DIR2 --peer DIR1`: two operators of one trust space on one machine.

The contract the two-operator tests, scripts and docs/relay.md rely on: one test PKI, a SERV
certificate each, both domains on both whitelists, a static route and a trusted DKIM key for
the other, `demo.json` `peers`. Everything here reads the files and databases `mss demo`
wrote (no server runs, so reading the SQLite files in this process is safe).
"""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import sys

import pytest
from cryptography import x509
from support import ROOT, create_pg_database, drop_pg_database

from crypto import dkim
from mss.config import ConfigError, load_settings, resolve_database_url
from mss.demo import DemoError, DemoExists, create_demo, update_relay_config

A_DOMAIN = "hopital-a.mssante.test"
B_DOMAIN = "clinique-b.mssante.test"


@pytest.fixture
def database_urls(backend):
    """Two fresh databases of this backend (one per operator)."""
    if backend == "sqlite":
        yield ["sqlite+aiosqlite:///mss.db", "sqlite+aiosqlite:///mss.db"]
        return
    made = [create_pg_database() for _ in range(2)]
    yield [url for _, url in made]
    for name, _ in made:
        drop_pg_database(name)


@pytest.fixture
def pair(tmp_path, database_urls):
    a, b = tmp_path / "a", tmp_path / "b"
    create_demo(a, domain=A_DOMAIN, base_port=0, database_url=database_urls[0], patients=False)
    doc_b = create_demo(b, domain=B_DOMAIN, base_port=0, database_url=database_urls[1], patients=False, peer=a)
    doc_a = json.loads((a / "demo.json").read_text())
    return (a, doc_a, database_urls[0]), (b, doc_b, database_urls[1])


def _query(url: str, base, fn):
    from mss.db.engine import create_engine, sessionmaker

    async def run():
        engine = create_engine(resolve_database_url(url, base))
        try:
            async with sessionmaker(engine)() as s:
                return await fn(s)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_each_operator_routes_to_the_other_and_trusts_its_dkim_key(pair):
    (a, doc_a, _), (b, doc_b, _) = pair
    sa, sb = load_settings(a / "mss.toml"), load_settings(b / "mss.toml")
    assert sa.domain == A_DOMAIN and sb.domain == B_DOMAIN
    assert sa.relay.enabled and sb.relay.enabled
    # Ports: fixed mta ports (a route needs one), distinct; the route names "localhost",
    # which both SERV certificates carry, so the relay client's name check passes.
    assert sa.listen.mta and sb.listen.mta and sa.listen.mta != sb.listen.mta
    assert doc_a["ports"]["mta"] == sa.listen.mta and doc_b["ports"]["mta"] == sb.listen.mta
    assert sa.relay.routes == {B_DOMAIN: f"localhost:{sb.listen.mta}"}
    assert sb.relay.routes == {A_DOMAIN: f"localhost:{sa.listen.mta}"}
    assert doc_a["peers"] == [{"domain": B_DOMAIN, "mta": sb.listen.mta}]
    assert doc_b["peers"] == [{"domain": A_DOMAIN, "mta": sa.listen.mta}]
    # DKIM: each signs with its own key (0600 under [dkim] directory) and verifies the other's
    # signature with the public key configured in [relay] dkim_keys.
    for here, doc, settings, there_settings in ((a, doc_a, sa, sb), (b, doc_b, sb, sa)):
        path = settings.path(settings.dkim.directory) / doc["domain"] / f"{settings.dkim.selector}.key"
        assert path == here / doc["dkim"]["key"]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        key = dkim.load(path, doc["domain"], settings.dkim.selector)
        assert there_settings.relay.dkim_keys == {key.record_name: key.txt_value()}
        message = f"From: x@{doc['domain']}\r\nTo: y@z\r\nSubject: t\r\n\r\nbody\r\n".encode()
        signed = dkim.sign(message, key) + message

        def txt(name: bytes, timeout: float = 5, keys: dict = there_settings.relay.dkim_keys) -> bytes:
            return keys[name.decode().rstrip(".")].encode()

        assert dkim.verify(signed, dnsfunc=txt)
        assert not dkim.verify(signed.replace(b"body", b"bodx"), dnsfunc=txt)


def test_both_domains_are_on_both_whitelists(pair):
    from annuaire.whitelist import in_trust_space, trust_domains

    for here, _, url in pair:
        assert _query(url, here, trust_domains) == sorted([A_DOMAIN, B_DOMAIN])
        assert not _query(url, here, lambda s: in_trust_space(s, "elsewhere.mssante.test"))
        assert b"<Nom>" in (here / "whitelist.xml").read_bytes()  # re-importable with mss annuaire


def test_one_pki_issues_both_operators_certificates(pair):
    (a, doc_a, _), (b, doc_b, _) = pair
    sa, sb = load_settings(a / "mss.toml"), load_settings(b / "mss.toml")
    # One CA folder and one set of CRLs: a revocation in either folder reaches both servers.
    assert sb.path(sb.pki.directory).resolve() == sa.path(sa.pki.directory).resolve()
    assert [sb.path(p).resolve() for p in sb.tls.crl_files] == [sa.path(p).resolve() for p in sa.tls.crl_files]
    assert (a / doc_a["trust_anchors"]).read_bytes() == (b / doc_b["trust_anchors"]).read_bytes()
    anchors = str(a / doc_a["trust_anchors"])
    for here, doc, settings in ((a, doc_a, sa), (b, doc_b, sb)):
        server = settings.path(settings.tls.cert)
        v = subprocess.run(
            ["openssl", "verify", "-CAfile", anchors, "-untrusted", str(server), "-purpose", "sslserver", str(server)],
            capture_output=True,
            text=True,
        )
        assert v.returncode == 0, v.stderr
        cert = x509.load_pem_x509_certificates(server.read_bytes())[0]
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", doc["domain"]}
        assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
        for m in doc["mailboxes"]:
            if "tls_cert" in m:
                v = subprocess.run(
                    [
                        "openssl",
                        "verify",
                        "-CAfile",
                        anchors,
                        "-untrusted",
                        str(here / m["tls_cert"]),
                        str(here / m["tls_cert"]),
                    ],
                    capture_output=True,
                    text=True,
                )
                assert v.returncode == 0, v.stderr
    # Two structures and different professionals: a card of one never opens a mailbox of the other.
    structures = [
        x509.load_pem_x509_certificates(s.path(s.tls.cert).read_bytes())[0]
        .subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)[0]
        .value
        for s in (sa, sb)
    ]
    assert structures[0] != structures[1]
    idnats = [{m["idnat"] for m in d["mailboxes"] if m["type"] == "PER"} for d in (doc_a, doc_b)]
    assert not idnats[0] & idnats[1]


def test_each_directory_knows_the_other_operators_encryption_certificates(pair):
    from annuaire.local import LocalDirectory

    (a, doc_a, url_a), (b, doc_b, url_b) = pair
    for here, url, other_here, other_doc in ((a, url_a, b, doc_b), (b, url_b, a, doc_a)):
        for m in other_doc["mailboxes"]:
            if m["type"] != "PER":
                continue
            expected = x509.load_pem_x509_certificates((other_here / m["smime_cert"]).read_bytes())[0]
            got = _query(url, here, lambda s, addr=m["address"]: LocalDirectory(s).remote_certificates(addr))
            assert got == [expected], m["address"]


def test_a_demo_alone_has_its_dkim_key_and_relay_defaults(tmp_path):
    doc = create_demo(tmp_path / "solo", base_port=0, patients=False)
    settings = load_settings(tmp_path / "solo" / "mss.toml")
    assert doc["peers"] == [] and settings.relay.enabled and settings.relay.routes == {}
    assert (tmp_path / "solo" / doc["dkim"]["key"]).is_file()
    assert doc["dkim"]["txt"].startswith("v=DKIM1; k=rsa; p=")
    assert settings.listen.mta == 0  # no peer: ephemeral as before


def test_pairing_refusals_write_nothing(tmp_path):
    a = tmp_path / "a"
    create_demo(a, domain=A_DOMAIN, base_port=31200, patients=False)
    before = {p: p.read_bytes() for p in (a / "mss.toml", a / "demo.json")}
    with pytest.raises(DemoError, match="already serves"):
        create_demo(tmp_path / "b", domain=A_DOMAIN, base_port=0, patients=False, peer=a)
    with pytest.raises(DemoError, match="ports 31203, 31204, 31205 are"):
        create_demo(tmp_path / "b", domain=B_DOMAIN, base_port=31203, patients=False, peer=a)
    with pytest.raises(DemoError, match="its own peer"):
        create_demo(a, domain=B_DOMAIN, base_port=0, patients=False, peer=a, force=True)
    with pytest.raises(DemoError, match="not a demo deployment"):
        create_demo(tmp_path / "b", domain=B_DOMAIN, base_port=0, patients=False, peer=tmp_path / "nothing")
    assert not (tmp_path / "b").exists()
    assert {p: p.read_bytes() for p in before} == before
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep").write_text("x")
    with pytest.raises(DemoExists):
        create_demo(tmp_path / "b", domain=B_DOMAIN, base_port=0, patients=False, peer=a)
    assert {p: p.read_bytes() for p in before} == before


def test_update_relay_config_merges_and_keeps_the_rest(tmp_path):
    create_demo(tmp_path / "d", base_port=0, patients=False)
    config = tmp_path / "d" / "mss.toml"
    head = config.read_text().split("[relay]")[0]
    update_relay_config(config, routes={"x.test": "localhost:2525"}, retry_schedule_s=[0.5, 1.0], max_age_s=30)
    update_relay_config(config, routes={"y.test": "127.0.0.1:2526"}, dkim_keys={"s._domainkey.x.test": "v=DKIM1; p="})
    s = load_settings(config)
    assert s.relay.routes == {"x.test": "localhost:2525", "y.test": "127.0.0.1:2526"}
    assert s.relay.retry_schedule_s == [0.5, 1.0] and s.relay.max_age_s == 30
    assert s.relay.dkim_keys == {"s._domainkey.x.test": "v=DKIM1; p="}
    assert config.read_text().split("[relay]")[0] == head
    update_relay_config(config, routes={"z.test": "nowhere"})
    with pytest.raises(ConfigError, match="host:port"):
        load_settings(config)


def test_cli_pairs_two_demos_on_the_documented_ports(tmp_path):
    def mss(*args):
        return subprocess.run([sys.executable, "-m", "mss", *args], cwd=ROOT, capture_output=True, text=True)

    a, b = tmp_path / "a", tmp_path / "b"
    assert mss("demo", str(a), "--base-port", "31300").returncode == 0
    res = mss("demo", str(b), "--base-port", "31310", "--peer", str(a))
    assert res.returncode == 0, res.stderr
    assert "peer operator hopital-demo.mssante.test (mta port 31302)" in res.stdout
    assert f"serve -c {a / 'mss.toml'}" in res.stdout
    doc_b = json.loads((b / "demo.json").read_text())
    assert doc_b["domain"] == "clinique-demo.mssante.test" and doc_b["ports"]["mta"] == 31312
    assert json.loads((a / "demo.json").read_text())["peers"] == [
        {"domain": "clinique-demo.mssante.test", "mta": 31312}
    ]
    clash = mss("demo", str(tmp_path / "c"), "--base-port", "31305", "--peer", str(a))
    assert clash.returncode != 0 and "choose another --base-port" in clash.stderr
