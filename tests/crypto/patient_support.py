"""Helpers shared by the patient crypto tests."""

from __future__ import annotations

from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crypto import patient
from crypto.patient import GCMParameters


def with_auth_attrs(cert: x509.Certificate, payload: bytes) -> bytes:
    """An AuthEnvelopedData with authenticated attributes, built by hand: the MAC covers their
    DER with the SET OF tag (RFC 5083 2.2). Used to check that decrypt_cms computes that AAD."""
    cek, nonce = b"\x11" * 32, b"\x22" * 12
    attrs = cms.CMSAttributes([cms.CMSAttribute({"type": "content_type", "values": ["data"]})])
    aad = attrs.dump()
    assert aad[0] == 0x31
    sealed = AESGCM(cek).encrypt(nonce, payload, aad)
    ri = patient._recipient_info(cert, cek, "ski")
    aed = cms.AuthEnvelopedData(
        {
            "version": "v0",
            "recipient_infos": [ri],
            "auth_encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": {
                    "algorithm": "aes256_gcm",
                    "parameters": GCMParameters({"aes_nonce": nonce, "aes_icvlen": 16}),
                },
                "encrypted_content": sealed[:-16],
            },
            "auth_attrs": attrs,
            "mac": sealed[-16:],
        }
    )
    return cms.ContentInfo({"content_type": "authenticated_enveloped_data", "content": aed}).dump()
