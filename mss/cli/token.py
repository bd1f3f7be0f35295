"""`mss token`: the small e-CPS token issuer of tests and the demo.

In production tokens come from the national identity provider and MSS only verifies them
(`[tokens] jwks`, `issuer`, `audience`, `acr_values`). This issuer signs with the key at
`[tokens] signing_key` and publishes its public keys in the `[tokens] jwks` file, which the
`http` listener serves at `/.well-known/jwks.json` when `serve_jwks = true`.
"""

from __future__ import annotations

from pathlib import Path

import click

from mss.cli.common import config_option, emit, json_option, load


def _paths(settings) -> tuple[Path, Path]:
    t = settings.tokens
    if t.signing_key is None:
        raise click.ClickException("[tokens] signing_key is not configured (this node has no token issuer)")
    source = t.jwks_source(settings)
    if source is None or isinstance(source, str):
        raise click.ClickException("[tokens] jwks must be a local file for the built-in issuer")
    if not t.issuer:
        raise click.ClickException("[tokens] issuer is not configured")
    return settings.path(t.signing_key), source


@click.group()
def token() -> None:
    """e-CPS access tokens bound to a certificate (test and demo issuer)."""


@token.command("init")
@click.option("--algorithm", type=click.Choice(["ES256", "RS256"]), default="ES256", show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing issuer key (tokens already issued stop verifying).")
@config_option
@json_option
def init(algorithm: str, force: bool, config: Path | None, as_json: bool) -> None:
    """Create the issuer key ([tokens] signing_key) and its JWKS file ([tokens] jwks)."""
    from crypto.tokens import TokenIssuer

    settings = load(config)
    key_path, jwks_path = _paths(settings)
    if key_path.exists() and not force:
        raise click.ClickException(f"{key_path} exists; use --force to replace it")
    issuer = TokenIssuer.generate(settings.tokens.issuer, algorithm=algorithm)  # type: ignore[arg-type]
    issuer.save_key(key_path)
    issuer.write_jwks(jwks_path)
    doc = {"signing_key": str(key_path), "jwks": str(jwks_path), "kid": issuer.kid, "alg": issuer.algorithm}
    emit(as_json, doc, [f"token issuer key: {key_path} ({issuer.algorithm}, kid {issuer.kid})", f"JWKS: {jwks_path}"])


@token.command("issue")
@click.option("--idnat", required=True, help="The professional's idNat_PS (becomes sub).")
@click.option(
    "--cnf-cert",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Certificate (PEM or DER) the token is bound to: the client certificate of the connection that will use it.",
)
@click.option("--ttl", type=click.IntRange(1, 24 * 3600), default=300, show_default=True, help="Seconds.")
@click.option("--acr", default=None, help="acr claim (default: the first of [tokens] acr_values, else eidas1).")
@click.option("--audience", default=None, help="aud claim (default: [tokens] audience).")
@config_option
@json_option
def issue(
    idnat: str, cnf_cert: Path, ttl: int, acr: str | None, audience: str | None, config: Path | None, as_json: bool
) -> None:
    """Print a signed JWT for IDNAT bound to CNF_CERT (RFC 8705 cnf x5t#S256)."""
    from crypto.identity import IdentityError, check_ps_id
    from crypto.keys import x5t_s256
    from crypto.tokens import DEFAULT_ACR, TokenIssuer
    from crypto.validate import load_certificates

    settings = load(config)
    try:
        check_ps_id(idnat)
    except IdentityError as exc:
        raise click.BadParameter(str(exc), param_hint="--idnat") from exc
    key_path, _ = _paths(settings)
    if not key_path.is_file():
        raise click.ClickException(f"no issuer key at {key_path}; run `mss token init` first")
    try:
        cert = load_certificates(cnf_cert.read_bytes())[0]
    except (ValueError, IndexError) as exc:
        raise click.ClickException(f"{cnf_cert}: not a certificate: {exc}") from exc
    issuer = TokenIssuer.load(key_path, settings.tokens.issuer)
    acr = acr or (settings.tokens.acr_values[0] if settings.tokens.acr_values else DEFAULT_ACR)
    jwt_text = issuer.issue(idnat, cert, ttl=ttl, acr=acr, audience=audience or settings.tokens.audience)
    emit(
        as_json,
        {"token": jwt_text, "idnat": idnat, "x5t#S256": x5t_s256(cert), "ttl": ttl, "kid": issuer.kid},
        [jwt_text],
    )


@token.command("jwks")
@config_option
def jwks(config: Path | None) -> None:
    """Print the issuer's public JWKS."""
    import json

    from crypto.tokens import TokenIssuer

    settings = load(config)
    key_path, _ = _paths(settings)
    if not key_path.is_file():
        raise click.ClickException(f"no issuer key at {key_path}; run `mss token init` first")
    click.echo(json.dumps(TokenIssuer.load(key_path, settings.tokens.issuer).jwks(), indent=2))
