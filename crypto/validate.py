"""In-process validation of health PKI certificates: chain, validity, usage, key size, revocation.

Python 3.11's ``ssl`` checks the chain at the handshake but gives neither a verify callback nor
the verified chain, so policy (which EKU, revocation, identity) and a *readable reason* have to be
computed again here. The checks run in a fixed order so the reason is the most useful one:

1. path building to one of the configured roots only (RFC 5280 §6.1; never the system store);
   self-signed certificates sent by the peer are never anchors -> "untrusted" /
   "missing_intermediate";
2. key size on every certificate of the path (RSA >= 2048, the IGC-Santé floor) -> "weak_key";
3. validity window of every certificate (§4.1.2.5) -> "expired" / "not_yet_valid";
4. CA constraints of issuers: basicConstraints cA, pathLenConstraint, keyCertSign (§4.2.1.9,
   §4.2.1.3) -> "untrusted";
5. key usage / extended key usage of the leaf for the intended use (§4.2.1.3, §4.2.1.12,
   RFC 8550 §4.4) -> "wrong_usage";
6. revocation against loaded CRLs (§5, §6.3) -> "revoked" / "crl_stale";
7. a second, independent verification by ``cryptography.x509.verification`` (signatures,
   encodings, chain rules) as defence in depth -> "untrusted".

The reason codes go to the operator's log; the wire gets a generic message (DESIGN.md).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import threading
import urllib.request
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, rsa
from cryptography.x509 import verification as xv
from cryptography.x509.oid import ExtendedKeyUsageOID

from .dates import as_utc

__all__ = ["CertificateRejected", "CertificateValidator", "TrustAnchors", "Usage", "load_certificates"]

log = logging.getLogger(__name__)

Usage = Literal["client", "server", "email"]
MIN_RSA_BITS = 2048
MAX_CHAIN_DEPTH = 6

REASONS = frozenset(
    {
        "no_certificate",
        "malformed",
        "untrusted",
        "missing_intermediate",
        "expired",
        "not_yet_valid",
        "wrong_usage",
        "revoked",
        "crl_stale",
        "weak_key",
    }
)


class CertificateRejected(Exception):
    """A certificate failed validation. ``reason`` is one of ``REASONS``; str() has the detail."""

    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """PEM bundle or a single DER certificate."""
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificates(data)
    return [x509.load_der_x509_certificate(data)]


def _is_self_issued(cert: x509.Certificate) -> bool:
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


@dataclass
class TrustAnchors:
    """The health PKI's CAs, loaded from one explicit PEM bundle (never the system's CAs).

    ``path`` is kept because the same file is the ``cafile`` of the TLS contexts, so that the
    handshake and this module trust exactly the same set.
    """

    roots: list[x509.Certificate]
    intermediates: list[x509.Certificate]
    path: Path

    @classmethod
    def load(cls, path: Path) -> TrustAnchors:
        path = Path(path)
        try:
            certs = x509.load_pem_x509_certificates(path.read_bytes())
        except ValueError as exc:
            raise ValueError(f"{path}: not a PEM certificate bundle: {exc}") from exc
        roots = [c for c in certs if _is_self_issued(c)]
        inters = [c for c in certs if not _is_self_issued(c)]
        if not roots:
            raise ValueError(f"{path}: no self-signed root certificate in the trust bundle")
        return cls(roots=roots, intermediates=inters, path=path)

    @property
    def all(self) -> list[x509.Certificate]:
        return [*self.roots, *self.intermediates]


# ---------------------------------------------------------------------------------------------
# Usage profiles
# ---------------------------------------------------------------------------------------------

_EKU_FOR: dict[str, x509.ObjectIdentifier] = {
    "client": ExtendedKeyUsageOID.CLIENT_AUTH,
    "server": ExtendedKeyUsageOID.SERVER_AUTH,
    "email": ExtendedKeyUsageOID.EMAIL_PROTECTION,
}


def _check_usage(cert: x509.Certificate, usage: Usage) -> None:
    exts = cert.extensions
    try:
        bc = exts.get_extension_for_class(x509.BasicConstraints).value
        if bc.ca:
            raise CertificateRejected("wrong_usage", "a CA certificate cannot be an end entity")
    except x509.ExtensionNotFound:
        pass
    want = _EKU_FOR[usage]
    try:
        eku = exts.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        # RFC 5280 §4.2.1.12 allows "no EKU = any use"; the health PKI always sets one, and an
        # unconstrained certificate is not something we want to accept for a precise purpose.
        raise CertificateRejected("wrong_usage", "no extendedKeyUsage extension") from None
    if want not in eku and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku:
        raise CertificateRejected("wrong_usage", f"extendedKeyUsage lacks {want._name}")
    try:
        ku = exts.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        ku = None
    if usage == "email":
        # Stored mail is encrypted with RSA key transport: keyEncipherment (RFC 8550 §4.4.2).
        if ku is None or not ku.key_encipherment:
            raise CertificateRejected("wrong_usage", "keyUsage lacks keyEncipherment")
    elif ku is not None and not (ku.digital_signature or ku.key_encipherment or ku.key_agreement):
        # TLS authentication needs a signing (or, for RSA key exchange, encipherment) key.
        raise CertificateRejected("wrong_usage", "keyUsage does not allow TLS authentication")


def _check_key(cert: x509.Certificate) -> None:
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateRejected("malformed", f"unreadable public key: {exc}") from exc
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise CertificateRejected("weak_key", f"RSA-{key.key_size} < {MIN_RSA_BITS} in {_name(cert)}")
    if isinstance(key, dsa.DSAPublicKey):
        raise CertificateRejected("weak_key", f"DSA key in {_name(cert)}")


def _name(cert: x509.Certificate) -> str:
    try:
        return cert.subject.rfc4514_string()
    except ValueError:
        return "<undecodable subject>"


# ---------------------------------------------------------------------------------------------
# CRLs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LoadedCRL:
    path: Path
    crl: x509.CertificateRevocationList


@dataclass(frozen=True)
class _Accepted:
    leaf: x509.Certificate
    until: datetime


def _fingerprint(leaf: x509.Certificate | bytes | bytearray | memoryview) -> bytes:
    if isinstance(leaf, x509.Certificate):
        return leaf.fingerprint(hashes.SHA256())
    return hashlib.sha256(leaf).digest()


#: Largest CRL accepted from a URL (the national CAs' full CRLs are a few MB).
MAX_CRL_BYTES = 32 * 1024 * 1024
CRL_FETCH_TIMEOUT_S = 15.0


def is_url(source: Path | str) -> bool:
    return isinstance(source, str) and source.lower().startswith(("http://", "https://"))


def _fetch(url: str) -> bytes:
    """A CRL from its distribution point. Plain http is fine (RFC 5280 4.2.1.13 points at
    http URIs): the CRL is signed, and only a CRL signed by the issuer's key is used."""
    with urllib.request.urlopen(url, timeout=CRL_FETCH_TIMEOUT_S) as resp:  # noqa: S310 - http(s) only
        data = resp.read(MAX_CRL_BYTES + 1)
    if len(data) > MAX_CRL_BYTES:
        raise ValueError(f"CRL larger than {MAX_CRL_BYTES} octets")
    return data


def _readable_crl(path: Path | str) -> bool:
    try:
        _load_crl(path)
    except (OSError, ValueError):
        return False
    return True


def _load_crl(source: Path | str) -> x509.CertificateRevocationList:
    data = _fetch(source) if is_url(source) else Path(source).read_bytes()
    if b"-----BEGIN X509 CRL" in data:
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


class CertificateValidator:
    """Validates leaf certificates against ``anchors`` and a set of CRLs (files, or
    http(s) URLs fetched at each reload).

    Thread-safe for concurrent ``validate`` calls; ``reload_crls`` swaps the CRL set atomically,
    so a refresh never exposes a half-loaded state.
    """

    def __init__(
        self,
        anchors: TrustAnchors,
        crl_files: Sequence[Path | str] = (),
        *,
        crl_max_age: timedelta | None = None,
        fail_closed_on_stale_crl: bool = True,
        accept_cache_s: float = 0.0,
        accept_cache_max: int = 4096,
    ) -> None:
        self.anchors = anchors
        #: Accepted leaves remembered this long (0: never), by DER fingerprint and usage. A
        #: remembered answer is the one validation would give: it lasts at most until the
        #: path's first notAfter and the moment its CRLs turn stale, and every CRL reload
        #: forgets them all (a revocation then takes effect as without the memory). Why: a
        #: client that logs in again and again (a mail client's several connections, a
        #: practice software polling) paid the chain, CRL signatures and the verifier's
        #: second opinion each time: about 8 % of an IMAP session cycle's CPU.
        self.accept_cache_s = accept_cache_s
        self.accept_cache_max = accept_cache_max
        self._accepted: OrderedDict[tuple[bytes, str], _Accepted] = OrderedDict()
        #: Moves at every CRL reload: an answer computed with the CRLs of an older generation
        #: (the reload ran in another thread meanwhile) is never remembered.
        self._generation = 0
        self.crl_files: list[Path | str] = [p if is_url(p) else Path(p) for p in crl_files]
        self.crl_max_age = crl_max_age
        self.fail_closed_on_stale_crl = fail_closed_on_stale_crl
        self._crls: list[_LoadedCRL] = []
        self._lock = threading.Lock()
        try:
            self.reload_crls()
        except ValueError:
            # A missing or broken local file is a configuration error: refuse to start. An
            # unreachable distribution point is not: its CA's certificates fail closed
            # ("crl_stale") until a refresh reaches it.
            if any(not is_url(p) and not _readable_crl(p) for p in self.crl_files):
                raise
            log.warning("CRL distribution point unreachable at start-up; its CA fails closed until it is fetched")

    # ------------------------------------------------------------------ CRLs

    def reload_crls(self) -> None:
        """Re-read every CRL source (file or URL), each on its own: a source that cannot be
        read or parsed keeps its previous CRL, the others are refreshed all the same, and
        the failures are raised together afterwards (loud, never "no CRL = nothing revoked").
        """
        with self._lock:
            previous = {item.path: item for item in self._crls}
        loaded, failures = [], []
        for source in self.crl_files:
            try:
                loaded.append(_LoadedCRL(source, _load_crl(source)))
            except (OSError, ValueError, http.client.HTTPException) as exc:
                failures.append(f"{source}: {exc}")
                if source in previous:
                    loaded.append(previous[source])
        with self._lock:
            self._crls = loaded
            self._accepted.clear()
            self._generation += 1
        if failures:
            raise ValueError("cannot load CRL " + "; ".join(failures))

    def crl_times(self) -> list[tuple[str, str, datetime, datetime | None]]:
        """(source, issuer, thisUpdate, nextUpdate) of each CRL in use now, for the metrics
        (`mss_crl_age_seconds`): read under the lock, so a refresh is seen whole or not at all."""
        with self._lock:
            crls = list(self._crls)
        return [
            (str(item.path), item.crl.issuer.rfc4514_string(), item.crl.last_update_utc, item.crl.next_update_utc)
            for item in crls
        ]

    def _crls_for(self, issuer: x509.Certificate) -> list[x509.CertificateRevocationList]:
        with self._lock:
            crls = list(self._crls)
        out = []
        for item in crls:
            crl = item.crl
            if crl.issuer != issuer.subject:
                continue
            # A CRL only counts when signed by the issuer's key (RFC 5280 §6.3.3 (f)-(g)).
            if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                log.warning("CRL %s: signature does not match %s, ignored", item.path, _name(issuer))
                continue
            out.append(crl)
        return out

    def _check_revocation(self, path: list[x509.Certificate], at: datetime) -> datetime | None:
        """Raise when a certificate of the path is revoked, or its status unknown (fail
        closed). Returns until when the answer stays the same with the CRLs loaded now (the
        moment the last fresh CRL of a link turns stale), None when it was accepted only
        because fail-open is configured (never remembered: each use logs its warning)."""
        until = datetime.max.replace(tzinfo=UTC)
        if not self.crl_files:
            return until
        accepted_open = False
        # Every certificate but the root: leaf against its CA's CRL, intermediates against the
        # root's CRL when one is loaded.
        for index, (cert, issuer) in enumerate(pairwise(path)):
            crls = self._crls_for(issuer)
            if not crls:
                if index == 0:
                    # CRLs are configured but none covers the leaf's CA: status unknown.
                    msg = f"no CRL loaded for {_name(issuer)}"
                    if self.fail_closed_on_stale_crl:
                        raise CertificateRejected("crl_stale", msg)
                    log.warning("%s; accepting (fail-open configured)", msg)
                    accepted_open = True
                continue
            fresh_until: list[datetime] = []
            for crl in crls:
                stale_at = crl.next_update_utc or datetime.max.replace(tzinfo=UTC)
                if self.crl_max_age is not None:
                    stale_at = min(stale_at, crl.last_update_utc + self.crl_max_age)
                if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                    # A revocation listed even in an old CRL is still a revocation.
                    raise CertificateRejected("revoked", f"serial {cert.serial_number:x} of {_name(cert)}")
                if stale_at >= at:
                    fresh_until.append(stale_at)
            if not fresh_until:
                msg = f"CRL of {_name(issuer)} is past its nextUpdate or max age"
                if self.fail_closed_on_stale_crl:
                    raise CertificateRejected("crl_stale", msg)
                log.warning("%s; accepting (fail-open configured)", msg)
                accepted_open = True
                continue
            until = min(until, max(fresh_until))
        return None if accepted_open else until

    # ------------------------------------------------------------------ chain

    def _build_path(self, leaf: x509.Certificate, chain: Sequence[x509.Certificate]) -> list[x509.Certificate]:
        """leaf -> ... -> configured root, by issuer name + signature (RFC 5280 §6.1)."""
        roots = self.anchors.roots
        candidates = [c for c in chain if c != leaf] + self.anchors.intermediates
        path = [leaf]
        current = leaf
        while True:
            if any(current == root for root in roots):
                return path  # the leaf itself is an anchor (only sensible for tests)
            if _is_self_issued(current):
                # A peer-supplied root is never an anchor, whatever its name.
                raise CertificateRejected("untrusted", f"self-signed {_name(current)} is not a trust anchor")
            name_match = False
            issuer_found: x509.Certificate | None = None
            for cand in [*roots, *candidates]:
                if cand.subject != current.issuer or cand == current:
                    continue
                name_match = True
                try:
                    current.verify_directly_issued_by(cand)
                except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
                    continue
                issuer_found = cand
                break
            if issuer_found is None:
                if name_match:
                    # A CA of that name exists but did not sign this: another PKI, or a forgery.
                    raise CertificateRejected("untrusted", f"signature of {_name(current)} matches no known CA")
                raise CertificateRejected(
                    "missing_intermediate", f"no certificate for issuer {current.issuer.rfc4514_string()}"
                )
            if any(issuer_found == c for c in path):
                raise CertificateRejected("untrusted", "certificate loop in chain")
            path.append(issuer_found)
            if any(issuer_found == r for r in roots):
                return path
            if len(path) > MAX_CHAIN_DEPTH:
                raise CertificateRejected("untrusted", "chain too long")
            current = issuer_found

    @staticmethod
    def _check_ca_constraints(path: list[x509.Certificate]) -> None:
        # path[1:] are issuers; pathLen counts the non-self-issued CAs below each one (§4.2.1.9).
        for depth, ca in enumerate(path[1:]):
            try:
                bc = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
            except x509.ExtensionNotFound:
                raise CertificateRejected("untrusted", f"{_name(ca)} is not a CA (no basicConstraints)") from None
            if not bc.ca:
                raise CertificateRejected("untrusted", f"{_name(ca)} is not a CA")
            if bc.path_length is not None and depth > bc.path_length:
                raise CertificateRejected("untrusted", f"pathLenConstraint of {_name(ca)} exceeded")
            try:
                ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
                if not ku.key_cert_sign:
                    raise CertificateRejected("untrusted", f"{_name(ca)} lacks keyCertSign")
            except x509.ExtensionNotFound:
                pass

    @staticmethod
    def _check_validity(path: list[x509.Certificate], at: datetime) -> None:
        for cert in path:
            if at < cert.not_valid_before_utc:
                raise CertificateRejected("not_yet_valid", f"{_name(cert)} valid from {cert.not_valid_before_utc}")
            if at > cert.not_valid_after_utc:
                raise CertificateRejected("expired", f"{_name(cert)} expired {cert.not_valid_after_utc}")

    def _second_opinion(self, path: list[x509.Certificate], at: datetime) -> None:
        """Independent check by cryptography's Rust verifier (signatures, DER rules, chaining).

        Extension policies are relaxed to "anything but basicConstraints on CAs": the health PKI
        is not the Web PKI (PS certificates have no SAN), and usage was checked above.
        """
        ca_policy = xv.ExtensionPolicy.permit_all().require_present(
            x509.BasicConstraints, xv.Criticality.AGNOSTIC, None
        )
        builder = (
            xv.PolicyBuilder()
            .store(xv.Store(self.anchors.roots))
            .time(at)
            .max_chain_depth(MAX_CHAIN_DEPTH)
            .extension_policies(ca_policy=ca_policy, ee_policy=xv.ExtensionPolicy.permit_all())
        )
        try:
            builder.build_client_verifier().verify(path[0], path[1:-1] if len(path) > 1 else [])
        except xv.VerificationError as exc:
            raise CertificateRejected("untrusted", f"verifier: {exc}") from exc

    # ------------------------------------------------------------------ entry point

    def validate(
        self,
        leaf: x509.Certificate | bytes | None,
        *,
        usage: Usage = "client",
        chain: Sequence[x509.Certificate] = (),
        at: datetime | None = None,
    ) -> x509.Certificate:
        """Return the leaf when it is acceptable for ``usage`` at ``at``; raise CertificateRejected.

        ``leaf`` may be DER bytes (what ``SSLObject.getpeercert(binary_form=True)`` returns).
        """
        if usage not in _EKU_FOR:
            raise ValueError(f"unknown usage {usage!r}")
        if leaf is None or (isinstance(leaf, (bytes, bytearray)) and not leaf):
            raise CertificateRejected("no_certificate", "no certificate presented")
        if isinstance(leaf, (bytes, bytearray, memoryview)):
            try:
                leaf = x509.load_der_x509_certificate(bytes(leaf))
            except ValueError as exc:
                raise CertificateRejected("malformed", f"not a DER certificate: {exc}") from exc
        # Only "now" and the peer's leaf alone are remembered (`accept_cache_s`).
        key = (_fingerprint(leaf), usage) if self.accept_cache_s > 0 and at is None and not chain else None
        at = as_utc(at) if at is not None else datetime.now(UTC)
        generation = -1
        if key is not None:
            with self._lock:
                generation = self._generation
                hit = self._accepted.get(key)
                if hit is not None and at < hit.until:
                    self._accepted.move_to_end(key)
                    return hit.leaf
        try:
            path = self._build_path(leaf, chain)
            for cert in path:
                _check_key(cert)
            self._check_validity(path, at)
            self._check_ca_constraints(path)
            _check_usage(leaf, usage)
            revocation_until = self._check_revocation(path, at)
            self._second_opinion(path, at)
        except CertificateRejected:
            raise
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            # Undecodable extensions and the like surface lazily from cryptography.
            raise CertificateRejected("malformed", str(exc)) from exc
        if key is not None and revocation_until is not None:
            until = min(
                revocation_until,
                at + timedelta(seconds=self.accept_cache_s),
                *(c.not_valid_after_utc for c in path),
            )
            with self._lock:
                if generation != self._generation:  # the CRLs changed while this ran
                    return leaf
                self._accepted[key] = _Accepted(leaf, until)
                while len(self._accepted) > self.accept_cache_max:
                    self._accepted.popitem(last=False)
        return leaf
