"""`mss pki`: the test health PKI of a deployment (init, issue, revoke, CRLs).

The PKI folder is `[pki] directory` of the configuration (default `pki/ca`, where `mss demo`
puts it). It holds CA private keys: it belongs on an operator's workstation or a test
deployment, never on a production node, which only needs the trust anchors and the CRLs.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from mss.cli.common import config_option, database, emit, json_option, load, parse_when, run

_REASONS = [r.name for r in x509.ReasonFlags if r.name != "remove_from_crl"]


def _pki_dir(settings) -> Path:
    return settings.path(settings.pki.directory)


def _open(settings):
    from crypto.pki import TestPKI

    directory = _pki_dir(settings)
    if not (directory / "pki.json").is_file():
        raise click.ClickException(f"no test PKI in {directory}; run `mss pki init` first")
    return TestPKI.load(directory)


@click.group()
def pki() -> None:
    """Test health PKI: CAs shaped like IGC-Santé, certificates, revocation, CRLs."""


@pki.command("init")
@config_option
@json_option
@click.option(
    "--range", "range_name", type=click.Choice(["ELEMENTAIRE", "STANDARD", "FORT"]), default="FORT", show_default=True
)
@click.option("--force", is_flag=True, help="Replace an existing PKI (every issued certificate becomes untrusted).")
def init(config: Path | None, as_json: bool, range_name: str, force: bool) -> None:
    """Create the root and the PERSONNES / ORGANISATIONS CAs, the trust anchors and CRLs."""
    from crypto.pki import TestPKI

    settings = load(config)
    directory = _pki_dir(settings)
    if (directory / "pki.json").exists():
        if not force:
            raise click.ClickException(f"a PKI already exists in {directory}; use --force to replace it")
        shutil.rmtree(directory)
    pki_ = TestPKI.create(directory, range_name=range_name)
    anchors = pki_.write_trust_anchors(settings.path(settings.tls.trust_anchors))
    crls = pki_.write_crls()
    doc = {
        "directory": str(directory),
        "trust_anchors": str(anchors),
        "cas": [c.subject.rfc4514_string() for c in pki_.ca_certificates],
        "crl_files": [str(p) for p in crls],
    }
    emit(
        as_json,
        doc,
        [
            f"test PKI created in {directory}",
            *(f"  {name}" for name in doc["cas"]),
            f"trust anchors: {anchors}",
            "CRLs (list them in [tls] crl_files):",
            *(f"  {p}" for p in crls),
        ],
    )


# ------------------------------------------------------------------------------------ issue


def _write_issued(issued, out: Path, stem: str, *, p12: bool, force: bool, friendly: str) -> dict:
    from crypto.keys import new_password, write_pkcs12, x5t_s256

    out.mkdir(parents=True, exist_ok=True)
    cert_path, key_path, p12_path = out / f"{stem}.crt", out / f"{stem}.key", out / f"{stem}.p12"
    for p in (cert_path, key_path, *([p12_path] if p12 else [])):
        if p.exists() and not force:
            raise click.ClickException(f"{p} exists; use --force to overwrite")
    issued.write_pem(cert_path, key_path, with_chain=True)
    cert = issued.cert
    doc = {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "sha256": cert.fingerprint(hashes.SHA256()).hex(),
        "x5t#S256": x5t_s256(cert),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "cert": str(cert_path),
        "key": str(key_path),
    }
    if p12:
        password = new_password()
        write_pkcs12(p12_path, issued.key, cert, issued.chain, password, friendly_name=friendly)
        doc.update(p12=str(p12_path), p12_password=password)
    return doc


def _archive(pki_, issued) -> None:
    """Keep a copy of every issued certificate (public) so that `revoke --serial` finds it."""
    folder = pki_.directory / "issued"
    folder.mkdir(exist_ok=True)
    (folder / f"{issued.cert.serial_number:x}.pem").write_bytes(issued.cert_pem(with_chain=False))


def _issue_lines(kind: str, doc: dict) -> list[str]:
    lines = [
        f"{kind} certificate issued: {doc['subject']}",
        f"  serial {doc['serial']}, valid {doc['not_before']} .. {doc['not_after']}",
        f"  certificate (with chain): {doc['cert']}",
        f"  private key (0600):       {doc['key']}",
    ]
    if "p12" in doc:
        lines += [f"  PKCS#12: {doc['p12']}", f"  PKCS#12 password (shown once): {doc['p12_password']}"]
    return lines


def _issue_options(f):
    f = click.option("--force", is_flag=True, help="Overwrite existing files in --out.")(f)
    f = click.option("--p12", is_flag=True, help="Also write a password-protected PKCS#12 (password printed once).")(f)
    f = click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("."), show_default=True)(f)
    f = click.option("--not-after", default=None, help="ISO date or date-time (default: 3 years after not-before).")(f)
    f = click.option("--not-before", default=None, help="ISO date or date-time (default: one hour ago).")(f)
    f = json_option(f)
    f = config_option(f)
    return f


def _window(not_before: str | None, not_after: str | None) -> tuple[datetime | None, datetime | None]:
    nb, na = parse_when(not_before), parse_when(not_after, end_of_day=True)
    if nb and na and na <= nb:
        raise click.BadParameter("--not-after must be later than --not-before")
    return nb, na


@pki.group()
def issue() -> None:
    """Issue an end-entity certificate (PS, ORG or SERV)."""


@issue.command("ps")
@click.option("--idnat", required=True, help="idNat_PS: 8 + RPPS (12 characters) or 0 + ADELI.")
@click.option("--surname", required=True)
@click.option("--given", "given_name", required=True)
@click.option("--profession", default="Médecin", show_default=True)
@click.option("--allow-invalid-id", is_flag=True, hidden=True, help="Tests only: skip the Luhn check.")
@_issue_options
def issue_ps(
    idnat, surname, given_name, profession, allow_invalid_id, config, as_json, not_before, not_after, out, p12, force
) -> None:
    """Professional authentication certificate (client authentication)."""
    from crypto.identity import IdentityError, check_ps_id

    if not allow_invalid_id:
        try:
            check_ps_id(idnat)
        except IdentityError as exc:
            raise click.BadParameter(str(exc), param_hint="--idnat") from exc
    pki_ = _open(load(config))
    nb, na = _window(not_before, not_after)
    issued = pki_.issue_ps(idnat, surname.upper(), given_name.upper(), profession, not_before=nb, not_after=na)
    _archive(pki_, issued)
    doc = {
        "kind": "PS",
        **_write_issued(issued, out, idnat, p12=p12, force=force, friendly=f"{given_name} {surname} (carte)"),
    }
    emit(as_json, doc, _issue_lines("PS", doc))


@issue.command("org")
@click.option("--structure", required=True, help="idNat_Struct: 1 + FINESS, 2 + SIREN, 3 + SIRET, ...")
@click.option("--name", required=True, help="Legal name of the structure (O).")
@click.option("--cn", "common_name", default=None, help="Application or service (CN); default: --name.")
@click.option("--department", default="75", show_default=True, help="ST")
@click.option("--allow-invalid-id", is_flag=True, hidden=True)
@_issue_options
def issue_org(
    structure, name, common_name, department, allow_invalid_id, config, as_json, not_before, not_after, out, p12, force
) -> None:
    """Structure certificate for practice software or a service (client authentication)."""
    from crypto.identity import IdentityError, check_structure_id

    if not allow_invalid_id:
        try:
            check_structure_id(structure)
        except IdentityError as exc:
            raise click.BadParameter(str(exc), param_hint="--structure") from exc
    pki_ = _open(load(config))
    nb, na = _window(not_before, not_after)
    issued = pki_.issue_org(structure, name, common_name or name, department=department, not_before=nb, not_after=na)
    _archive(pki_, issued)
    doc = {
        "kind": "ORG",
        **_write_issued(issued, out, f"org-{structure}", p12=p12, force=force, friendly=common_name or name),
    }
    emit(as_json, doc, _issue_lines("ORG", doc))


@issue.command("serv")
@click.option(
    "--dns", "dns_names", multiple=True, required=True, help="Host or mail domain (repeatable; first is the CN)."
)
@click.option("--ip", "ips", multiple=True, help="IP address for the SAN (repeatable).")
@click.option("--structure", default=None, help="idNat_Struct of the operator (default: the demo structure).")
@click.option("--name", default="MSS", show_default=True, help="Legal name of the operator (O).")
@_issue_options
def issue_serv(dns_names, ips, structure, name, config, as_json, not_before, not_after, out, p12, force) -> None:
    """Server certificate (TLS server and client authentication)."""
    from mss.demo import structure_id as demo_structure

    pki_ = _open(load(config))
    nb, na = _window(not_before, not_after)
    try:
        issued = pki_.issue_serv(
            list(dns_names), structure or demo_structure(), name, ip_addresses=list(ips), not_before=nb, not_after=na
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    _archive(pki_, issued)
    doc = {
        "kind": "SERV",
        **_write_issued(issued, out, dns_names[0].lower(), p12=p12, force=force, friendly=dns_names[0]),
    }
    emit(as_json, doc, _issue_lines("SERV", doc))


# ------------------------------------------------------------------------------- revocation


@pki.command()
@click.argument("cert", type=click.Path(path_type=Path, dir_okay=False, exists=True), required=False)
@click.option("--serial", default=None, help="Serial (hex) of a certificate this PKI issued, instead of CERT.")
@click.option("--reason", type=click.Choice(_REASONS), default="unspecified", show_default=True)
@click.option("--crl", "publish", is_flag=True, help="Also write fresh CRLs now (same as `mss pki crl`).")
@config_option
@json_option
def revoke(
    cert: Path | None, serial: str | None, reason: str, publish: bool, config: Path | None, as_json: bool
) -> None:
    """Revoke CERT (PEM or DER; the first certificate of a PEM bundle). Published by `mss pki crl`."""
    from crypto.validate import load_certificates

    settings = load(config)
    pki_ = _open(settings)
    if (cert is None) == (serial is None):
        raise click.UsageError("give either CERT or --serial")
    if serial is not None:
        path = pki_.directory / "issued" / f"{int(serial, 16):x}.pem"
        if not path.is_file():
            raise click.ClickException(f"no certificate with serial {serial} issued by this PKI")
        cert = path
    try:
        target = load_certificates(cert.read_bytes())[0]
    except (ValueError, IndexError) as exc:
        raise click.ClickException(f"{cert}: not a certificate: {exc}") from exc
    try:
        pki_.revoke(target, x509.ReasonFlags[reason] if reason != "unspecified" else None)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    doc = {
        "revoked": format(target.serial_number, "x"),
        "subject": target.subject.rfc4514_string(),
        "reason": reason,
        "crl_files": [str(p) for p in pki_.write_crls()] if publish else [],
    }
    run(_audit_revocation(settings, doc))
    lines = [f"revoked serial {doc['revoked']} ({doc['subject']}), reason {reason}"]
    lines.append("CRLs written" if publish else "publish it with `mss pki crl`")
    emit(as_json, doc, lines)


async def _audit_revocation(settings, doc: dict) -> None:
    """`certificate.revoked` in the audit trail (mss.audit), once the PKI has recorded it."""
    from mss.audit import AuditTrail, cli_actor

    if not settings.audit.enabled:  # `[audit] enabled = false`: not even the database is opened
        return
    async with database(settings) as sessions:
        await AuditTrail(sessions, enabled=settings.audit.enabled).record(
            "certificate.revoked",
            actor=cli_actor(),
            subject=f"certificate:{doc['revoked']}",
            dn=doc["subject"],
            reason=doc["reason"],
        )


@pki.command()
@click.option("--next-update-days", type=float, default=7.0, show_default=True, help="Lifetime of the CRLs.")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder of the CRLs. Default: crl/ inside the [pki] directory (pki/ca/crl in a demo), where the "
    "certificates' CRL distribution points and the demo's [tls] crl_files point.",
)
@click.option("--pem", is_flag=True, help="PEM instead of DER.")
@config_option
@json_option
def crl(next_update_days: float, out: Path | None, pem: bool, config: Path | None, as_json: bool) -> None:
    """Write one fresh CRL per CA. Running nodes pick them up within [tls] crl_refresh_s."""
    pki_ = _open(load(config))
    now = datetime.now(UTC)
    paths = pki_.write_crls(
        out,
        this_update=now - timedelta(minutes=5),
        next_update=now + timedelta(days=next_update_days),
        encoding="PEM" if pem else "DER",
    )
    revoked = {slug: len(m) for slug, m in pki_._revoked.items()}
    doc = {
        "crl_files": [str(p) for p in paths],
        "revoked": revoked,
        "next_update": (now + timedelta(days=next_update_days)).isoformat(),
    }
    emit(as_json, doc, [f"CRL written: {p}" for p in paths] + [f"next update: {doc['next_update']}"])
