"""`mss.inbound.accept`: what another operator's relayed message gets before it is stored —
loop detection, DKIM verification with real keys (dkimpy), Authentication-Results (RFC 8601)
with forged ones of our authserv-id removed, the Received field — and the refusals.

The delivery around it (SERV principals through `Delivery`, stored and opened) is in
tests/relay/test_outbound_core.py, which has the database.
"""

from __future__ import annotations

import pytest

from crypto import dkim as dkim_keys
from crypto.rfc5322 import scan
from mss.config import Settings
from mss.inbound import accept, strip_forged_results
from mss.principal import Principal
from mss.records import TraceInfo
from mss.refusals import Reason, Refusal
from smtp.replies import smtp_reply

PEER = Principal("SERV", "1750001232", "Opérateur A", frozenset(), domains=frozenset({"a.mssante.test"}))
TRACE = TraceInfo("mx.a.mssante.test", "127.0.0.1:40000", "ESMTPS", "TLSv1.3 TLS_AES_256_GCM_SHA384")
MESSAGE = (
    b"From: Claire <claire@a.mssante.test>\r\n"
    b"To: <bob@b.mssante.test>\r\n"
    b"Subject: Compte rendu\r\n"
    b"Date: Wed, 02 Dec 2026 10:00:00 +0000\r\n"
    b"Message-ID: <m1@a.mssante.test>\r\n"
    b"\r\n"
    b"Bonjour.\r\n"
)


@pytest.fixture(scope="module")
def keys() -> dict[str, dkim_keys.DkimKey]:
    return {
        "rsa": dkim_keys.generate("a.mssante.test", "mss", "rsa"),
        "ed": dkim_keys.generate("a.mssante.test", "ed", "ed25519"),
        "other": dkim_keys.generate("a.mssante.test", "mss", "rsa"),  # same selector, another key
    }


def settings(*published: dkim_keys.DkimKey, **relay) -> Settings:
    table = {k.record_name: k.txt_value() for k in published}
    return Settings(domain="b.mssante.test", relay={"dkim_keys": table, **relay})


def fields(raw: bytes) -> list[tuple[str, str]]:
    return [(f.name, f.unfolded) for f in scan(raw).fields]


async def test_a_good_signature_is_recorded_as_pass_with_the_signer(keys):
    signed = dkim_keys.sign(MESSAGE, keys["rsa"]) + MESSAGE
    out = await accept(signed, settings=settings(keys["rsa"]), principal=PEER, trace=TRACE, recipients=["bob@b"])
    (name0, received), (name1, results) = fields(out)[:2]
    assert name0 == "Received" and "from mx.a.mssante.test ([127.0.0.1]) by b.mssante.test with ESMTPS" in received
    assert "for <bob@b>" in received
    assert name1 == "Authentication-Results"
    assert results.startswith("b.mssante.test;")
    assert "dkim=pass header.d=a.mssante.test header.s=mss header.b=" in results
    assert out.endswith(signed)  # the message itself untouched: the signature still verifies
    assert dkim_keys.verify(out, dnsfunc=lambda name, timeout=5: keys["rsa"].txt_value().encode())


async def test_rsa_and_ed25519_signatures_each_get_a_result(keys):
    signed = dkim_keys.sign(MESSAGE, keys["rsa"]) + MESSAGE
    signed = dkim_keys.sign(signed, keys["ed"]) + signed
    out = await accept(signed, settings=settings(keys["rsa"], keys["ed"]), principal=PEER, trace=TRACE)
    results = dict(fields(out))["Authentication-Results"]
    assert "dkim=pass header.d=a.mssante.test header.s=mss" in results
    assert "dkim=pass header.d=a.mssante.test header.s=ed" in results


async def test_a_signature_by_another_key_fails_and_a_changed_body_fails(keys):
    forged = dkim_keys.sign(MESSAGE, keys["other"]) + MESSAGE
    out = await accept(forged, settings=settings(keys["rsa"]), principal=PEER, trace=TRACE)
    assert "dkim=fail" in dict(fields(out))["Authentication-Results"]
    tampered = (dkim_keys.sign(MESSAGE, keys["rsa"]) + MESSAGE).replace(b"Bonjour.", b"Bonsoir.")
    out = await accept(tampered, settings=settings(keys["rsa"]), principal=PEER, trace=TRACE)
    assert "dkim=fail" in dict(fields(out))["Authentication-Results"]


async def test_unsigned_mail_is_none_and_an_unknown_key_is_permerror(keys):
    out = await accept(MESSAGE, settings=settings(keys["rsa"]), principal=PEER, trace=TRACE)
    assert dict(fields(out))["Authentication-Results"] == "b.mssante.test; dkim=none"
    signed = dkim_keys.sign(MESSAGE, keys["ed"]) + MESSAGE  # selector "ed" not published
    out = await accept(signed, settings=settings(keys["rsa"]), principal=PEER, trace=TRACE)
    assert "dkim=permerror" in dict(fields(out))["Authentication-Results"]


async def test_refuse_dkim_fail_refuses_a_forged_signature_only(keys):
    strict = settings(keys["rsa"], refuse_dkim_fail=True)
    forged = dkim_keys.sign(MESSAGE, keys["other"]) + MESSAGE
    with pytest.raises(Refusal) as err:
        await accept(forged, settings=strict, principal=PEER, trace=TRACE)
    assert err.value.reason is Reason.DKIM_FAILED
    assert smtp_reply(err.value).startswith("550 5.7.20")
    # A good signature and an unsigned message (a peer that does not sign yet) pass.
    await accept(dkim_keys.sign(MESSAGE, keys["rsa"]) + MESSAGE, settings=strict, principal=PEER, trace=TRACE)
    await accept(MESSAGE, settings=strict, principal=PEER, trace=TRACE)
    # One passing signature is enough, whatever the others say (RFC 6376 6.1).
    both = dkim_keys.sign(MESSAGE, keys["rsa"]) + MESSAGE
    both = dkim_keys.sign(both, keys["other"]) + both
    await accept(both, settings=strict, principal=PEER, trace=TRACE)


async def test_a_loop_is_refused_at_max_hops():
    hop = b"Received: from x by y; Wed, 02 Dec 2026 10:00:00 +0000\r\n"
    s = settings(max_hops=5)
    await accept(hop * 4 + MESSAGE, settings=s, principal=PEER, trace=TRACE)
    with pytest.raises(Refusal) as err:
        await accept(hop * 5 + MESSAGE, settings=s, principal=PEER, trace=TRACE)
    assert err.value.reason is Reason.MAIL_LOOP
    assert smtp_reply(err.value).startswith("554 5.4.6")


async def test_authentication_results_claiming_our_id_are_removed_others_kept(keys):
    forged = (
        b"Authentication-Results: b.mssante.test; dkim=pass header.d=a.mssante.test\r\n"
        b"Authentication-Results: (sneaky) B.MSSANTE.TEST.;\r\n\tdkim=pass\r\n"
        b"Authentication-Results: a.mssante.test; dkim=pass header.d=a.mssante.test\r\n" + MESSAGE
    )
    out = await accept(forged, settings=settings(keys["rsa"]), principal=PEER, trace=TRACE)
    results = [v for n, v in fields(out) if n == "Authentication-Results"]
    assert results == ["b.mssante.test; dkim=none", "a.mssante.test; dkim=pass header.d=a.mssante.test"]
    assert out.endswith(MESSAGE)


def test_strip_forged_results_keeps_a_message_without_them_byte_for_byte():
    assert strip_forged_results(MESSAGE, "b.mssante.test") == (MESSAGE, 0)
    # A look-alike authserv-id is not ours.
    other = b"Authentication-Results: b.mssante.test.evil; dkim=pass\r\n" + MESSAGE
    assert strip_forged_results(other, "b.mssante.test") == (other, 0)


async def test_a_header_of_too_many_fields_is_refused_before_any_work():
    from mss.message import MAX_HEADER_FIELDS

    raw = b"X-A: 1\r\n" * (MAX_HEADER_FIELDS + 1) + MESSAGE
    with pytest.raises(Refusal) as err:
        await accept(raw, settings=settings(), principal=PEER, trace=TRACE)
    assert err.value.reason is Reason.MALFORMED_MESSAGE


async def test_forged_results_with_nested_comments_or_a_quoted_id_are_removed_too(keys):
    """Review finding: `((x)) b.test` and `"b.test"` name our authserv-id as well (RFC 8601 2.2
    value = token / quoted-string, CFWS before it)."""
    forged = (
        b"Authentication-Results: ((x)) b.mssante.test; dkim=pass\r\n"
        b'Authentication-Results: "b.mssante.test"; dkim=pass\r\n' + MESSAGE
    )
    out = await accept(forged, settings=settings(keys["rsa"]), principal=PEER, trace=TRACE)
    assert [v for n, v in fields(out) if n == "Authentication-Results"] == ["b.mssante.test; dkim=none"]


async def test_an_rsa_signature_pointing_at_an_ed25519_key_is_a_permerror_not_a_crash(keys):
    """Review finding: the crypto back end raised a non-dkimpy exception, which became 451 for
    ever (the peer retried until the message expired)."""
    signed = dkim_keys.sign(MESSAGE, keys["rsa"]) + MESSAGE
    table = {keys["rsa"].record_name: keys["ed"].txt_value()}  # selector mss publishes an Ed25519 key
    out = await accept(
        signed, settings=Settings(domain="b.mssante.test", relay={"dkim_keys": table}), principal=PEER, trace=TRACE
    )
    results = dict(fields(out))["Authentication-Results"]
    assert "dkim=pass" not in results and ("dkim=permerror" in results or "dkim=fail" in results)


async def test_at_most_five_signatures_are_verified(keys):
    signed = MESSAGE
    for _ in range(12):
        signed = dkim_keys.sign(signed, keys["rsa"]) + signed
    out = await accept(signed, settings=settings(keys["rsa"]), principal=PEER, trace=TRACE)
    results = dict(fields(out))["Authentication-Results"]
    assert results.count("dkim=") == 5


async def test_an_rsa_sha1_signature_does_not_pass(keys):
    """RFC 8301 3.1: rsa-sha1 signatures are not to be considered valid."""
    import dkim as dkimpy
    from cryptography.hazmat.primitives import serialization

    pem = keys["rsa"].private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    sig = dkimpy.sign(MESSAGE, b"mss", b"a.mssante.test", pem, signature_algorithm=b"rsa-sha1")
    out = await accept(sig + MESSAGE, settings=settings(keys["rsa"]), principal=PEER, trace=TRACE)
    results = dict(fields(out))["Authentication-Results"]
    assert "dkim=fail" in results and "rsa-sha1" in results
