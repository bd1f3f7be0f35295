"""PKCS#12 hand-over (read back by openssl) and certificate fingerprints."""

from __future__ import annotations

import base64
import hashlib
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, pkcs12

from crypto.keys import (
    Argon2Params,
    KeyUnwrapError,
    cert_sha256,
    new_password,
    rewrap_private_key,
    unwrap_private_key,
    wrap_private_key,
    write_pkcs12,
    x5t_s256,
)

requires_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl binary not installed")


@pytest.fixture(scope="module")
def p12(world, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("p12") / "bal.p12"
    password = new_password()
    write_pkcs12(path, world.enc.key, world.enc.cert, world.enc.chain, password, friendly_name="Jean Dupont (MSS)")
    return path, password


def test_pkcs12_file_and_contents(world, p12) -> None:
    path, password = p12
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = pkcs12.load_pkcs12(path.read_bytes(), password.encode())
    assert loaded.cert is not None and loaded.cert.certificate == world.enc.cert
    assert loaded.cert.friendly_name == b"Jean Dupont (MSS)"
    assert loaded.key is not None and loaded.key.public_key() == world.enc.cert.public_key()
    assert [c.certificate for c in loaded.additional_certs] == world.enc.chain
    with pytest.raises(ValueError):
        pkcs12.load_pkcs12(path.read_bytes(), b"wrong")


@requires_openssl
def test_openssl_reads_pkcs12(world, p12) -> None:
    path, password = p12
    certs = subprocess.run(
        ["openssl", "pkcs12", "-in", str(path), "-passin", f"pass:{password}", "-nokeys"],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    assert world.enc.cert.public_bytes(Encoding.PEM).strip() in certs
    info = subprocess.run(
        ["openssl", "pkcs12", "-in", str(path), "-passin", f"pass:{password}", "-noout", "-info"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert info.returncode == 0, info.stderr
    assert "AES-256-CBC" in info.stderr and "PBKDF2" in info.stderr and "sha256" in info.stderr.lower()
    bad = subprocess.run(
        ["openssl", "pkcs12", "-in", str(path), "-passin", "pass:wrong", "-noout"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    # Refused because the password does not match the file's MAC, not for any other reason.
    assert bad.returncode != 0 and "mac verify error" in (bad.stdout + bad.stderr).lower(), bad.stderr


def test_new_password() -> None:
    pw = new_password()
    assert len(pw) == 24 and pw != new_password()
    assert len(new_password(32)) == 43


def test_fingerprints(world) -> None:
    der = world.ps.cert.public_bytes(Encoding.DER)
    assert cert_sha256(world.ps.cert) == cert_sha256(der) == hashlib.sha256(der).hexdigest()
    thumb = x5t_s256(world.ps.cert)
    assert "=" not in thumb and "+" not in thumb and "/" not in thumb and len(thumb) == 43
    assert base64.urlsafe_b64decode(thumb + "=") == hashlib.sha256(der).digest()
    assert x5t_s256(der) == thumb


FAST = Argon2Params(time_cost=1, memory_kib=8 * 1024, parallelism=1)


def test_wrap_unwrap_private_key(world) -> None:
    blob = wrap_private_key(world.enc.key, "correct horse", params=FAST)
    assert world.enc.key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption()) not in blob
    key = unwrap_private_key(blob, "correct horse")
    assert key.public_key() == world.enc.cert.public_key()  # type: ignore[attr-defined]
    with pytest.raises(KeyUnwrapError):
        unwrap_private_key(blob, "wrong horse")
    weakened = blob.replace(b'"t": 1', b'"t": 2')
    assert weakened != blob
    with pytest.raises(KeyUnwrapError):
        unwrap_private_key(weakened, "correct horse")
    with pytest.raises(KeyUnwrapError):
        unwrap_private_key(b"garbage", "correct horse")


def test_wrap_default_params_round_trip(world) -> None:
    blob = wrap_private_key(world.enc2.key, "pw")
    assert b'"m": 65536' in blob
    assert unwrap_private_key(blob, "pw").public_key() == world.enc2.cert.public_key()  # type: ignore[attr-defined]


def test_password_change_rewraps_and_the_old_password_stops_working(world) -> None:
    blob = wrap_private_key(world.enc.key, "old secret", params=FAST)
    with pytest.raises(KeyUnwrapError):
        rewrap_private_key(blob, "not the old one", "new secret", params=FAST)
    new = rewrap_private_key(blob, "old secret", "new secret", params=FAST)
    assert new != blob
    assert unwrap_private_key(new, "new secret").public_key() == world.enc.cert.public_key()  # type: ignore[attr-defined]
    with pytest.raises(KeyUnwrapError):
        unwrap_private_key(new, "old secret")
