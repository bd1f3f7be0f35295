"""Options and helpers shared by the `mss` command groups.

Every command takes `-c/--config` (default `$MSS_CONFIG`, else `./mss.toml`) and, where it prints
results, `--json` (one JSON document on stdout, nothing else there: scripts parse it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from crypto.dates import as_utc

F = TypeVar("F", bound=Callable[..., Any])


def config_option(f: F) -> F:
    return click.option(
        "-c",
        "--config",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="mss.toml (default $MSS_CONFIG or ./mss.toml)",
    )(f)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")(f)


def load(config: Path | None):  # -> mss.config.Settings
    from mss.config import load_settings

    try:
        return load_settings(config)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    except ValueError as exc:  # pydantic ValidationError is a ValueError
        raise click.ClickException(f"invalid configuration: {exc}") from exc


def emit(as_json: bool, doc: Any, lines: Iterable[str] = ()) -> None:
    if as_json:
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False, default=str))
    else:
        for line in lines:
            click.echo(line)


def parse_when(value: str | None, *, end_of_day: bool = False) -> datetime | None:
    """ISO date or date-time; naive values are UTC."""
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"not an ISO date: {value!r}") from exc
    if len(value) == 10 and end_of_day:
        when = when.replace(hour=23, minute=59, second=59)
    return as_utc(when)  # a date typed without an offset is UTC


def run(coro):
    return asyncio.run(coro)


@asynccontextmanager
async def database(settings) -> AsyncIterator[Any]:
    """A sessionmaker on the configured database, schema brought up to date first."""
    from mss.db.engine import create_engine, sessionmaker, upgrade

    url = settings.resolved_database_url
    await upgrade(url)
    engine = create_engine(url)
    try:
        yield sessionmaker(engine)
    finally:
        await engine.dispose()
