"""The reference client (crypto/patient_client.py) through a patient's whole life, with the
server's half played by crypto.patient: creation, activation, login, reading, password change,
closing. The "server" here keeps exactly what the real one may keep: the certificate, the
wrapped key record (as JSON text) and the Argon2id hash of the current authentication key."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from crypto.patient import (
    KdfParams,
    PatientCryptoError,
    WrappedKey,
    derive_keys,
    encrypt_for_patient,
    hash_auth_key,
    new_patient_keys,
    provision_patient,
    verify_auth_key,
    wrap_private_key,
)
from crypto.patient_client import PatientClient, Rewrap

INS = "295109912611193"
FAST = 1000
CLIENT = PatientClient(iterations=FAST, min_iterations=FAST)
PASSWORD = "une phrase de passe assez longue"
PAYLOAD = b'Content-Type: text/plain; hp="cipher"\r\nSubject: Compte rendu\r\n\r\nCANARY-client-42\r\n'


@dataclass
class Server:
    """What the operator's database holds for one patient space."""

    certificate: object
    record: str
    auth_hash: str

    def params(self) -> dict:
        return KdfParams.from_json(self.record).to_json()  # pre-login: parameters only

    def accept(self, change: Rewrap) -> None:
        assert verify_auth_key(self.auth_hash, change.old_auth_key), "server refused the old secret"
        self.auth_hash = hash_auth_key(change.new_auth_key)
        self.record = change.wrapped.dumps()


@pytest.fixture(scope="module")
def created():
    return provision_patient("Jeanne MARTIN", INS, iterations=FAST)


@pytest.fixture
def server(created) -> Server:
    return Server(created.certificate, created.wrapped.dumps(), created.auth_hash)


def test_what_the_server_keeps_holds_no_secret(created, server) -> None:
    stored = json.loads(server.record)
    assert set(stored) == {"v", "kdf", "iterations", "salt", "iv", "wrapped"}
    code = created.activation_code
    for text in (server.record, server.auth_hash):
        assert code not in text and code.replace("-", "") not in text


def test_life_of_a_patient(created, server) -> None:
    cert = server.certificate
    message = encrypt_for_patient(PAYLOAD, cert, outer_headers=[("Subject", "[...]")])  # mail before activation

    # Activation: the code unlocks, the password re-wraps.
    change = CLIENT.activate(created.activation_code, PASSWORD, server.record, certificate=cert)
    server.accept(change)
    record = WrappedKey.from_json(server.record)
    assert record.params.iterations == FAST and record.params.salt != created.wrapped.params.salt
    assert record.iv != created.wrapped.iv

    # The code no longer works, neither at the server nor against the new blob.
    assert not verify_auth_key(server.auth_hash, change.old_auth_key)
    with pytest.raises(PatientCryptoError) as err:
        CLIENT.unlock(created.activation_code.replace("-", ""), server.record)
    assert err.value.reason == "wrong_secret"

    # Login then reading.
    auth_key = CLIENT.login(PASSWORD, server.params())
    assert verify_auth_key(server.auth_hash, auth_key)
    key = CLIENT.unlock(PASSWORD, server.record, certificate=cert)
    assert CLIENT.open(message, key, certificate=cert) == PAYLOAD
    later = encrypt_for_patient(PAYLOAD, cert, outer_headers=[], content_cipher="aes-256-cbc")
    assert CLIENT.open(later, key) == PAYLOAD

    # Password change: the old password stops working, the mail stays readable.
    new_password = "une autre phrase de passe, plus longue"
    server.accept(CLIENT.change_password(PASSWORD, new_password, server.record, certificate=cert))
    assert not verify_auth_key(server.auth_hash, auth_key)
    assert verify_auth_key(server.auth_hash, CLIENT.login(new_password, server.params()))
    with pytest.raises(PatientCryptoError) as err:
        CLIENT.unlock(PASSWORD, server.record)
    assert err.value.reason == "wrong_secret"
    assert CLIENT.open(message, CLIENT.unlock(new_password, server.record, certificate=cert)) == PAYLOAD


def test_login_with_a_wrong_password_is_refused_by_the_server(created, server) -> None:
    server.accept(CLIENT.activate(created.activation_code, PASSWORD, server.record))
    assert not verify_auth_key(server.auth_hash, CLIENT.login(PASSWORD + "!", server.params()))
    with pytest.raises(PatientCryptoError) as err:
        CLIENT.unlock(PASSWORD + "!", server.record)
    assert err.value.reason == "wrong_secret"


def test_wrong_or_mistyped_activation_code(created, server) -> None:
    code = created.activation_code
    wrong = ("0" if code[0] != "0" else "1") + code[1:]
    with pytest.raises(PatientCryptoError) as err:
        CLIENT.activate(wrong, PASSWORD, server.record)
    assert err.value.reason == "wrong_secret"
    with pytest.raises(PatientCryptoError) as err:
        CLIENT.activate(code[:-1] + "U", PASSWORD, server.record)
    assert err.value.reason == "bad_code"
    # Typed loosely, the right code still works.
    loose = "  " + code.lower().replace("-", " ").replace("0", "o").replace("1", "l") + " "
    server.accept(CLIENT.activate(loose, PASSWORD, server.record))


def test_tampered_blob_is_refused(created, server) -> None:
    server.accept(CLIENT.activate(created.activation_code, PASSWORD, server.record))
    data = json.loads(server.record)
    for field, value in (("iterations", data["iterations"] + 1), ("salt", "A" * 22 + "==")):
        with pytest.raises(PatientCryptoError) as err:
            CLIENT.unlock(PASSWORD, {**data, field: value})
        assert err.value.reason == "wrong_secret"


def test_password_rules_are_the_clients(created, server) -> None:
    for weak, kwargs in (
        ("court", {}),
        (created.activation_code, {}),
        (created.activation_code.lower().replace("-", " "), {}),
    ):
        with pytest.raises(PatientCryptoError) as err:
            CLIENT.activate(created.activation_code, weak, server.record, **kwargs)
        assert err.value.reason == "weak_password"
    server.accept(CLIENT.activate(created.activation_code, PASSWORD, server.record))
    with pytest.raises(PatientCryptoError) as err:
        CLIENT.change_password(PASSWORD, PASSWORD, server.record)
    assert err.value.reason == "weak_password"


def test_a_server_cannot_lower_the_cost(created, server) -> None:
    # A hostile server offering a cheap KDF would get a brute-forceable authentication key.
    strict = PatientClient()  # production floor: 600,000
    with pytest.raises(PatientCryptoError) as err:
        strict.login(PASSWORD, {"v": 1, "kdf": "PBKDF2-SHA256", "iterations": 1, "salt": "A" * 22 + "=="})
    assert err.value.reason == "weak_record"
    for call in (
        lambda: strict.login(PASSWORD, server.params()),
        lambda: strict.unlock(PASSWORD, server.record),
        lambda: strict.activate(created.activation_code, PASSWORD, server.record),
    ):
        with pytest.raises(PatientCryptoError) as err:
            call()
        assert err.value.reason == "weak_record"
    with pytest.raises(ValueError):
        PatientClient(iterations=FAST)  # writing below one's own floor


def test_a_swapped_key_is_noticed_with_the_certificate(created, server) -> None:
    # A server that stores some other key under the patient's password (it cannot: it does
    # not know the wrapping key; but a bug could) is caught by the certificate check.
    _, other_key = new_patient_keys("Autre", "184127645108946", bits=2048)
    params = KdfParams.new(FAST)
    _, wrap_key = derive_keys(PASSWORD, params)
    swapped = wrap_private_key(other_key, wrap_key, params=params).dumps()
    assert CLIENT.unlock(PASSWORD, swapped)  # without the certificate: opens
    with pytest.raises(PatientCryptoError) as err:
        CLIENT.unlock(PASSWORD, swapped, certificate=server.certificate)
    assert err.value.reason == "key_mismatch"


def test_closing_is_crypto_shredding(created, server) -> None:
    server.accept(CLIENT.activate(created.activation_code, PASSWORD, server.record))
    message = encrypt_for_patient(PAYLOAD, server.certificate, outer_headers=[])
    key = CLIENT.unlock(PASSWORD, server.record)
    assert CLIENT.open(message, key) == PAYLOAD
    server.record = ""  # the space is closed: the wrapped key is deleted first
    with pytest.raises(PatientCryptoError) as err:
        CLIENT.unlock(PASSWORD, server.record)
    assert err.value.reason == "bad_record"


def test_real_defaults_end_to_end() -> None:
    """Production cost (600,000 PBKDF2 iterations, RSA-3072) through activation and login."""
    client = PatientClient()
    made = provision_patient("Jeanne MARTIN", INS)
    assert made.wrapped.params.iterations == 600_000
    server = Server(made.certificate, made.wrapped.dumps(), made.auth_hash)
    server.accept(client.activate(made.activation_code, PASSWORD, server.record, certificate=made.certificate))
    assert WrappedKey.from_json(server.record).params.iterations == 600_000
    assert verify_auth_key(server.auth_hash, client.login(PASSWORD, server.params()))
