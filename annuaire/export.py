"""`annuaire export`: this operator's own mailboxes in the national mailbox layout.

31 pipe-separated columns with the national header, a trailing `|` on every line, UTF-8,
CRLF-free; the file the national importer (ours included) reads back. Red-listed mailboxes
are left out unless asked: the extraction is public.
"""

from __future__ import annotations

from typing import TextIO

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from annuaire.model import LocalMailbox
from annuaire.national import MAILBOX_FIELDS, NationalMailbox


def _clean(v: object) -> str:
    s = "" if v is None else str(v)
    return s.replace("|", " ").replace("\r", " ").replace("\n", " ")


def header_line() -> str:
    return "|".join(h for _, h in MAILBOX_FIELDS) + "|"


async def export_local(session: AsyncSession, out: TextIO, *, include_red_list: bool = False) -> int:
    """Write the local mailboxes to `out`; returns how many rows were written."""
    q = select(LocalMailbox).order_by(LocalMailbox.address)
    if not include_red_list:
        q = q.where(LocalMailbox.red_list.is_(False))
    locals_ = list((await session.execute(q)).scalars())
    national = (
        {
            m.address: m
            for m in (
                await session.execute(
                    select(NationalMailbox).where(NationalMailbox.address.in_([lm.address for lm in locals_]))
                )
            ).scalars()
        }
        if locals_
        else {}
    )
    out.write(header_line() + "\n")
    for lm in locals_:
        row = {f: "" for f, _ in MAILBOX_FIELDS}
        nat = national.get(lm.address)
        if nat is not None:  # descriptive fields the local table does not keep
            for f, _ in MAILBOX_FIELDS:
                v = getattr(nat, f)
                row[f] = ("True" if v else "False") if isinstance(v, bool) else v
        idnat = lm.idnat or ""
        sid = lm.structure_id or ""
        row.update(type=lm.type, address=lm.address)
        if idnat:
            row.update(idnat=idnat, pp_type=idnat[0], pp_id=idnat[1:])
        if sid:
            row.update(structure_id=sid, structure_type=sid[0])
        if lm.type == "PER":
            if not (row["last_name"] or row["first_name"]):
                first, _, last = (lm.display_name or "").strip().rpartition(" ")
                row.update(last_name=last, first_name=first)
        elif lm.display_name:
            row["service"] = lm.display_name
        row["dematerialisation"] = row["dematerialisation"] or "False"
        out.write("|".join(_clean(row[f]) for f, _ in MAILBOX_FIELDS) + "|\n")
    return len(locals_)
