"""`mss status` (issue 13, Observability) against a real `mss serve`: healthy (exit 0) while
it runs, every listener down (exit 2) once it stopped, an expiring server certificate as a
warning (exit 1), an expired one and a stale CRL as problems, and a database behind its
migrations. The command runs as its own process, as an operator or an agent would run it.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from support import ROOT, Deployment, run_alembic, start_server

pytestmark = pytest.mark.timeout(180)

LISTENERS = ("submission", "submissions", "mta", "imap", "imaps", "http")


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def set_ports(dep: Deployment) -> dict[str, int]:
    """Real ports in the configuration (`mss status` reads them from there, port 0 cannot be probed)."""
    ports = dict(zip(LISTENERS, free_ports(len(LISTENERS)), strict=True))
    text = dep.config.read_text()
    for name, port in ports.items():
        text, n = re.subn(rf"(?m)^{name} = \d+$", f"{name} = {port}", text, count=1)
        assert n == 1, name
    dep.config.write_text(text)
    return ports


def set_tls_cert(dep: Deployment, cert: Path, key: Path) -> None:
    text = dep.config.read_text()
    text = re.sub(r'(?m)^cert = ".*"$', f'cert = "{cert}"', text, count=1)
    text = re.sub(r'(?m)^key = ".*"$', f'key = "{key}"', text, count=1)
    dep.config.write_text(text)


def status(dep: Deployment, *args: str) -> tuple[int, dict]:
    out = subprocess.run(
        [sys.executable, "-m", "mss", "status", "-c", str(dep.config), "--json", "--timeout", "5", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return out.returncode, json.loads(out.stdout)


def checks(doc: dict, kind: str) -> dict[str, dict]:
    return {c["name"]: c for c in doc["checks"] if c["check"] == kind}


def self_signed(folder: Path, name: str, not_before: datetime, not_after: datetime) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    crt, pem = folder / f"{name}.crt", folder / f"{name}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return crt, pem


def test_running_then_stopped_server(fresh_deployment):
    dep = fresh_deployment
    ports = set_ports(dep)
    srv = start_server(dep)
    try:
        assert srv.ports == ports
        code, doc = status(dep)
    finally:
        srv.stop()
    assert code == 0, doc["problems"] + doc["warnings"]
    assert doc["status"] == "ok" and doc["server_up"] is True
    assert doc["problems"] == [] and doc["warnings"] == []
    assert doc["ports"] == ports
    assert (doc["pid"], doc["pid_running"]) == (srv.proc.pid, True)
    listeners = checks(doc, "listener")
    assert set(listeners) == set(LISTENERS)
    server_sha = None
    for name in ("submission", "submissions", "imap", "imaps"):
        c = listeners[name]
        assert c["status"] == "ok" and c["data"]["port"] == ports[name]
        assert c["data"]["tls"] in ("TLSv1.2", "TLSv1.3")
        server_sha = server_sha or c["data"]["cert_sha256"]
        assert c["data"]["cert_sha256"] == server_sha
    assert listeners["http"]["data"]["health"] == "ok"
    assert listeners["mta"]["data"]["greeting"] == "220"  # inbound relay from other operators
    db = checks(doc, "database")["schema"]
    assert db["status"] == "ok" and db["data"]["revision"] == db["data"]["head"]
    assert len(checks(doc, "crl")) == len(dep.settings().tls.crl_files)
    assert all(c["status"] == "ok" for c in doc["checks"])

    # Stopped: every listener is a problem, the files and the database are still fine.
    code, doc = status(dep)
    assert code == 2
    assert doc["status"] == "problem" and doc["server_up"] is False
    assert doc["pid"] is None or doc["pid_running"] is False
    assert sorted(p.split(":", 1)[0] for p in doc["problems"]) == sorted(f"listener {n}" for n in LISTENERS)
    assert all("connection refused" in p for p in doc["problems"])
    assert checks(doc, "database")["schema"]["status"] == "ok"

    # The text form lists the same problems.
    out = subprocess.run(
        [sys.executable, "-m", "mss", "status", "-c", str(dep.config)], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "6 problem(s)" in out.stdout
    assert out.stdout.count("PROBLEM  listener") == 6


def test_an_expiring_server_certificate_is_a_warning(fresh_deployment):
    dep = fresh_deployment
    ports = set_ports(dep)
    now = datetime.now(UTC)
    crt, key = self_signed(dep.directory / "pki", "expiring", now - timedelta(days=1), now + timedelta(days=10))
    set_tls_cert(dep, crt, key)
    srv = start_server(dep)
    try:
        code, doc = status(dep)
        later_code, later = status(dep, "--warn-days", "5")
    finally:
        srv.stop()
    assert code == 1, doc["problems"]
    assert doc["status"] == "warning" and doc["problems"] == []
    assert len(doc["warnings"]) == 1
    assert doc["warnings"][0].startswith("certificate server certificate CN=expiring: expires on ")
    assert "(in 9 days)" in doc["warnings"][0] or "(in 10 days)" in doc["warnings"][0]
    # The listeners present that very certificate.
    presented = {c["data"].get("cert_sha256") for c in checks(doc, "listener").values()} - {None}
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    assert presented == {cert.fingerprint(hashes.SHA256()).hex()}
    assert ports == srv.ports
    # Ten days is outside a five-day horizon.
    assert later_code == 0, later["warnings"]


def test_expired_certificate_stale_crl_and_old_schema_are_problems(fresh_deployment):
    dep = fresh_deployment
    set_ports(dep)
    now = datetime.now(UTC)
    crt, key = self_signed(dep.directory / "pki", "expired", now - timedelta(days=40), now - timedelta(days=2))
    set_tls_cert(dep, crt, key)
    # A CRL past its nextUpdate (status reads dates; it does not check the signature).
    settings = dep.settings()
    stale = settings.path(settings.tls.crl_files[0])
    signer = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    old = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Old CA")]))
        .last_update(now - timedelta(days=9))
        .next_update(now - timedelta(days=2))
        .sign(signer, hashes.SHA256())
    )
    stale.write_bytes(old.public_bytes(serialization.Encoding.DER))
    # The database one migration behind.
    run_alembic(settings.resolved_database_url, "downgrade", "-1")

    code, doc = status(dep)
    assert code == 2
    problems = doc["problems"]
    assert any(p.startswith("certificate server certificate CN=expired: expired on ") for p in problems), problems
    assert any(p.startswith(f"crl {dep.settings().tls.crl_files[0]}: stale: ") for p in problems), problems
    schema = checks(doc, "database")["schema"]
    assert schema["status"] == "problem" and "run `mss db upgrade`" in schema["detail"]
    assert schema["data"]["revision"] != schema["data"]["head"]
    # Nothing was written: the schema is still behind afterwards.
    assert checks(status(dep)[1], "database")["schema"]["data"]["revision"] == schema["data"]["revision"]


def test_unreachable_database_and_bad_configuration(fresh_deployment, tmp_path):
    dep = fresh_deployment
    set_ports(dep)
    text = dep.config.read_text()
    dep.config.write_text(
        re.sub(r'(?m)^database_url = ".*"$', 'database_url = "sqlite+aiosqlite:///nowhere/missing.db"', text)
    )
    code, doc = status(dep)
    assert code == 2
    assert "the database file does not exist" in checks(doc, "database")["schema"]["detail"]
    assert not (dep.directory / "nowhere").exists()  # status creates nothing

    bad = tmp_path / "bad.toml"
    bad.write_text('domain = "x.test"\n[metrics]\nallow = ["nonsense"]\n')
    out = subprocess.run(
        [sys.executable, "-m", "mss", "status", "-c", str(bad), "--json"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "metrics.allow" in json.loads(out.stdout)["problems"][0]


def test_a_listener_answering_another_protocol_is_a_problem(fresh_deployment):
    """The http port answers like an SMTP server (`220 smtp here`): http.client raises
    BadStatusLine, which is no OSError. That listener is a problem (exit 2, named), the others
    are fine, and `mss status` does not crash (Python's crash exit 1 would read as "warning")."""
    import threading

    dep = fresh_deployment
    set_ports(dep)
    srv = start_server(dep)
    impostor = socket.socket()
    impostor.bind(("127.0.0.1", 0))
    impostor.listen()
    stop = threading.Event()

    def answer() -> None:
        while not stop.is_set():
            try:
                conn, _ = impostor.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"220 smtp here\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    fake = impostor.getsockname()[1]
    try:
        text = dep.config.read_text()
        text, n = re.subn(r"(?m)^http = \d+$", f"http = {fake}", text, count=1)
        assert n == 1
        dep.config.write_text(text)
        code, doc = status(dep)
    finally:
        stop.set()
        impostor.close()
        srv.stop()
    assert code == 2, doc
    assert doc["status"] == "problem"
    assert len(doc["problems"]) == 1, doc["problems"]
    assert doc["problems"][0].startswith(f"listener http: 127.0.0.1:{fake}: BadStatusLine")
    listeners = checks(doc, "listener")
    assert listeners["http"]["status"] == "problem"
    assert all(listeners[n]["status"] == "ok" for n in LISTENERS if n != "http")


def test_a_crash_while_collecting_exits_2_naming_the_error(fresh_deployment, monkeypatch):
    """Any exception inside the checks (here: the database check) is a problem, exit 2."""
    from click.testing import CliRunner

    from mss.cli import status as status_cli

    def broken(settings, timeout):
        raise KeyError("boom-in-the-database-check")

    monkeypatch.setattr(status_cli, "database", broken)
    monkeypatch.setattr(status_cli, "listeners", lambda settings, timeout: [])
    result = CliRunner().invoke(status_cli.status, ["-c", str(fresh_deployment.config), "--json"])
    assert result.exit_code == 2, result.output
    doc = json.loads(result.output)
    assert doc["status"] == "problem"
    assert doc["problems"] == ["mss status failed: KeyError: 'boom-in-the-database-check'"]
