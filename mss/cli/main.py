"""The `mss` command: one module per command group, gathered here."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import click

from mss.config import default_config_path


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mss", prog_name="mss", message="%(prog)s %(version)s")
def cli() -> None:
    """MSS: secure health messaging server."""


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option(
    "--domain",
    default=None,
    help="Mail domain of the demo (default hopital-demo.mssante.test; with --peer clinique-demo.mssante.test).",
)
@click.option(
    "--base-port",
    type=int,
    default=None,
    help="First of six consecutive ports (0: ephemeral; default 2587, peer 2597).",
)
@click.option("--force", is_flag=True, help="Replace an existing deployment folder.")
@click.option("--database-url", default=None, help="Database URL (default: SQLite file mss.db in DIR).")
@click.option(
    "--notify-url",
    default=None,
    help="Where patient notifications go: file:DIR (default file:notifications) or smtp://HOST:PORT.",
)
@click.option(
    "--peer",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder of another demo: this one becomes a second operator of its trust space (docs/relay.md).",
)
@click.option(
    "--nodes",
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    help="Nodes sharing the --database-url PostgreSQL: one config each, ports after the previous node's.",
)
def demo(
    directory: Path,
    domain: str | None,
    base_port: int | None,
    force: bool,
    database_url: str | None,
    notify_url: str | None,
    peer: Path | None,
    nodes: int,
) -> None:
    """Create a complete demo deployment in DIRECTORY."""
    from mss.demo import DemoError, create_demo

    try:
        doc = create_demo(
            directory,
            domain=domain,
            base_port=base_port,
            force=force,
            peer=peer,
            nodes=nodes,
            **({"database_url": database_url} if database_url else {}),
            **({"notify_url": notify_url} if notify_url else {}),
        )
    except DemoError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"demo deployment created in {directory}")
    for m in doc["mailboxes"]:
        click.echo(f"  {m['type']:3} {m['address']}")
    for pt in doc["patients"]:
        state = "active" if "password" in pt else "pending (activation code in demo.json)"
        click.echo(f"  patient {pt['address']} ({pt['name']}, {state})")
    for p in doc["peers"]:
        click.echo(f"  peer operator {p['domain']} (mta port {p['mta']}), updated: {peer}")
    if "nodes" in doc:
        for n in doc["nodes"]:
            click.echo(f"start {n['node']} with: {self_command()} serve -c {directory / n['config']}")
    else:
        click.echo(f"start it with: {self_command()} serve -c {directory / 'mss.toml'}")
    if peer is not None:
        click.echo(f"and restart its peer: {self_command()} serve -c {peer / 'mss.toml'}")


@cli.command()
@click.option(
    "-c", "--config", type=click.Path(path_type=Path), default=None, help="mss.toml (default $MSS_CONFIG or ./mss.toml)"
)
def serve(config: Path | None) -> None:
    """Run every listener (SMTP, IMAP, HTTP) in the foreground."""
    from mss.serve import ServeError
    from mss.serve import main as serve_main

    config = config or default_config_path()
    if not config.is_file():
        raise click.ClickException(f"configuration file not found: {config}")
    try:
        serve_main(config, on_ready=lambda ports: _print_banner(config, ports))
    except ServeError as exc:
        raise click.ClickException(str(exc)) from None


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("-c", "--config", type=click.Path(path_type=Path), default=None)
def db_upgrade(config: Path | None) -> None:
    """Apply migrations up to the newest revision."""
    from mss.config import load_settings
    from mss.db.engine import upgrade_sync

    settings = load_settings(config)
    upgrade_sync(settings.resolved_database_url)
    click.echo("schema is up to date")


def self_command() -> str:
    """How the person at this shell runs the `mss` that is running now: `mss` when that is
    what PATH finds, else its path (relative to the current folder when it is under it, as
    `.venv/bin/mss` after `make run`), else `python -m mss` with this interpreter."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == "mss" and argv0.is_file():
        on_path = shutil.which("mss")
        if on_path and Path(on_path).resolve() == argv0.resolve():
            return "mss"
        return _shell_path(argv0)
    return f"{_shell_path(Path(sys.executable))} -m mss"


def _shell_path(path: Path) -> str:
    absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


_TLS_MODES = {
    "submission": "STARTTLS required",
    "submissions": "implicit TLS",
    "mta": "inter-operator: STARTTLS required, a whitelisted peer's SERV certificate",
    "imap": "STARTTLS required",
    "imaps": "implicit TLS",
}


def _print_banner(config: Path, ports: dict[str, int]) -> None:
    """Every listener with its bound port, once they all listen; the demo's users after."""
    from mss.config import load_settings
    from mss.serve import LISTENER_NAMES

    settings = load_settings(config)
    host = settings.listen.host
    lines = [f"MSS for {settings.domain} is listening (pid {os.getpid()}; stop with Ctrl-C):"]
    for name in ("submission", "submissions", "mta", "imap", "imaps"):
        lines.append(f"  {LISTENER_NAMES[name]:17} {host}:{ports[name]:<6} {_TLS_MODES[name]}")
    scheme = "https" if settings.listen.http_tls else "http"
    lines.append(f"  {LISTENER_NAMES['http']:17} {host}:{ports['http']:<6} {scheme}://{host}:{ports['http']}/health")
    demo_json = config.parent / "demo.json"
    if demo_json.is_file():
        doc = json.loads(demo_json.read_text(encoding="utf-8"))
        base = config.parent.resolve()
        lines += [
            f"  Trust the test CA {base / doc['trust_anchors']} and authenticate with a user's certificate",
            f"  (PKCS#12 files under {base / 'users'}, passwords in demo.json). See docs/thunderbird.md.",
        ]
    click.echo("\n".join(lines), err=True)


def _register_groups() -> None:
    """Command groups that live in their own modules (imported here, not at the top, so
    that `mss --help` stays fast for the commands above)."""
    from mss.cli.annuaire import annuaire
    from mss.cli.audit import audit
    from mss.cli.dkim import dkim
    from mss.cli.mailbox import mailbox
    from mss.cli.patient import patient
    from mss.cli.pki import pki
    from mss.cli.queue import queue
    from mss.cli.status import status
    from mss.cli.token import token

    for group in (annuaire, pki, token, mailbox, patient, dkim, audit, status, queue):
        cli.add_command(group)


_register_groups()


def main() -> None:
    from mss.config import ConfigError

    try:
        cli(prog_name="mss")
    except ConfigError as exc:  # raised wherever a command loads its settings
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    sys.exit(main())
