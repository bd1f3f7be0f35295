"""CertificateValidator's memory of accepted leaves (`accept_cache_s`): a remembered answer is
the one a full validation would give. It is forgotten at every CRL reload (a revocation takes
effect then, as without the memory), it ends at the path's first notAfter and when the CRLs
turn stale, and a rejection is never remembered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from crypto.pki import TestPKI
from crypto.validate import CertificateRejected, CertificateValidator, TrustAnchors


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    return TestPKI.create(tmp_path / "pki")


def _validator(pki: TestPKI, tmp_path: Path, **kw) -> tuple[CertificateValidator, Path]:
    anchors = TrustAnchors.load(pki.write_trust_anchors(tmp_path / "anchors.pem"))
    crl_dir = tmp_path / "crl"
    return CertificateValidator(anchors, pki.write_crls(crl_dir), accept_cache_s=300, **kw), crl_dir


def _count_full_validations(v: CertificateValidator) -> list[int]:
    calls = [0]
    build = v._build_path

    def counted(leaf, chain):
        calls[0] += 1
        return build(leaf, chain)

    v._build_path = counted  # type: ignore[method-assign]
    return calls


def test_an_accepted_leaf_is_remembered_by_der_and_usage(pki, tmp_path):
    v, _ = _validator(pki, tmp_path)
    leaf = pki.issue_org("1209270651", "CLINIQUE", "APP")
    calls = _count_full_validations(v)
    der = leaf.cert.public_bytes(Encoding.DER)
    assert v.validate(der) == leaf.cert
    assert v.validate(der) == leaf.cert
    assert v.validate(leaf.cert) == leaf.cert
    assert calls == [1]
    # Another usage is its own question.
    with pytest.raises(CertificateRejected):
        v.validate(leaf.cert, usage="server")
    # An explicit time is always validated in full.
    v.validate(leaf.cert, at=datetime.now(UTC))
    assert calls == [3]


def test_a_revocation_takes_effect_at_the_reload_as_without_the_memory(pki, tmp_path):
    v, crl_dir = _validator(pki, tmp_path)
    leaf = pki.issue_org("1209270651", "CLINIQUE", "APP")
    assert v.validate(leaf.cert) == leaf.cert
    pki.revoke(leaf.cert)
    pki.write_crls(crl_dir)
    v.reload_crls()
    with pytest.raises(CertificateRejected) as exc:
        v.validate(leaf.cert)
    assert exc.value.reason == "revoked"


def test_a_rejection_is_never_remembered(pki, tmp_path):
    v, _ = _validator(pki, tmp_path)
    leaf = pki.issue_org("1209270651", "CLINIQUE", "APP")
    calls = _count_full_validations(v)
    for _ in range(2):
        with pytest.raises(CertificateRejected):
            v.validate(leaf.cert, usage="server")
    assert calls == [2]


def test_the_memory_ends_when_the_crls_turn_stale(pki, tmp_path):
    v, _ = _validator(pki, tmp_path)
    crl_last = max(item.crl.last_update_utc for item in v._crls)
    # The CRLs turn stale 60 s from now, before the 300 s of the memory end.
    v.crl_max_age = datetime.now(UTC) - crl_last + timedelta(seconds=60)
    leaf = pki.issue_org("1209270651", "CLINIQUE", "APP")
    assert v.validate(leaf.cert) == leaf.cert
    (entry,) = v._accepted.values()
    assert entry.until <= crl_last + v.crl_max_age
    # Once that moment has passed, the leaf is validated again in full (and refused).
    with pytest.raises(CertificateRejected) as exc:
        v.validate(leaf.cert, at=entry.until + timedelta(seconds=1))
    assert exc.value.reason == "crl_stale"
    assert entry.until <= leaf.cert.not_valid_after_utc


def test_fail_open_acceptances_are_not_remembered(pki, tmp_path):
    anchors = TrustAnchors.load(pki.write_trust_anchors(tmp_path / "anchors.pem"))
    # CRLs configured, none for the leaf's CA: accepted only because fail-open is set.
    only = [p for p in pki.write_crls(tmp_path / "crl") if p.name == "root.crl"]
    assert only
    v = CertificateValidator(anchors, only, fail_closed_on_stale_crl=False, accept_cache_s=300)
    leaf = pki.issue_org("1209270651", "CLINIQUE", "APP")
    assert v.validate(leaf.cert) == leaf.cert
    assert not v._accepted


def test_the_memory_is_bounded(pki, tmp_path):
    v, _ = _validator(pki, tmp_path, accept_cache_max=2)
    leaves = [pki.issue_org(f"12092706{i:02d}", "CLINIQUE", "APP") for i in range(3)]
    for leaf in leaves:
        v.validate(leaf.cert)
    assert len(v._accepted) == 2


def test_an_answer_computed_across_a_crl_reload_is_not_remembered(pki, tmp_path):
    """The reload runs in another thread: a validation that read the old CRLs and ends after
    the reload must not leave its (old) acceptance behind for the revoked certificate."""
    v, crl_dir = _validator(pki, tmp_path)
    leaf = pki.issue_org("1209270651", "CLINIQUE", "APP")
    pki.revoke(leaf.cert)
    pki.write_crls(crl_dir)
    opinion = v._second_opinion

    def reload_meanwhile(path, at):
        v._second_opinion = opinion  # type: ignore[method-assign]
        v.reload_crls()  # the revocation arrives after the old CRLs were read
        return opinion(path, at)

    v._second_opinion = reload_meanwhile  # type: ignore[method-assign]
    assert v.validate(leaf.cert) == leaf.cert  # answered from the CRLs it started with
    assert not v._accepted
    with pytest.raises(CertificateRejected) as exc:
        v.validate(leaf.cert)
    assert exc.value.reason == "revoked"
