"""`mss audit`: check, export and anchor the tamper-evident audit trail (mss.audit).

`verify` walks the hash chain and names every row that does not fit (exit 1); `--anchor FILE`
also proves the chain still reaches an anchor exported earlier, which is what catches a tail
cut off. `export --since` / `--after-seq` writes the events as JSON lines. `anchor` prints the
last seq and hash of a day, to keep away from the database (docs/operations.md, "Audit trail").

They only read: a forensic check must not change what it examines, so none of them migrates
the schema (unlike the other commands); a schema that is not at the newest migration is an
error that names both revisions.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from pathlib import Path

import click

from mss.cli.common import config_option, emit, json_option, load, parse_when, run

#: How many problems `verify` prints (all are in --json).
_SHOWN = 20


def _anchor_key(settings) -> bytes | None:
    path = settings.audit.anchor_key_file
    if path is None:
        return None
    try:
        key = settings.path(path).read_bytes().strip()
    except OSError as exc:
        raise click.ClickException(f"[audit] anchor_key_file: {exc}") from exc
    if len(key) < 16:
        raise click.ClickException("[audit] anchor_key_file: the key must be at least 16 bytes")
    return key


@asynccontextmanager
async def database(settings) -> AsyncIterator:
    """A sessionmaker on the configured database as it is: never migrated, never created (a
    missing SQLite file is an error, not a new empty database), and refused unless its schema
    is at the newest migration (the revision `mss status` checks)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import make_url

    from mss.db.engine import _alembic_config, create_engine, is_sqlite, sessionmaker

    url = settings.resolved_database_url
    shown = make_url(url).render_as_string(hide_password=True)
    if is_sqlite(url):
        path = make_url(url).database or ""
        if path and path != ":memory:" and not Path(path).is_file():  # noqa: ASYNC240 - one stat
            raise click.ClickException(f"{shown}: the database file does not exist")
    head = ScriptDirectory.from_config(_alembic_config(url)).get_current_head()
    engine = create_engine(url)
    try:
        try:
            async with engine.connect() as conn:
                current = await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
        except Exception as exc:  # whatever the driver raises is the finding
            raise click.ClickException(f"{shown}: unreachable: {type(exc).__name__}: {exc}") from exc
        if current != head:
            raise click.ClickException(
                f"{shown}: schema at {current or 'nothing'}, the newest is {head}: the audit commands do not "
                "migrate the database they examine (run `mss db upgrade` first if that is intended)"
            )
        yield sessionmaker(engine)
    finally:
        await engine.dispose()


@click.group()
def audit() -> None:
    """Tamper-evident audit trail: verify the chain, export events, anchor a day."""


@audit.command("verify")
@click.option(
    "--anchor",
    "anchor_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="An anchor written by `mss audit anchor`: the chain must still reach it unchanged.",
)
@config_option
@json_option
def verify(anchor_file: Path | None, config: Path | None, as_json: bool) -> None:
    """Walk the hash chain; name each modified, inserted or deleted row; exit 1 if any."""
    from mss import audit as trail

    settings = load(config)
    anchor_doc = None
    if anchor_file is not None:
        try:
            anchor_doc = json.loads(anchor_file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise click.ClickException(f"{anchor_file}: not JSON: {exc}") from exc
        bad = trail.check_anchor_document(anchor_doc if isinstance(anchor_doc, dict) else {}, _anchor_key(settings))
        if bad:
            raise click.ClickException(f"{anchor_file}: {'; '.join(bad)}")

    async def go():
        async with database(settings) as sessions:
            return await trail.verify(sessions, anchor_doc)

    result = run(go())
    lines = []
    if result.ok:
        lines.append(f"audit chain ok: {result.events} events, last seq {result.last} hash {result.last_hash}")
        if anchor_doc is not None:
            lines.append(f"  reaches the anchor seq {anchor_doc['seq']} unchanged")
    else:
        lines.append(f"audit chain BROKEN: {len(result.problems)} problem(s) in {result.events} events")
        lines += [f"  {p}" for p in result.problems[:_SHOWN]]
        if len(result.problems) > _SHOWN:
            lines.append(f"  ... and {len(result.problems) - _SHOWN} more (--json lists them all)")
    emit(as_json, result.to_dict(), lines)
    if not result.ok:
        sys.exit(1)


@audit.command("export")
@click.option(
    "--since",
    default=None,
    help="ISO 8601 date or date-time (naive: UTC): events with `at` from then; `at` is not commit order.",
)
@click.option(
    "--after-seq",
    type=click.IntRange(min=0),
    default=None,
    help="Only events with a seq above N (the last one exported, or the last anchor's): for incremental exports.",
)
@click.option(
    "--out", type=click.Path(path_type=Path, dir_okay=False), default=None, help="File to write (default stdout)."
)
@config_option
def export(since: str | None, after_seq: int | None, out: Path | None, config: Path | None) -> None:
    """Write the events (since SINCE, after seq N) as JSON lines, in seq order."""
    from mss import audit as trail

    settings = load(config)
    start = parse_when(since)

    async def go(fh) -> int:
        n = 0
        async with database(settings) as sessions:
            async for event in trail.export(sessions, start, after_seq=after_seq):
                fh.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")
                n += 1
        return n

    if out is None:
        run(go(sys.stdout))
        return
    tmp = out.with_name(out.name + ".part")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            n = run(go(fh))
    except BaseException:
        tmp.unlink(missing_ok=True)  # no half-written export left behind
        raise
    tmp.replace(out)
    click.echo(f"{n} events written to {out}", err=True)


@audit.command("anchor")
@click.option("--day", default=None, help="YYYY-MM-DD (UTC): the last event of that day; default: the newest.")
@click.option(
    "--out", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Also write the anchor to this file."
)
@config_option
def anchor(day: str | None, out: Path | None, config: Path | None) -> None:
    """Print the anchor (last seq and hash) of a day, as JSON, to keep outside the database."""
    from mss import audit as trail

    settings = load(config)
    when: date | None = None
    if day is not None:
        try:
            when = date.fromisoformat(day)
        except ValueError as exc:
            raise click.BadParameter(f"not a date (YYYY-MM-DD): {day!r}", param_hint="--day") from exc
        if when > datetime.now(UTC).date():
            raise click.BadParameter(f"{day} is in the future", param_hint="--day")
    key = _anchor_key(settings)

    async def go() -> dict:
        async with database(settings) as sessions:
            return await trail.anchor(sessions, day=when, domain=settings.domain, key=key)

    doc = run(go())
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    if out is not None:
        out.write_text(text + "\n", encoding="utf-8")
    emit(False, doc, [text])
