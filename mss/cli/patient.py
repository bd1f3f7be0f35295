"""`mss patient`: the operator's side of the patient space (issue "Patient space").

`create` prints the activation code once: the space's private key is wrapped under a key
only that code (then the patient's password) derives, and the server keeps neither. Every
command takes `-c` and `--json`; a bad INS is refused with the check that failed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import click

from mss.cli.common import config_option, emit, json_option, load, run

T = TypeVar("T")


@asynccontextmanager
async def _spaces(settings) -> AsyncIterator[object]:
    """A PatientSpaces over the configured database (schema brought up to date), and its
    store's committer stopped when done."""
    from mss.db.engine import create_engine, sessionmaker, upgrade
    from mss.patients import PatientSpaces
    from mss.store import Store

    url = settings.resolved_database_url
    await upgrade(url)
    engine = create_engine(url)
    sessions = sessionmaker(engine)
    store = Store(sessions)
    try:
        yield PatientSpaces(settings, sessions, store)
    finally:
        await store.close()
        await engine.dispose()


def _call(config: Path | None, work: Callable[[object], Awaitable[T]]) -> T:
    from mss.refusals import Refusal

    settings = load(config)

    async def go() -> T:
        async with _spaces(settings) as spaces:
            return await work(spaces)

    try:
        return run(go())
    except Refusal as exc:
        raise click.ClickException(exc.public) from exc


def _lines(record) -> list[str]:
    out = [
        f"{record.ins}  {record.address}",
        f"  name: {record.name or '-'}   e-mail: {record.email or '-'}   state: {record.state}",
        f"  created {record.created_at:%Y-%m-%d %H:%M}"
        + (f", activated {record.activated_at:%Y-%m-%d %H:%M}" if record.activated_at else "")
        + (f", {record.state} {record.closed_at:%Y-%m-%d %H:%M}" if record.closed_at else ""),
    ]
    if record.blocked:
        out.append("  blocked: " + ", ".join(record.blocked))
    return out


@click.group()
def patient() -> None:
    """Patient spaces: create, import, list, show, oppose, close, block, journal."""


@patient.command("create")
@click.argument("ins")
@click.option("--email", required=True, help="The patient's personal e-mail, for arrival notifications.")
@click.option("--name", default="", help="Display name.")
@config_option
@json_option
def create(ins: str, email: str, name: str, config: Path | None, as_json: bool) -> None:
    """Register a patient space; prints its activation code ONCE."""
    record, code = _call(config, lambda s: s.create(ins, email=email, name=name))
    doc = {**record.to_dict(), "activation_code": code}
    emit(
        as_json,
        doc,
        [
            f"patient space {record.address} created (pending until the patient activates it)",
            f"activation code (shown once, give it to the patient): {code}",
        ],
    )


@patient.command("import")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@config_option
@json_option
def import_(file: Path, config: Path | None, as_json: bool) -> None:
    """Register every `ins,email,name` row of a CSV file; prints the activation codes once."""
    report = _call(config, lambda s: s.import_csv(file))
    doc = {"created": report.created, "rejected": report.rejected}
    lines = [f"created {len(report.created)}, rejected {sum(len(v) for v in report.rejected.values())}"]
    lines += [f"  {c['ins']}  {c['address']}  activation code {c['activation_code']}" for c in report.created]
    lines += [f"  rejected ({reason}): lines {', '.join(map(str, n))}" for reason, n in sorted(report.rejected.items())]
    emit(as_json, doc, lines)


@patient.command("list")
@config_option
@json_option
def list_(config: Path | None, as_json: bool) -> None:
    """Every patient space and its state."""
    records = _call(config, lambda s: s.list())
    emit(
        as_json,
        {"patients": [r.to_dict() for r in records]},
        [f"{r.ins}  {r.state:8}  {r.address}  {r.name}" for r in records] or ["no patient space"],
    )


def _one(config: Path | None, ins: str):
    record = _call(config, lambda s: s.get(ins))
    if record is None:
        raise click.ClickException(f"no patient space for {ins}")
    return record


@patient.command("show")
@click.argument("ins")
@config_option
@json_option
def show(ins: str, config: Path | None, as_json: bool) -> None:
    """One patient space."""
    record = _one(config, ins)
    emit(as_json, record.to_dict(), _lines(record))


@patient.command("oppose")
@click.argument("ins")
@config_option
@json_option
def oppose(ins: str, config: Path | None, as_json: bool) -> None:
    """The person opposes their space: its keys and mail are destroyed, mail is refused."""
    record = _call(config, lambda s: s.oppose(ins))
    emit(as_json, record.to_dict(), [f"patient space {record.address} opposed: keys and messages destroyed"])


@patient.command("close")
@click.argument("ins")
@config_option
@json_option
def close(ins: str, config: Path | None, as_json: bool) -> None:
    """Close a space: crypto-shredded (wrapped key first, then messages and journal)."""
    record = _call(config, lambda s: s.close(ins))
    emit(as_json, record.to_dict(), [f"patient space {record.address} closed: keys and messages destroyed"])


@patient.command("block")
@click.argument("ins")
@click.option("--professional", required=True, help="The professional's mailbox address.")
@config_option
@json_option
def block(ins: str, professional: str, config: Path | None, as_json: bool) -> None:
    """Refuse mail from one professional to this patient."""

    async def work(s):
        await s.block(ins, professional)
        return await s.get(ins)

    record = _call(config, work)
    emit(as_json, record.to_dict(), [f"{professional} blocked for {record.address}"])


@patient.command("unblock")
@click.argument("ins")
@click.option("--professional", required=True)
@config_option
@json_option
def unblock(ins: str, professional: str, config: Path | None, as_json: bool) -> None:
    """Accept mail from that professional again."""

    async def work(s):
        await s.unblock(ins, professional)
        return await s.get(ins)

    record = _call(config, work)
    emit(as_json, record.to_dict(), [f"{professional} unblocked for {record.address}"])


@patient.command("journal")
@click.argument("ins")
@config_option
@json_option
def journal(ins: str, config: Path | None, as_json: bool) -> None:
    """The space's access journal: who did what, when (no message content)."""
    entries = _call(config, lambda s: s.journal(ins))
    emit(
        as_json,
        {"ins": ins, "journal": [e.to_dict() for e in entries]},
        [f"{e.at:%Y-%m-%d %H:%M:%S}  {e.actor_kind:12} {e.actor or '-':40} {e.action} {e.detail}" for e in entries]
        or ["empty journal"],
    )
