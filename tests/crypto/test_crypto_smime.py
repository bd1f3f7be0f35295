"""Header protection + CMS encryption, checked by decrypting with the real openssl binary."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from crypto.smime import SMimeError, decrypt, is_encrypted, protect_and_encrypt

requires_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl binary not installed")

CANARY_SUBJECT = "CANARY-SUBJ-7f3a9c"
CANARY_BODY = "CANARY-BODY-e41d02"

ORIGINAL = (
    "Return-Path: <jean.dupont@hopital.mssante.test>\r\n"
    "From: =?utf-8?q?Jean_Dupont?= <jean.dupont@hopital.mssante.test>\r\n"
    "To: cardio@hopital.mssante.test,\r\n"
    "  autre@hopital.mssante.test\r\n"
    "Cc: secretariat@hopital.mssante.test\r\n"
    f"Subject: Compte rendu {CANARY_SUBJECT}\r\n"
    "Date: Mon, 24 Nov 2026 10:00:00 +0100\r\n"
    "Message-ID: <abc.123@hopital.mssante.test>\r\n"
    "In-Reply-To: <prev.1@hopital.mssante.test>\r\n"
    "References: <root.0@hopital.mssante.test>\r\n"
    "\t<prev.1@hopital.mssante.test>\r\n"
    "X-MSS-NIL: LPS-TEST-1.0\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed;\r\n boundary="b1"\r\n'
    "\r\n"
    "--b1\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    f"Patient vu ce jour. {CANARY_BODY} Ã©\r\n"
    "   trailing spaces kept   \r\n"
    "--b1--\r\n"
).encode()


def _split(raw: bytes) -> tuple[list[bytes], bytes]:
    head, body = raw.split(b"\r\n\r\n", 1)
    fields: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            fields[-1] += b"\r\n" + line
        else:
            fields.append(line)
    return fields, body


def _pem_files(tmp_path: Path, issued, name: str) -> tuple[Path, Path]:
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    issued.write_pem(cert, key, with_chain=False)
    return cert, key


def _openssl_decrypt(stored: Path, cert: Path, key: Path) -> bytes:
    result = subprocess.run(
        ["openssl", "cms", "-decrypt", "-in", str(stored), "-recip", str(cert), "-inkey", str(key)],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def _assert_faithful(payload: bytes, original: bytes) -> None:
    orig_fields, orig_body = _split(original)
    fields, body = _split(payload)
    assert body == orig_body
    for f in orig_fields:
        if f.lower().startswith(b"content-type:"):
            continue
        assert f in fields, f
    ct = [f for f in fields if f.lower().startswith(b"content-type:")]
    assert len(ct) == 1
    assert b'hp="cipher"' in ct[0] and b'protected-headers="v1"' in ct[0]
    orig_ct = [f for f in orig_fields if f.lower().startswith(b"content-type:")]
    if orig_ct:
        assert ct[0].startswith(orig_ct[0])  # original value kept, parameters appended


@requires_openssl
def test_openssl_decrypts_stored_message(world, tmp_path: Path) -> None:
    stored_bytes = protect_and_encrypt(ORIGINAL, [world.enc.cert])
    assert CANARY_SUBJECT.encode() not in stored_bytes and CANARY_BODY.encode() not in stored_bytes
    assert b"X-MSS-NIL" not in stored_bytes and b"Return-Path" not in stored_bytes
    stored = tmp_path / "stored.eml"
    stored.write_bytes(stored_bytes)
    cert, key = _pem_files(tmp_path, world.enc, "enc")
    payload = _openssl_decrypt(stored, cert, key)
    _assert_faithful(payload, ORIGINAL)
    fields, _ = _split(payload)
    hp_outer = [f for f in fields if f.startswith(b"HP-Outer:")]
    assert b"HP-Outer: Subject: [...]" in hp_outer
    assert b"HP-Outer: From: =?utf-8?q?Jean_Dupont?= <jean.dupont@hopital.mssante.test>" in hp_outer
    assert b"HP-Outer: To: cardio@hopital.mssante.test,\r\n  autre@hopital.mssante.test" in hp_outer
    assert len(hp_outer) == 8  # From To Cc Date Message-ID In-Reply-To References + Subject


def test_outer_message_shape(world) -> None:
    stored = protect_and_encrypt(ORIGINAL, [world.enc.cert], placeholder_subject="[Message chiffré]")
    fields, body = _split(stored)
    orig_fields, _ = _split(ORIGINAL)
    keep = [
        f
        for f in orig_fields
        if f.split(b":")[0].lower() in {b"from", b"to", b"cc", b"date", b"message-id", b"in-reply-to", b"references"}
    ]
    assert fields == keep + [
        "Subject: [Message chiffré]".encode(),
        b"MIME-Version: 1.0",
        b'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"',
        b'Content-Disposition: attachment; filename="smime.p7m"',
        b"Content-Transfer-Encoding: base64",
    ]
    lines = body.split(b"\r\n")
    assert lines[-1] == b"" and all(0 < len(line) <= 76 for line in lines[:-1])
    assert b"\n" not in stored.replace(b"\r\n", b"")
    der = base64.b64decode(body)
    assert der[:2] == b"\x30\x82" and b"\x2a\x86\x48\x86\xf7\x0d\x01\x07\x03" in der[:20]
    assert b"\x60\x86\x48\x01\x65\x03\x04\x01\x2a" in der  # id-aes256-CBC (2.16.840.1.101.3.4.1.42)
    assert is_encrypted(stored)


@requires_openssl
def test_two_recipients_each_decrypt(world, tmp_path: Path) -> None:
    stored = tmp_path / "stored.eml"
    stored.write_bytes(protect_and_encrypt(ORIGINAL, [world.enc.cert, world.enc2.cert]))
    for name, issued in (("a", world.enc), ("b", world.enc2)):
        cert, key = _pem_files(tmp_path, issued, name)
        payload = _openssl_decrypt(stored, cert, key)
        _assert_faithful(payload, ORIGINAL)
        assert decrypt(stored.read_bytes(), issued.cert, issued.key) == payload


def test_not_a_recipient_cannot_decrypt(world) -> None:
    stored = protect_and_encrypt(ORIGINAL, [world.enc.cert])
    with pytest.raises(SMimeError):
        decrypt(stored, world.enc2.cert, world.enc2.key)


def test_lf_input_and_no_content_type(world) -> None:
    original = b"From: a@b.test\nTo: c@d.test\nSubject: hello\n\nline 1\nline 2\n"
    payload = decrypt(protect_and_encrypt(original, [world.enc.cert]), world.enc.cert, world.enc.key)
    fields, body = _split(payload)
    assert body == b"line 1\r\nline 2\r\n"
    assert fields[:3] == [b"From: a@b.test", b"To: c@d.test", b"Subject: hello"]
    assert b'Content-Type: text/plain; charset="us-ascii"; hp="cipher"; protected-headers="v1"' in fields
    assert [f for f in fields if f.startswith(b"HP-Outer")] == [
        b"HP-Outer: From: a@b.test",
        b"HP-Outer: To: c@d.test",
        b"HP-Outer: Subject: [...]",
    ]


def test_existing_hp_parameter_not_duplicated(world) -> None:
    original = b'From: a@b.test\r\nContent-Type: text/plain; hp="clear"; charset=utf-8\r\n\r\nx\r\n'
    payload = decrypt(protect_and_encrypt(original, [world.enc.cert]), world.enc.cert, world.enc.key)
    ct = re.search(rb"Content-Type:[^\r]*", payload).group(0)  # type: ignore[union-attr]
    assert ct == b'Content-Type: text/plain; charset=utf-8; hp="cipher"; protected-headers="v1"'


def test_refuses_without_recipient_or_with_bad_placeholder(world) -> None:
    with pytest.raises(SMimeError):
        protect_and_encrypt(ORIGINAL, [])
    with pytest.raises(SMimeError):
        protect_and_encrypt(ORIGINAL, [world.enc.cert], placeholder_subject="x\r\nBcc: evil@x.test")


def _openssl_encrypted(world, tmp_path: Path, *extra: str) -> bytes:
    src = tmp_path / "in.eml"
    src.write_bytes(b"Content-Type: text/plain\r\n\r\nhello\r\n")
    cert = tmp_path / "r.pem"
    cert.write_bytes(world.enc.cert.public_bytes(Encoding.PEM))
    out = subprocess.run(
        ["openssl", "cms", "-encrypt", "-in", str(src), *extra, str(cert)], capture_output=True, check=True
    ).stdout
    return b"From: a@b.test\r\nTo: c@d.test\r\nSubject: s\r\n" + out


@requires_openssl
@pytest.mark.parametrize("extra", [("-aes256",), ("-aes-256-gcm",)], ids=["enveloped", "authEnveloped"])
def test_is_encrypted_openssl_output(world, tmp_path: Path, extra: tuple[str, ...]) -> None:
    assert is_encrypted(_openssl_encrypted(world, tmp_path, *extra))


@pytest.mark.parametrize(
    "raw",
    [
        ORIGINAL,
        b"From: a@b.test\r\n\r\nplain\r\n",
        # Claims to be encrypted but carries clear text: must be protected, not stored as is.
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(b"secret clear text") + b"\r\n",
        # Opaque signed data is readable by anyone: not encrypted.
        b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHAqCAMIACAQEx\r\n",
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n",
    ],
    ids=["clear", "no-mime", "fake-enveloped", "signed-data", "bad-base64"],
)
def test_is_encrypted_false(raw: bytes) -> None:
    assert not is_encrypted(raw)


_ENVELOPED_PREFIX = bytes.fromhex("308006092a864886f70d010703")  # SEQUENCE, envelopedData OID


@pytest.mark.parametrize("encoding", ["base64", "binary"])
def test_enveloped_data_oid_followed_by_clear_text_is_not_encrypted(encoding: str) -> None:
    """Only the first octets looked right: the old check stored this in clear."""
    body = _ENVELOPED_PREFIX + b"PATIENT DIAGNOSIS CANARY in clear " * 20
    if encoding == "base64":
        body = base64.b64encode(body)
    raw = (
        b"Subject: x\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"
        + f"Content-Transfer-Encoding: {encoding}\r\n\r\n".encode()
        + body
        + b"\r\n"
    )
    assert not is_encrypted(raw)


def test_well_formed_envelope_around_clear_text_is_not_encrypted(world) -> None:
    """A structurally perfect EnvelopedData whose 'ciphertext' is readable text."""
    from asn1crypto import cms

    real = protect_and_encrypt(ORIGINAL, [world.enc.cert])
    der = base64.b64decode(real.split(b"\r\n\r\n", 1)[1])
    info = cms.ContentInfo.load(der)
    info["content"]["encrypted_content_info"]["encrypted_content"] = b"Diagnostic: CANARY clear text. " * 40
    forged = cms.ContentInfo({"content_type": "enveloped_data", "content": info["content"]}).dump(force=True)
    raw = (
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(forged) + b"\r\n"
    )
    assert cms.ContentInfo.load(forged)["content_type"].native == "enveloped_data"
    assert not is_encrypted(raw)


def test_replacing_the_outer_subject_keeps_every_other_field_and_the_body(world) -> None:
    from crypto.smime import replace_outer_subject

    real = protect_and_encrypt(ORIGINAL, [world.enc.cert])
    sent = real.replace(b"Subject: [...]", b"Subject: Secret diagnosis in clear").replace(
        b"MIME-Version: 1.0\r\n",
        b"MIME-Version: 1.0\r\nDisposition-Notification-To: <a@b.test>\r\nX-MSS-NIL: lps/1.0\r\n",
    )
    stored = replace_outer_subject(sent, placeholder_subject="[...]")
    assert b"Secret diagnosis" not in stored and b"Subject: [...]" in stored
    assert b"Disposition-Notification-To: <a@b.test>\r\n" in stored and b"X-MSS-NIL: lps/1.0\r\n" in stored
    assert stored.split(b"\r\n\r\n", 1)[1] == sent.split(b"\r\n\r\n", 1)[1]
    assert is_encrypted(stored)
