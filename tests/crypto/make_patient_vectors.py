"""Write tests/crypto/patient_vectors.json: fixed inputs -> expected outputs of the patient key
scheme (docs/patient-keys.md), for the portal's JavaScript to be checked against.

    /work/main/.venv/bin/python tests/crypto/make_patient_vectors.py [--new-key]

The RSA key and the two CMS messages are random by nature, so they are kept from the existing
file unless ``--new-key`` is given; everything else is recomputed from fixed inputs and must come
out identical (test_crypto_patient_vectors.py checks that it does). Change the file only with a
new record version: a browser that matched v1 must keep matching it.

The private key in the file is a TEST VECTOR, published on purpose, used for nothing else.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_der_private_key,
)

from crypto import patient
from crypto.patient import (
    KdfParams,
    derive_keys,
    derive_master,
    encrypt_cms,
    wrap_private_key,
)

PATH = Path(__file__).with_name("patient_vectors.json")

#: (name, secret as typed, is an activation code, iterations)
CASES = [
    ("ascii password", "correct horse battery staple", False, 1000),
    # Typed in decomposed form (e + U+0301): the NFC normalisation must compose it to U+00E9.
    ("non-ASCII password, NFD as typed", "mot de passe \u0065\u0301te\u0301 2026 \u00df\u20ac", False, 1000),
    # Lower case, blanks, hyphens, and O/I/L typed for 0/1/1.
    ("activation code as typed", " 7kq2 m9xd-4tlb zr6o ", True, 1000),
    ("ascii password, production cost", "correct horse battery staple", False, patient.PBKDF2_ITERATIONS),
]

ACTIVATION_CODES = [
    ("7KQ2-M9XD-4T1B-ZR60", "7KQ2M9XD4T1BZR60"),
    (" 7kq2 m9xd-4tlb zr6o ", "7KQ2M9XD4T1BZR60"),
    ("7KQ2.M9XD_4T1B/ZR60", "7KQ2M9XD4T1BZR60"),
    ("7KQ2\u2013M9XD\u2014\u20134T1B ZR60", "7KQ2M9XD4T1BZR60"),  # en and em dashes
    ("\uff17\uff2b\uff31\uff12-M9XD-4T1B-ZR60", "7KQ2M9XD4T1BZR60"),  # full-width, NFKC
    ("7KQ2-M9XD-4T1B-ZR6U", None),  # U is not in the alphabet
    ("7KQ2-M9XD-4T1B", None),  # 12 symbols: too short
    ("7KQ2-M9XD-4T1B-ZR60-X", None),  # not whole groups
]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def build(old: dict | None) -> dict:
    """The vectors file's content; random parts (key, messages) from ``old`` when given."""
    if old is None:
        cert, key = patient.new_patient_keys("PATIENT VECTEUR DE TEST", "295109912611193")
        payload = (
            b'Content-Type: text/plain; charset="utf-8"; hp="cipher"; protected-headers="v1"\r\n'
            b"Subject: =?utf-8?q?R=C3=A9sultats?=\r\n"
            b"HP-Outer: Subject: [...]\r\n"
            b"\r\n"
            b"Vecteur de test MSS, r\xc3\xa9sultats normaux.\r\n"
        )
        messages = [
            {
                "content_cipher": cc,
                "recipient_id": rid,
                "payload": _b64(payload),
                "der": _b64(encrypt_cms(payload, cert, content_cipher=cc, recipient_id=rid)),  # type: ignore[arg-type]
            }
            for cc, rid in (("aes-256-gcm", "ski"), ("aes-256-cbc", "issuer_serial"))
        ]
        key_der = key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
        cert_der = cert.public_bytes(Encoding.DER)
    else:
        key_der = base64.b64decode(old["test_only_private_key_pkcs8"])
        cert_der = base64.b64decode(old["certificate"])
        key = load_der_private_key(key_der, None)  # type: ignore[assignment]
        messages = old["messages"]

    derivations = []
    for i, (name, typed, is_code, iterations) in enumerate(CASES):
        secret = patient.normalise_activation_code(typed) if is_code else typed
        params = KdfParams(salt=bytes(range(16 * i, 16 * i + 16)), iterations=iterations)
        iv = bytes(range(0xA0 + i, 0xA0 + i + 12))
        auth_key, wrap_key = derive_keys(secret, params)
        record = wrap_private_key(key, wrap_key, params=params, iv=iv)  # type: ignore[arg-type]
        derivations.append(
            {
                "name": name,
                "typed": typed,
                "activation_code": is_code,
                "secret_utf8_hex": patient.secret_bytes(secret).hex(),
                "params": params.to_json(),
                "master_hex": derive_master(secret, params).hex(),
                "auth_key_hex": auth_key.hex(),
                "auth_key_b64url": base64.urlsafe_b64encode(auth_key).rstrip(b"=").decode(),
                "wrap_key_hex": wrap_key.hex(),
                "iv": _b64(iv),
                "record": record.to_json(),
            }
        )

    return {
        "about": (
            "MSS patient key scheme v1 test vectors (docs/patient-keys.md). The private key is a "
            "published TEST VECTOR used for nothing else. Regenerate only with "
            "tests/crypto/make_patient_vectors.py and only for a new record version."
        ),
        "scheme": {
            "v": patient.RECORD_VERSION,
            "kdf": patient.KDF_NAME,
            "pbkdf2": {"hash": "SHA-256", "length_bits": 256},
            "hkdf": {
                "hash": "SHA-256",
                "salt_hex": "",
                "auth_info": patient.AUTH_INFO.decode("ascii"),
                "wrap_info": patient.WRAP_INFO.decode("ascii"),
                "length_bits": 256,
            },
            "wrap": {
                "alg": "AES-GCM",
                "key_bits": 256,
                "iv_bytes": 12,
                "tag_bits": 128,
                "additional_data": None,
                "format": "pkcs8",
                "output": "ciphertext || tag",
            },
            "secret_encoding": "UTF-8 of the NFC form; activation codes normalised first (activation_codes)",
            "base64": "record fields: RFC 4648 section 4, padded; auth key on the wire: section 5, unpadded",
        },
        "test_only_private_key_pkcs8": _b64(key_der),
        "certificate": _b64(cert_der),
        "activation_codes": [{"typed": t, "normalised": n} for t, n in ACTIVATION_CODES],
        "derivations": derivations,
        "messages": messages,
    }


def dumps(vectors: dict) -> str:
    return json.dumps(vectors, indent=1, ensure_ascii=True) + "\n"


def main(new_key: bool) -> None:
    old = json.loads(PATH.read_text()) if PATH.exists() and not new_key else None
    PATH.write_text(dumps(build(old)))
    print(f"wrote {PATH}")


if __name__ == "__main__":
    main(new_key="--new-key" in sys.argv[1:])
