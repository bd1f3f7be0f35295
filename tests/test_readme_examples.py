"""The shell examples of README.md, run as written (swaks, curl, openssl) against a running demo.

The code blocks are taken from README.md itself, so the README cannot drift from what works:
only the demo folder (`var/demo`) and the documented ports are replaced by this deployment's.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from support import ROOT, count_messages, drop_pg_database, make_deployment, start_server

from mss.demo import DEFAULT_BASE_PORT, PORT_ORDER

README = ROOT / "README.md"
BLOCK = re.compile(r"```sh\n(.*?)```", re.S)
DOCUMENTED_PORTS = {name: DEFAULT_BASE_PORT + i for i, name in enumerate(PORT_ORDER)}

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("swaks", "curl", "openssl")),
    reason="swaks, curl and openssl are Debian packages `make test` installs (deb-test)",
)


def readme_block(*needles: str) -> str:
    """The one ```sh block of README.md that contains every needle."""
    blocks = [b for b in BLOCK.findall(README.read_text(encoding="utf-8")) if all(n in b for n in needles)]
    assert len(blocks) == 1, f"expected one README block with {needles}, found {len(blocks)}"
    return blocks[0]


def localised(block: str, server) -> str:
    """The block for this deployment: its folder for var/demo, its ports for the documented ones."""
    text = block.replace("var/demo", str(server.deployment.directory))
    for name, port in DOCUMENTED_PORTS.items():
        text = text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{server.port(name)}")
    assert "var/demo" not in text
    return text


def sh(script: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def demo(backend, tmp_path_factory):
    """A demo with its patients, served; fresh, so Paul's first message has UID 1 as the README says."""
    dep, pg_name = make_deployment(tmp_path_factory.mktemp(f"readme-{backend}"), backend, patients=True)
    srv = start_server(dep)
    yield srv
    srv.stop()
    if pg_name:
        drop_pg_database(pg_name)


def test_readme_swaks_then_curl_and_openssl_read_the_message(demo, tmp_path):
    send = localised(readme_block("swaks", "--to paul.durand@"), demo)
    assert "--tls-verify" in send and "--tls-ca-path" in send
    sent = sh(send, tmp_path)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "250 2.0.0" in sent.stdout
    subject = re.search(r" [~-]> Subject: (.+)", sent.stdout).group(1).strip()

    read = localised(readme_block("curl", "openssl cms -decrypt"), demo)
    assert "--login-options AUTH=EXTERNAL" in read and "imaps://" in read
    out = sh(read, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "* SEARCH 1" in out.stdout  # the UID list the first curl prints
    stored = (tmp_path / "message.eml").read_bytes()
    assert b"application/pkcs7-mime" in stored and b"This is a test mailing" not in stored
    # What openssl decrypted with Paul's key is what swaks sent, its real Subject inside.
    assert "This is a test mailing" in out.stdout
    assert f"Subject: {subject}" in out.stdout


def test_readme_swaks_to_a_patient(demo, tmp_path):
    send = localised(readme_block("swaks", '["patients"][0]'), demo)
    assert "--tls-verify" in send
    sent = sh(send, tmp_path)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "250 2.0.0" in sent.stdout
    patient = demo.deployment.doc["patients"][0]["address"]
    assert count_messages(demo.deployment, patient) == 1  # committed before the 250


def test_readme_swaks_verifies_the_server_certificate(demo, tmp_path):
    """With another CA bundle the same command fails: --tls-verify is what makes it check."""
    send = localised(readme_block("swaks", "--to paul.durand@"), demo)
    # The client's own leaf certificate as the "CA": it did not issue the server's certificate.
    leaf = (demo.deployment.directory / "users/claire.martin/auth.crt").read_text()
    wrong_ca = tmp_path / "not-the-ca.pem"
    wrong_ca.write_text(leaf[: leaf.index("-----END CERTIFICATE-----")] + "-----END CERTIFICATE-----\n")
    assert "$D/pki/trust-anchors.pem" in send
    refused = sh(send.replace("$D/pki/trust-anchors.pem", str(wrong_ca)), tmp_path)
    assert refused.returncode != 0
    assert "certificate verify failed" in refused.stdout + refused.stderr
    assert "250 2.0.0" not in refused.stdout
