"""IMAP command handlers, one module per family, and the table the session dispatches with.

A handler is `async def handler(session: Session, cmd: <its command class>) -> list[...]`:
responses (ending with the tagged completion) and, for STARTTLS, the `StartTLS` action. It
calls the core through the session's `MailboxHandle` (`session.box`) and
`session.core.credentials`, and reports what happened to the session's state with
`session.apply(event)` (`imap.state`); it never touches sockets and never sets a state.

`HANDLERS` is keyed by command class (`imap.protocol.grammar.COMMANDS` maps names to
classes), so no command name is written here. This module imports the session type for
typing only: the session imports this table, not the other way round.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from imap.actions import Output
from imap.commands import acl, append, auth, fetch, idle, listing, mailbox, misc, quota, search, sort, store
from imap.protocol import commands as c

if TYPE_CHECKING:
    from imap.session import Session

C = TypeVar("C", bound=c.Command)

#: A handler as the session calls it: any command in, outputs out.
Handler = Callable[["Session", c.Command], Awaitable[Sequence[Output]]]


def _bind(
    cls: type[C], handler: Callable[[Session, C], Awaitable[Sequence[Output]]]
) -> tuple[type[c.Command], Handler]:
    """One table entry: `handler` typed for `cls`, called only with instances of it."""

    async def run(session: Session, cmd: c.Command) -> Sequence[Output]:
        if not isinstance(cmd, cls):  # pragma: no cover - the table is keyed by type(cmd)
            raise TypeError(f"{handler.__qualname__} takes {cls.__name__}, not {type(cmd).__name__}")
        return await handler(session, cmd)

    return cls, run


HANDLERS: Mapping[type[c.Command], Handler] = dict(
    [
        _bind(c.Capability, misc.capability),
        _bind(c.Noop, misc.noop),
        _bind(c.Check, misc.noop),
        _bind(c.Logout, misc.logout),
        _bind(c.Id, misc.id_),
        _bind(c.Enable, misc.enable),
        _bind(c.StartTls, auth.starttls),
        _bind(c.Authenticate, auth.authenticate),
        _bind(c.Login, auth.login),
        _bind(c.Namespace, mailbox.namespace),
        _bind(c.Select, mailbox.select),
        _bind(c.Unselect, mailbox.unselect),
        _bind(c.Create, listing.create),
        _bind(c.Delete, mailbox.delete),
        _bind(c.Rename, mailbox.rename),
        _bind(c.Subscribe, mailbox.subscribe),
        _bind(c.List, listing.list_),
        _bind(c.Status, mailbox.status),
        _bind(c.Append, append.append),
        _bind(c.Idle, idle.idle),
        _bind(c.GetQuota, quota.getquota),
        _bind(c.GetQuotaRoot, quota.getquotaroot),
        _bind(c.SetQuota, quota.setquota),
        _bind(c.Acl, acl.acl),
        _bind(c.Expunge, store.expunge),
        _bind(c.Search, search.search),
        _bind(c.Sort, sort.sort),
        _bind(c.Thread, sort.thread),
        _bind(c.Fetch, fetch.fetch),
        _bind(c.Store, store.store),
        _bind(c.Copy, store.copy),
    ]
)
