"""Header protection built once, encrypted per target: byte for byte what the old code built
(tests/frozen/smime_v0.py), in linear time on hostile Content-Type fields."""

from __future__ import annotations

import base64
import re
import time

import pytest
from frozen import smime_v0
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from message_strategies import messages
from test_crypto_smime import ORIGINAL

from crypto import smime
from crypto.rfc5322 import scan, to_crlf

CORPUS: list[bytes] = [
    ORIGINAL,
    ORIGINAL.replace(b"\r\n", b"\n"),
    b"From: a@b.test\nTo: c@d.test\nSubject: hello\n\nline 1\nline 2\n",
    b'From: a@b.test\r\nContent-Type: text/plain; hp="clear"; charset=utf-8\r\n\r\nx\r\n',
    b'From: a\r\nContent-Type: text/plain;\r\n HP = "x;y" ;\r\n\tprotected-headers=v1; charset=us-ascii;\r\n\r\nb\r\n',
    b"From: a\r\nContent-Type: multipart/mixed; boundary=b; hp=\r\n\r\n--b--\r\n",
    b"From: a\r\nSubject: no body",
    b"From: a\r\nTo: b\r\n folded to\r\nnot a field\r\nCc: c\r\n\r\n",
    b" continuation first\r\nFrom: a\r\n\r\nbody\r\n",
    b"",
    b"no header at all\r\n",
    b"From: a\r\nReferences: <1@x>\r\n\t<2@x>\r\nReferences: <3@x>\r\nmessage-id: <m@x>\r\n\r\nb",
]


def _old(raw: bytes, world) -> tuple[bytes, bytes]:
    """(payload, outer head) as the old code built them: its output, decrypted."""
    stored = smime_v0.protect_and_encrypt(raw, [world.enc.cert])
    head = stored.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    return smime_v0.decrypt(stored, world.enc.cert, world.enc.key), head


def _new(raw: bytes) -> smime.Protected:
    section = scan(to_crlf(raw))
    return smime.protect(section.fields, section.body)


@pytest.mark.parametrize("raw", CORPUS)
def test_payload_and_outer_head_are_the_old_ones_byte_for_byte(world, raw: bytes) -> None:
    protected = _new(raw)
    assert (protected.payload, protected.outer_head) == _old(raw, world)
    stored = smime.encrypt(protected, [world.enc.cert])
    assert stored.startswith(protected.outer_head + b"\r\n")
    assert smime.decrypt(stored, world.enc.cert, world.enc.key) == protected.payload
    wrapped = smime.protect_and_encrypt(raw, [world.enc.cert])
    assert smime.decrypt(wrapped, world.enc.cert, world.enc.key) == protected.payload


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_payload_and_outer_head_match_the_old_code_on_generated_messages(world, raw: bytes) -> None:
    assert (lambda p: (p.payload, p.outer_head))(_new(raw)) == _old(raw, world)


@pytest.mark.parametrize("raw", CORPUS)
def test_replace_outer_subject_and_is_encrypted_as_before(raw: bytes) -> None:
    assert smime.replace_outer_subject(raw, placeholder_subject="[x]") == smime_v0.replace_outer_subject(
        raw, placeholder_subject="[x]"
    )
    assert smime.is_encrypted(raw) is smime_v0.is_encrypted(raw)


def test_is_encrypted_as_before_on_real_ciphertext(world) -> None:
    stored = smime.protect_and_encrypt(ORIGINAL, [world.enc.cert])
    variants = [
        stored,
        stored.replace(b"\r\n", b"\n"),
        stored.replace(b"smime-type=enveloped-data", b"smime-type=signed-data"),
        stored.replace(b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: quoted-printable"),
    ]
    for raw in variants:
        assert smime.is_encrypted(raw) is smime_v0.is_encrypted(raw)
    assert smime.is_encrypted(stored) and not smime.is_encrypted(variants[2])
    section = scan(stored)
    assert smime.is_enveloped(section.fields, section.body)


def test_protected_once_encrypted_for_each_target(world) -> None:
    protected = _new(ORIGINAL)
    a = smime.encrypt(protected, [world.enc.cert])
    b = smime.encrypt(protected, [world.enc2.cert])
    assert a != b and a.split(b"\r\n\r\n")[0] == b.split(b"\r\n\r\n")[0]
    assert (
        smime.decrypt(a, world.enc.cert, world.enc.key)
        == smime.decrypt(b, world.enc2.cert, world.enc2.key)
        == protected.payload
    )
    with pytest.raises(smime.SMimeError):
        smime.decrypt(a, world.enc2.cert, world.enc2.key)
    with pytest.raises(smime.SMimeError):
        smime.encrypt(protected, [])
    section = scan(ORIGINAL)
    with pytest.raises(smime.SMimeError):
        smime.protect(section.fields, section.body, "x\r\nBcc: evil@x.test")


_OLD_HP = re.compile(rb'\s*;\s*(hp|protected-headers)\s*=\s*("[^"]*"|[^;\s]*)', re.IGNORECASE)
_hp_pieces = st.sampled_from(
    [b";", b" ", b"\t", b"\r\n ", b"hp", b"HP", b"protected-headers", b"=", b'"', b"x", b"\\", b"h", b"p"]
)


@given(st.lists(_hp_pieces, max_size=24).map(b"".join))
@example(b'a ; hp="x;y" ; HP = v ;hp="unclosed; b')
@example(b'; hp=""; hp="; protected-headers=1"')
def test_hp_parameters_are_stripped_as_the_old_expression_did(raw: bytes) -> None:
    assert smime._strip_hp_params(raw) == _OLD_HP.sub(b"", raw)


def _best(fn, *args) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best


@pytest.mark.parametrize(
    "make",
    [
        # The old expression retried its leading \s* from every octet: 160 KB took 40 s.
        lambda n: b"From: a\r\nContent-Type: text/plain;\r\n" + b"\t\r\n" * n + b"\r\nbody\r\n",
        # ... and scanned to the end for a closing quote that never comes, once per parameter.
        lambda n: b"From: a\r\nContent-Type: text/plain" + b'; hp="' * n + b"\r\n\r\nbody\r\n",
        # Many continuation lines in an ordinary field.
        lambda n: b"From: a\r\nReferences: <0@x>\r\n" + b" <1@x>\r\n" * n + b"\r\nbody\r\n",
    ],
    ids=["blank-folded-content-type", "unclosed-hp-quotes", "folded-references"],
)
def test_protect_is_linear(make) -> None:
    def run(raw: bytes) -> None:
        section = scan(raw)
        smime.protect(section.fields, section.body)

    small, large = make(20_000), make(200_000)
    ratio = _best(run, large) / _best(run, small)
    assert ratio < 30, ratio


def test_is_encrypted_is_linear_on_a_hostile_smime_content_type() -> None:
    def make(n: int) -> bytes:
        return (
            b"Content-Type: application/pkcs7-mime" + b'; x="' * n + b"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(b"\x00" * 64) + b"\r\n"
        )

    ratio = _best(smime.is_encrypted, make(200_000)) / _best(smime.is_encrypted, make(20_000))
    assert ratio < 30, ratio
