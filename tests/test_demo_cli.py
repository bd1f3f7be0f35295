"""`mss demo` and `mss serve`: the contract scripts and docs rely on."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from support import ROOT, Deployment, start_server


def run_mss(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mss", *args], cwd=ROOT, capture_output=True, text=True, **kw)


def test_demo_writes_the_documented_contract(tmp_path):
    d = tmp_path / "demo"
    res = run_mss("demo", str(d), "--base-port", "31000", "--domain", "Clinique-Test.mssante.test")
    assert res.returncode == 0, res.stderr
    doc = json.loads((d / "demo.json").read_text())
    assert doc["domain"] == "clinique-test.mssante.test"
    assert doc["config"] == "mss.toml" and (d / "mss.toml").is_file()
    assert doc["ports"] == {
        "submission": 31000,
        "submissions": 31001,
        "mta": 31002,
        "imap": 31003,
        "imaps": 31004,
        "http": 31005,
    }
    assert (d / doc["trust_anchors"]).is_file()
    per = [m for m in doc["mailboxes"] if m["type"] == "PER"]
    org = [m for m in doc["mailboxes"] if m["type"] == "ORG"]
    assert len({m["idnat"] for m in per}) >= 2
    assert org and len(org[0]["members"]) == 2 and set(org[0]["members"]) <= {m["address"] for m in per}
    assert "tls_cert" not in org[0]
    for m in per:
        assert m["idnat"].startswith("8") and len(m["idnat"]) == 12
        for key in ("tls_cert", "tls_key", "smime_cert", "smime_key", "p12"):
            assert (d / m[key]).is_file(), key
        assert not m["tls_cert"].startswith("/")
        # tls_cert holds the leaf then its intermediate: openssl verifies it against the anchors.
        pem = (d / m["tls_cert"]).read_text()
        assert pem.count("BEGIN CERTIFICATE") == 2
        v = subprocess.run(
            [
                "openssl",
                "verify",
                "-CAfile",
                str(d / doc["trust_anchors"]),
                "-purpose",
                "sslclient",
                str(d / m["tls_cert"]),
            ],
            capture_output=True,
            text=True,
        )
        assert v.returncode == 0 and ": OK" in v.stdout, v.stdout + v.stderr
        p12 = subprocess.run(
            ["openssl", "pkcs12", "-in", str(d / m["p12"]), "-passin", f"pass:{m['p12_password']}", "-nokeys"],
            capture_output=True,
            text=True,
        )
        assert p12.returncode == 0 and "BEGIN CERTIFICATE" in p12.stdout, p12.stderr


def test_demo_refuses_an_existing_folder_unless_forced(tmp_path):
    d = tmp_path / "demo"
    assert run_mss("demo", str(d), "--base-port", "0").returncode == 0
    before = (d / "demo.json").read_text()
    again = run_mss("demo", str(d), "--base-port", "0")
    assert again.returncode != 0
    assert "already exists" in again.stderr and "--force" in again.stderr
    assert (d / "demo.json").read_text() == before
    forced = run_mss("demo", str(d), "--base-port", "0", "--force")
    assert forced.returncode == 0, forced.stderr
    assert (d / "demo.json").read_text() != before


def test_serve_logs_ready_and_stops_cleanly_on_sigterm_and_sigint(fresh_deployment: Deployment):
    for sig in (signal.SIGTERM, signal.SIGINT):
        srv = start_server(fresh_deployment)
        assert set(srv.ports) == {"submission", "submissions", "mta", "imap", "imaps", "http"}
        assert all(p > 0 for p in srv.ports.values())
        assert srv.stop(sig) == 0
        assert "stopped" in srv.log_text()


def test_serve_without_config_fails_clearly(tmp_path):
    res = run_mss("serve", "-c", str(tmp_path / "nope.toml"))
    assert res.returncode != 0 and "configuration file not found" in res.stderr
