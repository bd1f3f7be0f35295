"""CertificateValidator: what it accepts, and the exact reason for everything it refuses."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from crypto.pki import TestPKI
from crypto.validate import CertificateRejected, CertificateValidator, TrustAnchors


@pytest.fixture(scope="module")
def anchors(world) -> TrustAnchors:
    return TrustAnchors.load(world.anchors_path)


@pytest.fixture(scope="module")
def validator(world, anchors) -> CertificateValidator:
    return CertificateValidator(anchors, world.crl_paths)


def test_trust_anchors_split(world, anchors) -> None:
    assert anchors.roots == [world.pki.root.cert]
    assert anchors.intermediates == [world.pki.personnes.cert, world.pki.organisations.cert]
    assert anchors.path == world.anchors_path


def test_trust_anchors_without_root(tmp_path: Path, world) -> None:
    bad = tmp_path / "inter.pem"
    bad.write_bytes(world.pki.personnes.cert.public_bytes(Encoding.PEM))
    with pytest.raises(ValueError):
        TrustAnchors.load(bad)


@pytest.mark.parametrize(
    ("which", "usage", "with_chain"),
    [
        ("ps", "client", True),
        ("ps", "client", False),  # intermediates come from the anchors bundle
        ("org", "client", False),
        ("serv", "server", True),
        ("serv", "client", False),  # operator-to-operator mutual TLS
        ("enc", "email", False),
        ("enc2", "email", True),
    ],
)
def test_accepts(world, validator, which: str, usage: str, with_chain: bool) -> None:
    issued = getattr(world, which)
    chain = issued.chain if with_chain else ()
    assert validator.validate(issued.cert, usage=usage, chain=chain) == issued.cert  # type: ignore[arg-type]


def test_accepts_der_bytes(world, validator) -> None:
    der = world.ps.cert.public_bytes(Encoding.DER)
    assert validator.validate(der) == world.ps.cert


def _weak_leaf(world) -> x509.Certificate:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    ca = world.pki.personnes
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(TestPKI.ps_subject("810001045367", "FAIBLE", "CLE", "Médecin"))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )


def _self_signed(world) -> x509.Certificate:
    key = world.ps.key  # reuse a 2048-bit key: the point is "not our root", not the key
    name = TestPKI.ps_subject("810001045367", "DUPONT", "JEAN", "Médecin")
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )


Case = Callable[..., tuple[CertificateValidator | None, object, dict]]

REFUSALS: list[tuple[str, str, Case]] = [
    ("no certificate", "no_certificate", lambda w, v: (v, None, {})),
    ("empty DER", "no_certificate", lambda w, v: (v, b"", {})),
    ("garbage DER", "malformed", lambda w, v: (v, b"\x30\x03\x02\x01\x01", {})),
    # Same CA names as ours, other keys, and a Luhn-valid national id: only signatures tell.
    ("wrong CA", "untrusted", lambda w, v: (v, w.foreign_ps.cert, {})),
    ("wrong CA with its chain", "untrusted", lambda w, v: (v, w.foreign_ps.cert, {"chain": w.foreign_ps.chain})),
    (
        "wrong CA with its own root in chain",
        "untrusted",
        lambda w, v: (v, w.foreign_ps.cert, {"chain": [*w.foreign_ps.chain, w.other.root.cert]}),
    ),
    ("self-signed", "untrusted", lambda w, v: (v, _self_signed(w), {})),
    (
        "missing intermediate",
        "missing_intermediate",
        lambda w, v: (CertificateValidator(TrustAnchors.load(w.root_only_path)), w.ps.cert, {}),
    ),
    ("expired", "expired", lambda w, v: (v, w.expired.cert, {})),
    (
        "valid but checked in the future",
        "expired",
        lambda w, v: (v, w.ps.cert, {"at": datetime.now(UTC) + timedelta(days=5000)}),
    ),
    ("not yet valid", "not_yet_valid", lambda w, v: (v, w.future.cert, {})),
    ("revoked", "revoked", lambda w, v: (v, w.revoked.cert, {})),
    ("SERV where email protection is required", "wrong_usage", lambda w, v: (v, w.serv.cert, {"usage": "email"})),
    ("encryption certificate for client auth", "wrong_usage", lambda w, v: (v, w.enc.cert, {"usage": "client"})),
    ("PS certificate as a server", "wrong_usage", lambda w, v: (v, w.ps.cert, {"usage": "server"})),
    ("ORG certificate as a server", "wrong_usage", lambda w, v: (v, w.org.cert, {"usage": "server"})),
    ("PS auth certificate for encryption", "wrong_usage", lambda w, v: (v, w.ps.cert, {"usage": "email"})),
    ("intermediate CA as a leaf", "wrong_usage", lambda w, v: (v, w.pki.personnes.cert, {})),
    ("RSA-1024", "weak_key", lambda w, v: (v, _weak_leaf(w), {})),
]


@pytest.mark.parametrize(("reason", "case"), [(r, c) for _, r, c in REFUSALS], ids=[n for n, _, _ in REFUSALS])
def test_refusals(world, validator, reason: str, case: Case) -> None:
    v, leaf, kwargs = case(world, validator)
    with pytest.raises(CertificateRejected) as exc:
        v.validate(leaf, **kwargs)  # type: ignore[union-attr]
    assert exc.value.reason == reason, str(exc.value)


def _stale_crls(world, tmp_path: Path) -> list[Path]:
    long_ago = datetime.now(UTC) - timedelta(days=10)
    return world.pki.write_crls(tmp_path / "stale", this_update=long_ago, next_update=timedelta(days=1))


def test_stale_crl_fails_closed(world, anchors, tmp_path: Path) -> None:
    v = CertificateValidator(anchors, _stale_crls(world, tmp_path))
    with pytest.raises(CertificateRejected) as exc:
        v.validate(world.ps.cert)
    assert exc.value.reason == "crl_stale"


def test_stale_crl_still_revokes(world, anchors, tmp_path: Path) -> None:
    v = CertificateValidator(anchors, _stale_crls(world, tmp_path), fail_closed_on_stale_crl=False)
    assert v.validate(world.ps.cert) == world.ps.cert  # fail-open: accepted with a warning
    with pytest.raises(CertificateRejected) as exc:
        v.validate(world.revoked.cert)
    assert exc.value.reason == "revoked"


def test_crl_max_age(world, anchors, tmp_path: Path) -> None:
    old = datetime.now(UTC) - timedelta(days=3)
    paths = world.pki.write_crls(tmp_path / "old", this_update=old, next_update=timedelta(days=30))
    assert CertificateValidator(anchors, paths).validate(world.ps.cert)
    with pytest.raises(CertificateRejected) as exc:
        CertificateValidator(anchors, paths, crl_max_age=timedelta(days=1)).validate(world.ps.cert)
    assert exc.value.reason == "crl_stale"


def test_no_crl_for_the_issuing_ca(world, anchors) -> None:
    only_root = [p for p in world.crl_paths if p.name == "root.crl"]
    with pytest.raises(CertificateRejected) as exc:
        CertificateValidator(anchors, only_root).validate(world.ps.cert)
    assert exc.value.reason == "crl_stale"


def test_forged_crl_is_ignored(world, anchors, tmp_path: Path) -> None:
    """A CRL named like ours but signed by another key must not count (nor hide revocations)."""
    forged = world.other.write_crls(tmp_path / "forged")
    with pytest.raises(CertificateRejected) as exc:
        CertificateValidator(anchors, forged).validate(world.ps.cert)
    assert exc.value.reason == "crl_stale"


def test_reload_crls_sees_new_revocation(tmp_path: Path) -> None:
    pki = TestPKI.create(tmp_path / "pki")
    anchors = TrustAnchors.load(pki.write_trust_anchors(tmp_path / "anchors.pem"))
    leaf = pki.issue_org("1209270651", "CLINIQUE", "APP")
    crl_dir = tmp_path / "crl"
    v = CertificateValidator(anchors, pki.write_crls(crl_dir))
    assert v.validate(leaf.cert) == leaf.cert
    pki.revoke(leaf.cert)
    pki.write_crls(crl_dir)
    assert v.validate(leaf.cert) == leaf.cert  # still the old CRL in memory
    v.reload_crls()
    with pytest.raises(CertificateRejected) as exc:
        v.validate(leaf.cert)
    assert exc.value.reason == "revoked"


def test_reload_keeps_old_crls_on_error(world, anchors, tmp_path: Path) -> None:
    path = tmp_path / "c.crl"
    path.write_bytes(world.crl_paths[1].read_bytes())
    v = CertificateValidator(anchors, [path, *world.crl_paths])
    path.write_bytes(b"not a crl")
    with pytest.raises(ValueError):
        v.reload_crls()
    with pytest.raises(CertificateRejected) as exc:
        v.validate(world.revoked.cert)
    assert exc.value.reason == "revoked"


def test_crls_from_a_url_are_fetched_at_each_reload(world, anchors, tmp_path: Path) -> None:
    """A CRL distribution point over http (a real socket on 127.0.0.1): a revocation
    published after start-up is seen at the next reload; an unreachable URL keeps the
    previous CRLs and says so."""
    import functools
    import http.server
    import threading

    pki = TestPKI.create(tmp_path / "pki")
    served = tmp_path / "www"
    pki.write_crls(served)
    victim = pki.issue_ps("810001045367", "DUPONT", "JEAN")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        urls = [f"{base}/{p.name}" for p in sorted(served.iterdir())]
        v = CertificateValidator(TrustAnchors.load(pki.write_trust_anchors(tmp_path / "a.pem")), urls)
        assert v.validate(victim.cert) == victim.cert
        pki.revoke(victim.cert)
        pki.write_crls(served)
        v.reload_crls()
        with pytest.raises(CertificateRejected) as exc:
            v.validate(victim.cert)
        assert exc.value.reason == "revoked"
    finally:
        httpd.shutdown()
        httpd.server_close()
    with pytest.raises(ValueError, match="cannot load CRL http://127.0.0.1"):
        v.reload_crls()
    with pytest.raises(CertificateRejected):  # the previous CRLs still apply
        v.validate(victim.cert)


def test_an_unreachable_crl_url_neither_blocks_start_up_nor_other_crls(world, anchors, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/personnes.crl"
    v = CertificateValidator(anchors, [*world.crl_paths, dead])  # starts
    with pytest.raises(CertificateRejected) as exc:  # the file CRLs still apply
        v.validate(world.revoked.cert)
    assert exc.value.reason == "revoked"
    with pytest.raises(ValueError, match="cannot load CRL http://127.0.0.1"):
        v.reload_crls()
    assert v.validate(world.ps.cert) == world.ps.cert
    with pytest.raises(ValueError):  # a broken local file is still a start-up error
        CertificateValidator(anchors, [tmp_path / "missing.crl"])
