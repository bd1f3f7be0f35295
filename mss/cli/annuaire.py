"""`mss annuaire ...`: national directory import, look-ups, whitelist, export.

Register with `cli.add_command(annuaire)` in `mss.cli.main`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click

_CONFIG_HELP = "mss.toml (default $MSS_CONFIG or ./mss.toml)"


def _common(f: Callable) -> Callable:
    f = click.option("--json", "as_json", is_flag=True, help="Machine-readable output (JSON).")(f)
    f = click.option("-c", "--config", type=click.Path(path_type=Path), default=None, help=_CONFIG_HELP)(f)
    return f


async def _with_engine(config: Path | None, body: Callable[[Any, Any], Awaitable[Any]]) -> Any:
    from mss.config import default_config_path, load_settings
    from mss.db.engine import create_engine, sessionmaker, upgrade

    try:
        settings = load_settings(config or default_config_path())
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    url = settings.resolved_database_url
    await upgrade(url)
    engine = create_engine(url)
    try:
        return await body(engine, sessionmaker(engine))
    finally:
        await engine.dispose()


def _run(config: Path | None, body: Callable[[Any, Any], Awaitable[Any]]) -> Any:
    return asyncio.run(_with_engine(config, body))


def _emit(as_json: bool, data: Any, text: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        text()


@click.group()
def annuaire() -> None:
    """Professional directory: national files, look-ups, trust-space whitelist."""


@annuaire.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_common
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def import_cmd(files: tuple[Path, ...], config: Path | None, as_json: bool, no_progress: bool) -> None:
    """Import national extraction FILES (.txt or .zip), all in one transaction."""
    from tqdm import tqdm

    from annuaire.importer import DirectoryFileError, import_files, total_size

    async def body(engine: Any, _sm: Any) -> list:
        bar = tqdm(
            total=total_size(files),
            unit="B",
            unit_scale=True,
            desc="import",
            disable=no_progress or as_json,
            file=sys.stderr,
        )
        try:
            return await import_files(engine, files, progress=bar.update)
        finally:
            bar.close()

    try:
        reports = _run(config, body)
    except DirectoryFileError as exc:
        raise click.ClickException(str(exc)) from exc

    def text() -> None:
        for r in reports:
            click.echo(
                f"{r.source} ({r.kind}, {r.encoding}): read {r.rows_read}, added {r.added}, "
                f"changed {r.changed}, removed {r.removed}, unchanged {r.unchanged}, "
                f"rejected {r.rejected_total}"
            )
            for reason, n in sorted(r.rejected.items()):
                lines = [str(ln) for ln, why, _ in r.rejected_lines if why == reason]
                more = " ..." if len(lines) < n else ""
                click.echo(
                    f"  rejected {reason}: {n} (lines {', '.join(lines[:20])}{more if len(lines) <= 20 else ' ...'})"
                )
            if r.duplicates:
                click.echo(f"  duplicates merged: {len(r.duplicates)}")
                for k, ls in list(r.duplicates.items())[:20]:
                    click.echo(f"    {k}: lines {', '.join(map(str, ls))}")
            if r.missing_columns:
                click.echo(f"  missing columns: {', '.join(r.missing_columns)}")

    _emit(as_json, [r.to_dict() for r in reports], text)


@annuaire.command()
@click.argument("address")
@_common
def resolve(address: str, config: Path | None, as_json: bool) -> None:
    """Show the mailbox at ADDRESS (local mailboxes first)."""
    from annuaire.search import Directory

    async def body(_engine: Any, sm: Any) -> Any:
        async with sm() as session:
            return await Directory(session).resolve(address)

    entry = _run(config, body)
    if entry is None:
        if as_json:
            click.echo("null")
        else:
            click.echo(f"{address}: not found", err=True)
        sys.exit(1)

    def text() -> None:
        for k, v in entry.to_dict().items():
            if v not in ("", [], False) or k in ("red_list",):
                click.echo(f"{k:18} {v}")

    _emit(as_json, entry.to_dict(), text)


@annuaire.command()
@click.option(
    "--name",
    default=None,
    help="Start of the name, accents and case ignored: of the surname (national rows, surname first) "
    "or of any word of the name (this operator's mailboxes).",
)
@click.option("--profession", default=None, help="Profession code (10 = Médecin) or label.")
@click.option("--specialty", default=None, help="Savoir-faire code (SM54) or label.")
@click.option("--postcode", default=None, help="Postcode or its prefix.")
@click.option("--department", default=None)
@click.option("--type", "type_", default=None, type=click.Choice(["PER", "ORG", "APP", "CAB"], case_sensitive=False))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@_common
def search(
    name: str | None,
    profession: str | None,
    specialty: str | None,
    postcode: str | None,
    department: str | None,
    type_: str | None,
    limit: int,
    config: Path | None,
    as_json: bool,
) -> None:
    """Search mailboxes; every given criterion must match."""
    from annuaire.search import Directory

    if not any((name, profession, specialty, postcode, department, type_)):
        raise click.UsageError("give at least one criterion")

    async def body(_engine: Any, sm: Any) -> list:
        async with sm() as session:
            return await Directory(session).search(
                name=name,
                profession=profession,
                specialty=specialty,
                postcode=postcode,
                department=department,
                type=type_,
                limit=limit,
            )

    entries = _run(config, body)

    def text() -> None:
        for e in entries:
            click.echo(f"{e.type:3} {e.address:45} {e.display_name:30} {e.profession_label:25} {e.postcode}")
        click.echo(f"{len(entries)} mailbox(es)", err=True)

    _emit(as_json, [e.to_dict() for e in entries], text)


@annuaire.group()
def whitelist() -> None:
    """Trust-space whitelist."""


@whitelist.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_common
def whitelist_import(file: Path, config: Path | None, as_json: bool) -> None:
    """Replace the whitelist by FILE (XML, //Domaine/Nom)."""
    from annuaire.whitelist import WhitelistError, import_whitelist

    async def body(engine: Any, _sm: Any) -> Any:
        return await import_whitelist(engine, file)

    try:
        report = _run(config, body)
    except WhitelistError as exc:
        raise click.ClickException(f"{file}: {exc}") from exc

    def text() -> None:
        click.echo(
            f"{report.source}: {report.domains} domains, added {report.added}, removed {report.removed}, "
            f"rejected {len(report.rejected)}"
        )
        for b in report.rejected:
            click.echo(f"  rejected: {b!r}")

    _emit(as_json, report.to_dict(), text)


@annuaire.command()
@click.option(
    "--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="File (default: stdout)."
)
@click.option("--include-red-list", is_flag=True, help="Also export red-listed mailboxes.")
@_common
def export(out: Path | None, include_red_list: bool, config: Path | None, as_json: bool) -> None:
    """Write this operator's mailboxes in the national mailbox layout."""
    import io

    from annuaire.export import export_local

    buf = io.StringIO()

    async def body(_engine: Any, sm: Any) -> int:
        async with sm() as session:
            return await export_local(session, buf, include_red_list=include_red_list)

    n = _run(config, body)
    if out is not None:
        out.write_text(buf.getvalue(), encoding="utf-8", newline="\n")
        _emit(as_json, {"rows": n, "out": str(out)}, lambda: click.echo(f"{n} mailbox(es) written to {out}"))
    elif as_json:
        click.echo(json.dumps({"rows": n, "content": buf.getvalue()}, ensure_ascii=False))
    else:
        click.echo(buf.getvalue(), nl=False)
