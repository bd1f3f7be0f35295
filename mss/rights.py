"""Who may do what on a mailbox: RFC 4314 rights, decided in the core.

RFC 4314 2.1 names eleven rights, one letter each:

    l lookup (LIST)              r read (SELECT, FETCH, SEARCH, STATUS, COPY from)
    s keep \\Seen                w write the other flags and keywords
    i insert (APPEND, COPY into) p post (submission to the folder's address: not used here)
    k create folders             x delete and rename folders
    t delete messages (\\Deleted) e expunge
    a administer (SETACL ...)

Who gets which:

- the owner of a PER mailbox, and a structure certificate on its own ORG or APP mailbox:
  every right but "a" (`OWNER`): rights are administered by the operator, with
  `mss mailbox grant` / `revoke`, never over IMAP;
- a professional (PS principal) on an ORG mailbox: the rights of their membership
  (`local_mailbox_member.rights`), whether they reach it in the shared namespace or by
  naming it as SASL authorization identity: the ACL holds whichever way;
- anyone else: nothing.

Named grants (`mss mailbox grant --rights`): `read` = "lrs" (see the folders, read, keep
their own \\Seen), `write` = "lrswikxte" (everything but "a": also flag, file in, delete
and expunge, and manage the folders: create, delete, rename), what `mss mailbox create
--member` gives and what existing members got from migration 0014 (they had full access
through the SASL authorization identity before). Letters may be given instead, checked
against RFC 4314 2.1.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mss.principal import Principal

#: RFC 4314 2.1, in the RFC's order (the order rights are written in).
RIGHTS = "lrswipkxtea"
#: Every right but administration: what an owner has.
OWNER = "lrswipkxte"
#: The named grants of `mss mailbox grant --rights`.
NAMED_RIGHTS: dict[str, str] = {"read": "lrs", "write": "lrswikxte"}
#: The rights that make a SELECT read-write (RFC 4314 5.2: READ-ONLY when none of them).
WRITE_RIGHTS = frozenset("stwie")

#: Which right changing a flag takes (RFC 4314 4, STORE): \\Seen "s", \\Deleted "t", any
#: other flag or keyword "w". These three letters are the flag classes.
_FLAG_RIGHT = {"\\Seen": "s", "\\Deleted": "t"}
FLAG_CLASSES = frozenset("stw")


def flag_right(flag: str) -> str:
    """The right (flag class) changing `flag` takes."""
    return _FLAG_RIGHT.get(flag, "w")


__all__ = [
    "FLAG_CLASSES",
    "NAMED_RIGHTS",
    "OWNER",
    "RIGHTS",
    "Access",
    "DirectoryRights",
    "RightsError",
    "canonical",
    "flag_right",
    "parse_rights",
]


class RightsError(ValueError):
    """Rights that are not RFC 4314 letters nor a named grant; the message says which."""


def canonical(letters: str) -> str:
    """`letters` in RFC order, each once."""
    return "".join(c for c in RIGHTS if c in letters)


def parse_rights(value: str) -> str:
    """A named grant (`read`, `write`) or RFC 4314 2.1 letters, as canonical letters.

    Raises RightsError for anything else, naming the unknown letters (the obsolete "c" and
    "d" of RFC 2086 included: RFC 4314 2.1.1 split them into "k" and "x", "t", "e")."""
    value = value.strip()
    if value.lower() in NAMED_RIGHTS:
        return NAMED_RIGHTS[value.lower()]
    if not value:
        raise RightsError("no rights given: use read, write or RFC 4314 letters (lrswipkxte)")
    unknown = sorted({c for c in value if c not in RIGHTS})
    if unknown:
        hint = " (c and d are RFC 2086's: use k, or x, t and e, RFC 4314 2.1.1)" if set(unknown) & set("cd") else ""
        raise RightsError(
            f"unknown right(s) {''.join(unknown)!r}: use read, write or RFC 4314 letters among {RIGHTS}{hint}"
        )
    if "a" in value:
        raise RightsError("'a' (administration) is the operator's: mss mailbox grant/revoke")
    return canonical(value)


@dataclass(frozen=True)
class Access:
    """What a principal may do on one mailbox: its rights, and whose \\Seen it sees.

    `reader`: the member (idNat_PS) whose own \\Seen is kept and shown (RFC 4314 4: \\Seen
    is per user on a shared mailbox); None for the owner, who uses the mailbox-wide \\Seen."""

    rights: str
    reader: str | None = None

    def has(self, right: str) -> bool:
        return right in self.rights


class DirectoryRights:
    """`mss.services.MailboxRights` over the directory tables (`local_mailbox`,
    `local_mailbox_member`). Read at every `MailAccess.open`, and again by an open handle
    (`mss.services.RIGHTS_TTL`), so a grant or revoke reaches open sessions too."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def access(self, principal: Principal, mailbox: str) -> Access:
        """The principal's rights on `mailbox` (module docstring); `Access("")` for none.

        One indexed query (the mailbox's row, outer-joined to the memberships of the
        professional's PER mailboxes in it): what an open handle asks again every
        `mss.services.RIGHTS_TTL` seconds."""
        from annuaire.model import LocalMailbox, LocalMailboxMember

        address = mailbox.lower()
        if not principal.may_open(address):
            return Access("")
        person = select(LocalMailbox.address).where(LocalMailbox.idnat == principal.identifier)
        async with self._sessions() as s:
            rows = (
                await s.execute(
                    select(LocalMailbox.type, LocalMailboxMember.rights)
                    .select_from(LocalMailbox)
                    .outerjoin(
                        LocalMailboxMember,
                        and_(
                            LocalMailboxMember.mailbox == LocalMailbox.address,
                            LocalMailboxMember.member.in_(person.scalar_subquery()),
                        ),
                    )
                    .where(LocalMailbox.address == address)
                )
            ).all()
        if rows and rows[0].type == "ORG" and principal.kind == "PS":
            return Access(canonical("".join(r.rights or "" for r in rows)), reader=principal.identifier)
        if not principal.may_use(address):
            return Access("")  # kept only to be read as a member: not an ORG mailbox
        return Access(OWNER)

    async def shared(self, principal: Principal) -> dict[str, Access]:
        """The ORG mailboxes this professional is a member of with the "l" right, by address
        (none for a structure certificate, nor once narrowed to another mailbox than its own
        PER one: `Principal.shared_candidates`)."""
        from annuaire.model import LocalMailbox, LocalMailboxMember

        candidates = principal.shared_candidates
        if principal.kind != "PS" or not candidates:
            return {}
        person = select(LocalMailbox.address).where(LocalMailbox.idnat == principal.identifier)
        async with self._sessions() as s:
            rows = (
                await s.execute(
                    select(LocalMailboxMember.mailbox, LocalMailboxMember.rights).where(
                        LocalMailboxMember.member.in_(person)
                    )
                )
            ).all()
        found: dict[str, str] = {}
        for address, rights in rows:
            found[address] = found.get(address, "") + (rights or "")
        return {
            a: Access(canonical(r), reader=principal.identifier)
            for a, r in sorted(found.items())
            if "l" in r and a in candidates
        }
