"""Mailbox names at the edge of the session: modified UTF-7 for IMAP4rev1 clients (RFC 3501
5.1.3), UTF-8 once UTF8=ACCEPT (RFC 6855 3) or IMAP4rev2 (RFC 9051 5.1) is enabled.

Every command that names a mailbox has its names turned into the core's Unicode names here,
before its handler runs (`incoming`); every response that names one writes it with `outgoing`.
Handlers see and the core keeps only Unicode names.
"""

from __future__ import annotations

import dataclasses

from imap import mutf7
from imap.protocol.commands import (
    Acl,
    Append,
    Command,
    Copy,
    Create,
    Delete,
    GetQuota,
    GetQuotaRoot,
    List,
    Rename,
    Select,
    Status,
    Subscribe,
)
from imap.protocol.response import Utf8Quoted, Value

#: The fields of each command that hold a mailbox name (or a LIST reference or pattern).
_NAME_FIELDS: dict[type[Command], tuple[str, ...]] = {
    Select: ("mailbox",),
    Create: ("mailbox",),
    Delete: ("mailbox",),
    Rename: ("mailbox", "new"),
    Subscribe: ("mailbox",),
    Status: ("mailbox",),
    Append: ("mailbox",),
    Copy: ("mailbox",),
    List: ("reference", "patterns"),
    GetQuotaRoot: ("mailbox",),
    GetQuota: ("root",),  # a shared mailbox's root is named after its namespace prefix
    Acl: ("mailbox",),
}

Mutf7Error = mutf7.Mutf7Error


def _from_mutf7(name: str) -> str:
    """A rev1 name: 7-bit names are modified UTF-7; a name with 8-bit (sent as UTF-8 by a
    client that does not follow RFC 3501 5.1.3) is taken as it is, as this server always has."""
    if not name.isascii():
        return name
    decoded = mutf7.decode(name)
    return "INBOX" if decoded.upper() == "INBOX" else decoded


def incoming(cmd: Command, utf8: bool) -> Command:
    """`cmd` with its mailbox names as the core knows them. Raises Mutf7Error (a BAD) for a
    7-bit name that is not valid modified UTF-7, when the session speaks it."""
    fields = _NAME_FIELDS.get(type(cmd))
    if utf8 or not fields:
        return cmd
    changes: dict[str, object] = {}
    for f in fields:
        value = getattr(cmd, f)
        changes[f] = tuple(_from_mutf7(v) for v in value) if isinstance(value, tuple) else _from_mutf7(value)
    return dataclasses.replace(cmd, **changes)


def outgoing(name: str, utf8: bool) -> Value:
    """A name for a response: UTF-8, quoted when it can be (RFC 6855 3 quoted =/ uQUOTED-CHAR;
    RFC 9051 4.3), or modified UTF-7."""
    return Utf8Quoted(name) if utf8 else mutf7.encode(name)
