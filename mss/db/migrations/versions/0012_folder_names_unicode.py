"""Folder names kept in modified UTF-7 become the Unicode names they stand for.

Until now the IMAP front end stored a folder name as the client sent it, so a folder that an
IMAP4rev1 client (Thunderbird, Outlook, Apple Mail) created as `Envoy&AOk-s` was kept so. The
front end now converts at the edge (RFC 3501 5.1.3 for rev1 clients, UTF-8 after
UTF8=ACCEPT, RFC 6855) and the core keeps Unicode: `Envoyés`. A name that is the canonical
modified UTF-7 of another is renamed to it, unless that name is taken in the same mailbox;
names that are not valid modified UTF-7 (`A&B`) stay as they are (they are read back as
UTF-8, as before). The decoder is a frozen copy of `imap.mutf7.decode`: a migration does not
follow later changes to the code.

Downgrade leaves the names as Unicode: the code before this shows them as they are.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import binascii
import re

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_ENCODED = re.compile(rb"&([^-]*)-")
_B64 = re.compile(rb"[A-Za-z0-9+,]*")


def _decode(wire: str) -> str | None:
    """The name a canonical modified UTF-7 string stands for, or None if it is not one."""
    if re.search(r"[^\x20-\x7e]", wire):
        return None
    raw = wire.encode("ascii")
    out: list[str] = []
    pos = 0
    for m in _ENCODED.finditer(raw):
        out.append(raw[pos : m.start()].decode("ascii"))
        pos = m.end()
        b64 = m.group(1)
        if not b64:
            out.append("&")
            continue
        if not _B64.fullmatch(b64) or len(b64) % 4 == 1:
            return None
        try:
            text = binascii.a2b_base64(b64.replace(b",", b"/") + b"=" * (-len(b64) % 4), strict_mode=True).decode(
                "utf-16-be"
            )
        except (binascii.Error, UnicodeDecodeError):
            return None
        if not text or any("\x20" <= c <= "\x7e" for c in text):
            return None
        out.append(text)
    rest = raw[pos:]
    if b"&" in rest:
        return None
    out.append(rest.decode("ascii"))
    return "".join(out)


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, mailbox, name FROM folder WHERE name LIKE '%&%'")).all()
    taken = {(m, n) for m, n in bind.execute(sa.text("SELECT mailbox, name FROM folder")).all()}
    for fid, mailbox, name in sorted(rows, key=lambda r: r[0]):
        new = _decode(name)
        if new is None or new == name or (mailbox, new) in taken:
            continue
        bind.execute(sa.text("UPDATE folder SET name = :n WHERE id = :i"), {"n": new, "i": fid})
        taken.discard((mailbox, name))
        taken.add((mailbox, new))


def downgrade() -> None:
    pass
