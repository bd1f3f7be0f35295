"""GETQUOTA, GETQUOTAROOT and SETQUOTA (RFC 9208 4.1-4.3): each mailbox (BAL) is one quota
root shared by all its folders, named "" for the session's own mailbox (an empty string is
a valid root name, RFC 9208 3.1) and, for a shared ORG mailbox, after its namespace prefix
(`Partagés/<address>`, in the session's name encoding): GETQUOTA of it answers the ORG
mailbox's usage; its resources are STORAGE (the stored ciphertext, in units of 1024 octets, RFC 9208
5.1) and MESSAGE (messages in all its folders, 5.2).

A resource without a limit is not listed (a QUOTA response has no form for "unlimited");
with neither limited, the mailbox has no quota root: GETQUOTAROOT names none, GETQUOTA ""
answers NO. Limits are the operator's (`mss mailbox quota`): SETQUOTA is answered
NO [NOPERM], and QUOTASET is not advertised. Writes that do not fit are refused by the core
with NO [OVERQUOTA] (RFC 9208 4.3, RFC 5530), whichever command made them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from imap.names import outgoing
from imap.protocol.commands import GetQuota, GetQuotaRoot, SetQuota
from imap.protocol.response import Atom, Data, Response, Value, no, ok
from mss.records import Quota

if TYPE_CHECKING:
    from imap.session import Session

#: The one quota root of every mailbox.
ROOT = ""


def kib(octets: int) -> int:
    """Octets in the STORAGE unit, rounded up: usage is never shown smaller than it is."""
    return -(-octets // 1024)


def quota_response(q: Quota, root: Value = ROOT) -> Data | None:
    """`* QUOTA "" (STORAGE used limit MESSAGE used limit)` (RFC 9208 5.1), or None when no
    resource is limited. The storage limit is rounded down: never more room than there is."""
    resources: list[Value] = []
    if q.storage_limit:
        resources += [Atom("STORAGE"), kib(q.storage_used), q.storage_limit // 1024]
    if q.messages_limit:
        resources += [Atom("MESSAGE"), q.messages_used, q.messages_limit]
    return Data(Atom("QUOTA"), root, resources) if resources else None


async def getquotaroot(session: Session, cmd: GetQuotaRoot) -> list[Response]:
    """RFC 9208 4.3: the folder's quota roots, then each root's QUOTA response."""
    info = await session.box.folder(cmd.mailbox)
    if info is None:
        return [no(cmd.tag, f"No folder {cmd.mailbox}", "NONEXISTENT")]
    root = outgoing(session.box.quota_root(info), session.utf8_names)
    name = outgoing(info.name, session.utf8_names)
    quota = quota_response(await session.box.quota_of(info), root)
    if quota is None:
        return [Data(Atom("QUOTAROOT"), name), ok(cmd.tag, "GETQUOTAROOT completed")]
    return [Data(Atom("QUOTAROOT"), name, root), quota, ok(cmd.tag, "GETQUOTAROOT completed")]


async def getquota(session: Session, cmd: GetQuota) -> list[Response]:
    """RFC 9208 4.2: a root that does not exist is answered NO."""
    q = await session.box.quota_of_root(cmd.root)
    quota = None if q is None else quota_response(q, outgoing(cmd.root, session.utf8_names))
    if quota is None:
        return [no(cmd.tag, f"No quota root {cmd.root!r}", "NONEXISTENT")]
    return [quota, ok(cmd.tag, "GETQUOTA completed")]


async def setquota(session: Session, cmd: SetQuota) -> list[Response]:
    """RFC 9208 4.1: limits are set by the operator only; nothing changes."""
    return [no(cmd.tag, "Quotas are set by the operator", "NOPERM")]
