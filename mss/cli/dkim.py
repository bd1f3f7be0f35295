"""`mss dkim`: DKIM signing keys per domain (RFC 6376; RSA-2048 or Ed25519, RFC 8463)."""

from __future__ import annotations

from pathlib import Path

import click

from mss.cli.common import config_option, emit, json_option, load


@click.group()
def dkim() -> None:
    """DKIM keys of this operator's domains."""


@dkim.command("keygen")
@click.argument("domain")
@click.option("--selector", default=None, help="Default: [dkim] selector (mss), suffixed by the algorithm for ed25519.")
@click.option("--algorithm", type=click.Choice(["rsa", "ed25519"]), default="rsa", show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing key with the same selector.")
@config_option
@json_option
def keygen(domain: str, selector: str | None, algorithm: str, force: bool, config: Path | None, as_json: bool) -> None:
    """Write DOMAIN's key under [dkim] directory (0600) and print the DNS TXT record to publish."""
    from crypto import dkim as dk

    settings = load(config)
    if selector is None:
        selector = settings.dkim.selector + ("-ed25519" if algorithm == "ed25519" else "")
    try:
        key = dk.generate(domain, selector, algorithm)  # type: ignore[arg-type]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    directory = settings.path(settings.dkim.directory)
    target = directory / key.domain / f"{key.selector}.key"
    if target.exists():
        if not force:
            raise click.ClickException(f"{target} exists; use another --selector (rollover) or --force")
        target.unlink()
    path = key.write(directory)
    doc = {
        "domain": key.domain,
        "selector": key.selector,
        "algorithm": algorithm,
        "key": str(path),
        "record_name": key.record_name,
        "txt": key.txt_value(),
        "zone_line": key.dns_record(),
    }
    emit(as_json, doc, [f"# private key (0600): {path}", "# publish in DNS:", key.dns_record()])
