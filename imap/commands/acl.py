"""The RFC 4314 3 commands: MYRIGHTS, GETACL, LISTRIGHTS, SETACL, DELETEACL.

Rights are decided in the core (`mss.rights`) and administered by the operator only
(`mss mailbox grant` / `revoke`): nobody holds the "a" right over IMAP. So MYRIGHTS answers
for any folder the user can list (RFC 4314 3.5: `* MYRIGHTS <mailbox> <rights>`), and
GETACL, LISTRIGHTS (which need "a", RFC 4314 4), SETACL and DELETEACL are answered
`NO [NOPERM]` (RFC 5530), pointing at the operator. A name that is not a folder of the
session is `NO [NONEXISTENT]`, whoever asks, so a non-member learns nothing of a shared
mailbox's folders.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from imap.names import outgoing
from imap.protocol.commands import Acl
from imap.protocol.response import Atom, Data, Response, no, ok

if TYPE_CHECKING:
    from imap.session import Session

#: The public text of every refusal for want of the "a" right.
OPERATOR = "Rights are administered by the operator (mss mailbox grant / mss mailbox revoke)"


async def acl(session: Session, cmd: Acl) -> list[Response]:
    box = session.box
    info = await box.folder(cmd.mailbox)
    if info is None:
        return [no(cmd.tag, f"No folder {cmd.mailbox}", "NONEXISTENT")]
    rights = box.rights_of(info)
    if cmd.name == "MYRIGHTS":
        if not rights:  # RFC 4314 4: MYRIGHTS is answered with any right at all
            return [no(cmd.tag, f"No folder {cmd.mailbox}", "NONEXISTENT")]
        wire = outgoing(info.name, session.utf8_names)
        return [Data(Atom("MYRIGHTS"), wire, Atom(rights)), ok(cmd.tag, "MYRIGHTS completed")]
    # GETACL and LISTRIGHTS need "a" (RFC 4314 4); SETACL and DELETEACL change the ACL.
    return [no(cmd.tag, f"{cmd.name}: {OPERATOR}", "NOPERM")]
