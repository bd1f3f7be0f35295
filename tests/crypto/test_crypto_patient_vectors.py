"""tests/crypto/patient_vectors.json: fixed inputs -> expected outputs of the patient key scheme.

The file is the contract with the portal's JavaScript. These tests recompute every value with
crypto.patient and with an independent reference (hashlib + hmac), check that regenerating the
file changes nothing, and, where Node is installed, run every client step with WebCrypto alone
(tests/crypto/webcrypto_vectors.mjs) against the file and against fresh messages.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_der_private_key,
)
from patient_support import with_auth_attrs

from crypto.patient import (
    KdfParams,
    PatientCryptoError,
    WrappedKey,
    decrypt_cms,
    derive_keys,
    derive_master,
    encrypt_cms,
    normalise_activation_code,
    public_key_matches,
    secret_bytes,
    unwrap_private_key,
    wrap_private_key,
)

HERE = Path(__file__).parent
VECTORS_PATH = HERE / "patient_vectors.json"
VECTORS = json.loads(VECTORS_PATH.read_text())
KEY = load_der_private_key(base64.b64decode(VECTORS["test_only_private_key_pkcs8"]), None)
CERT = x509.load_der_x509_certificate(base64.b64decode(VECTORS["certificate"]))
NODE = shutil.which("node")
OPENSSL = shutil.which("openssl")


def _case_id(d: dict) -> str:
    return d["name"].replace(" ", "-")


def _secret(d: dict) -> str:
    return normalise_activation_code(d["typed"]) if d["activation_code"] else d["typed"]


def _hkdf(master: bytes, info: str) -> bytes:
    prk = hmac.new(bytes(32), master, hashlib.sha256).digest()  # RFC 5869 2.2, empty salt
    return hmac.new(prk, info.encode("ascii") + b"\x01", hashlib.sha256).digest()


def test_scheme_constants_are_the_modules() -> None:
    scheme = VECTORS["scheme"]
    assert scheme["v"] == 1 and scheme["kdf"] == "PBKDF2-SHA256"
    assert scheme["hkdf"]["auth_info"] == "mss patient auth v1"
    assert scheme["hkdf"]["wrap_info"] == "mss patient wrap v1"
    assert scheme["hkdf"]["salt_hex"] == ""
    assert public_key_matches(CERT, KEY)
    assert any(d["params"]["iterations"] == 600_000 for d in VECTORS["derivations"])


@pytest.mark.parametrize("d", VECTORS["derivations"], ids=_case_id)
def test_derivation_vector(d: dict) -> None:
    secret = _secret(d)
    params = KdfParams.from_json(d["params"])
    assert secret_bytes(secret).hex() == d["secret_utf8_hex"]
    master = derive_master(secret, params)
    assert master.hex() == d["master_hex"]
    # Independent reference for the same bytes.
    assert (
        hashlib.pbkdf2_hmac("sha256", bytes.fromhex(d["secret_utf8_hex"]), params.salt, params.iterations, 32) == master
    )
    auth, wrap = derive_keys(secret, params)
    assert auth.hex() == d["auth_key_hex"] == _hkdf(master, "mss patient auth v1").hex()
    assert wrap.hex() == d["wrap_key_hex"] == _hkdf(master, "mss patient wrap v1").hex()
    assert base64.urlsafe_b64encode(auth).rstrip(b"=").decode() == d["auth_key_b64url"]
    iv = base64.b64decode(d["iv"])
    record = wrap_private_key(KEY, wrap, params=params, iv=iv)  # type: ignore[arg-type]
    assert record.to_json() == d["record"]
    assert WrappedKey.from_json(d["record"]) == record
    assert unwrap_private_key(d["record"], wrap).private_numbers() == KEY.private_numbers()  # type: ignore[union-attr]


def test_the_nfd_vector_really_exercises_normalisation() -> None:
    nfd = next(d for d in VECTORS["derivations"] if "NFD" in d["name"])
    assert nfd["typed"].encode("utf-8").hex() != nfd["secret_utf8_hex"]
    code = next(d for d in VECTORS["derivations"] if d["activation_code"])
    assert code["typed"] != _secret(code)


@pytest.mark.parametrize("c", VECTORS["activation_codes"], ids=lambda c: repr(c["typed"]))
def test_activation_code_vector(c: dict) -> None:
    if c["normalised"] is None:
        with pytest.raises(PatientCryptoError):
            normalise_activation_code(c["typed"])
    else:
        assert normalise_activation_code(c["typed"]) == c["normalised"]


@pytest.mark.parametrize("m", VECTORS["messages"], ids=lambda m: f"{m['content_cipher']}-{m['recipient_id']}")
def test_message_vector(m: dict) -> None:
    der = base64.b64decode(m["der"])
    assert decrypt_cms(der, KEY) == base64.b64decode(m["payload"])  # type: ignore[arg-type]
    assert decrypt_cms(der, KEY, CERT) == base64.b64decode(m["payload"])  # type: ignore[arg-type]


def test_pkcs8_is_the_canonical_serialisation() -> None:
    # WebCrypto's exportKey("pkcs8") must give these bytes for wrapKey to match; the Node
    # check below verifies that side.
    der = base64.b64decode(VECTORS["test_only_private_key_pkcs8"])
    assert KEY.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption()) == der  # type: ignore[union-attr]


def test_regenerating_the_file_changes_nothing() -> None:
    spec = importlib.util.spec_from_file_location("make_patient_vectors", HERE / "make_patient_vectors.py")
    assert spec and spec.loader
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    assert maker.dumps(maker.build(VECTORS)) == VECTORS_PATH.read_text()


@pytest.mark.skipif(NODE is None, reason="node not installed")
def test_webcrypto_does_every_client_step(tmp_path) -> None:
    """Node's crypto.subtle (the W3C Web Cryptography API) reproduces every vector byte for
    byte, re-exports the PKCS#8 identically, refuses a tampered blob, and opens the vector
    messages, fresh messages of all four variants, one with authenticated attributes and,
    if openssl is here, an openssl-made one."""
    cert = CERT
    payload = b"Content-Type: text/plain\r\n\r\nfresh " + bytes(range(256)) + b"\r\n"
    messages = [
        {
            "der": base64.b64encode(encrypt_cms(payload, cert, content_cipher=cc, recipient_id=rid)).decode(),
            "payload": base64.b64encode(payload).decode(),
        }  # type: ignore[arg-type]
        for cc in ("aes-256-gcm", "aes-256-cbc")
        for rid in ("ski", "issuer_serial")
    ]
    messages.append(
        {
            "der": base64.b64encode(with_auth_attrs(cert, payload)).decode(),
            "payload": base64.b64encode(payload).decode(),
        }
    )
    if OPENSSL:
        (tmp_path / "cert.pem").write_bytes(cert.public_bytes(Encoding.PEM))
        (tmp_path / "p.bin").write_bytes(payload)
        done = subprocess.run(
            [
                OPENSSL,
                "cms",
                "-encrypt",
                "-binary",
                "-outform",
                "DER",
                "-aes-256-gcm",
                "-in",
                tmp_path / "p.bin",
                "-recip",
                tmp_path / "cert.pem",
                "-keyopt",
                "rsa_padding_mode:oaep",
                "-keyopt",
                "rsa_oaep_md:sha256",
            ],
            capture_output=True,
            timeout=60,
            check=True,
        )
        messages.append({"der": base64.b64encode(done.stdout).decode(), "payload": base64.b64encode(payload).decode()})
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"pkcs8": VECTORS["test_only_private_key_pkcs8"], "messages": messages}))
    done = subprocess.run(
        [NODE, HERE / "webcrypto_vectors.mjs", VECTORS_PATH, extra], capture_output=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    result = json.loads(done.stdout)
    # One check per comparison; GCM messages add one for their ICV length.
    vector_gcm = sum(m["content_cipher"] == "aes-256-gcm" for m in VECTORS["messages"])
    extra_gcm = 2 + 1 + (1 if OPENSSL else 0)
    expected = (
        len(VECTORS["activation_codes"])
        + 1  # PKCS#8 re-export
        + 7 * len(VECTORS["derivations"])
        + len(VECTORS["messages"])
        + vector_gcm
        + len(messages)
        + extra_gcm
    )
    assert result == {"ok": True, "checks": expected}
