"""Listing folders and creating them: LIST (RFC 9051 6.3.9) with the RFC 5258 LIST-EXTENDED
selection and return options, RETURN (STATUS) (RFC 5819 LIST-STATUS), LSUB (RFC 3501
6.3.9), and CREATE with `USE (...)` (RFC 6154 CREATE-SPECIAL-USE).

Subscriptions are a property of a folder in MSS (`FolderInfo.subscribed`): a name cannot be
subscribed unless its folder exists, and DELETE removes the subscription with the folder. So
LIST (SUBSCRIBED) never has a subscribed name that does not exist to answer with
`\\NonExistent`; `\\NonExistent` goes to the parents that exist only as part of a deeper name
(`a` when only `a/b` exists), which rev1 clients see as `\\Noselect`.

CREATE subscribes the new folder. RFC 9051 6.3.4 lets a server do either; Dovecot does not,
but most clients (Thunderbird's default "show only subscribed folders" included) otherwise
hide a folder another client just made, and a folder is unsubscribed with one command.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from imap.commands.mailbox import MAX_PATTERN, MAX_PATTERNS, Pattern, status_values
from imap.names import outgoing
from imap.protocol.commands import Create, List
from imap.protocol.response import Atom, Data, Response, Value, bad, no, ok
from mss.records import DELIMITER, FolderInfo
from mss.refusals import Refusal

if TYPE_CHECKING:
    from imap.session import Session

#: RFC 5258 3.1 selection options and RFC 6154 4 SPECIAL-USE; others are answered BAD.
SELECT_OPTIONS = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
#: RFC 5258 3.2 return options, RFC 5819 STATUS and RFC 6154 SPECIAL-USE.
RETURN_OPTIONS = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})
#: The RFC 6154 2 uses a folder can be created with. `\All` and `\Flagged` name virtual
#: folders (every message, every flagged one) that MSS does not have.
CREATABLE_USES = ("\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash")

#: A selection criterion: whether a name (its folder, None if it does not exist) meets it.
Criterion = Callable[[FolderInfo | None], bool]
_CRITERIA: dict[str, Criterion] = {
    "SUBSCRIBED": lambda f: f is not None and f.subscribed,
    "SPECIAL-USE": lambda f: f is not None and f.special_use is not None,
}


def _option_problem(cmd: List) -> str | None:
    """Why the options cannot be honoured (RFC 5258 3: a BAD), None when they can."""
    unknown = [o for o in cmd.select if o not in SELECT_OPTIONS] + [o for o in cmd.return_ if o not in RETURN_OPTIONS]
    if unknown:
        return f"Unknown LIST option {unknown[0]}"
    if "RECURSIVEMATCH" in cmd.select and not set(cmd.select) & set(_CRITERIA):
        # RFC 5258 3.1: RECURSIVEMATCH alone (or with REMOTE only) is a syntax error.
        return "RECURSIVEMATCH needs another selection option"
    return None


async def list_(session: Session, cmd: List) -> list[Response]:
    """LIST, extended or not, and LSUB.

    Every name that exists, and every parent of one, is a candidate; the patterns choose
    among them (a name matched by several is answered once), the selection options filter
    them (all of them must hold), and the answers carry \\HasChildren or \\HasNoChildren
    (RFC 5258 4: allowed without RETURN (CHILDREN)) and the folder's special use (RFC 6154 2).
    """
    lsub = cmd.name == "LSUB"
    kind = "LSUB" if lsub else "LIST"
    problem = _option_problem(cmd)
    if problem:
        return [bad(cmd.tag, problem)]
    if session.imap4rev2 and "RECENT" in cmd.status_items:
        return [bad(cmd.tag, "STATUS RECENT does not exist in IMAP4rev2 (RFC 9051 6.3.11)")]
    reference, patterns = cmd.reference, cmd.patterns
    if patterns == ("",):
        # RFC 9051 6.3.9: the hierarchy delimiter and root of the reference.
        root = reference.split(DELIMITER)[0] + DELIMITER if DELIMITER in reference else ""
        wire = outgoing(root, session.utf8_names)
        return [Data(Atom(kind), [Atom("\\Noselect")], DELIMITER, wire), ok(cmd.tag, f"{kind} completed")]
    if len(patterns) > MAX_PATTERNS or any(len(reference + p) > MAX_PATTERN for p in patterns):
        return [bad(cmd.tag, f"At most {MAX_PATTERNS} patterns of at most {MAX_PATTERN} characters")]
    # RFC 5258 3: an extended LIST (or a rev2 session, RFC 9051 7.3.1) learns \NonExistent.
    extended = not lsub and (bool(cmd.select or cmd.return_) or len(patterns) > 1 or session.imap4rev2)
    by_name = {f.name: f for f in await session.box.folders()}
    names = set(by_name)
    for n in by_name:
        parts = n.split(DELIMITER)
        names.update(DELIMITER.join(parts[:i]) for i in range(1, len(parts)))
    matchers = [Pattern(reference, p) for p in patterns]
    criteria = [c for o, c in _CRITERIA.items() if o in cmd.select]
    recursive = "RECURSIVEMATCH" in cmd.select
    show_subscribed = not lsub and ("SUBSCRIBED" in cmd.select or "SUBSCRIBED" in cmd.return_)

    def meets(name: str) -> bool:
        f = by_name.get(name)
        return all(c(f) for c in criteria)

    out: list[Response] = []
    for name in sorted(names, key=lambda n: (n != "INBOX", n)):
        if not any(m.match(name) for m in matchers):
            continue
        f = by_name.get(name)
        below = [o for o in names if o.startswith(name + DELIMITER)]
        attrs: list[str] = []
        extra: list[Value] = []
        if lsub:
            if not meets(name):
                # RFC 3501 6.3.9: "%" stopping at an unsubscribed parent of a subscribed
                # name answers the parent, \Noselect; "*" answers the child instead.
                if not any(meets(o) and not any(m.match(o) for m in matchers) for o in below):
                    continue
                attrs.append("\\Noselect")
        else:
            itself = meets(name)
            # RFC 5258 3.5 and 4 (\NonExistent, condition 2): a name that does not meet the
            # criteria is answered for a descendant that does and that the patterns do not
            # reach (one they reach is answered itself).
            childinfo = (
                recursive
                and bool(criteria)
                and any(meets(o) and (itself or not any(m.match(o) for m in matchers)) for o in below)
            )
            if not itself and not childinfo:
                continue
            if childinfo:
                extra = [["CHILDINFO", [o for o in cmd.select if o in _CRITERIA]]]
        if f is None and not attrs:
            # The levels of the shared namespace are \Noselect (RFC 3501 7.2.2), not missing.
            attrs.append("\\NonExistent" if extended and not session.box.is_level(name) else "\\Noselect")
        attrs.append("\\HasChildren" if below else "\\HasNoChildren")
        if f is not None and show_subscribed and f.subscribed:
            attrs.append("\\Subscribed")
        if f is not None and f.special_use:
            attrs.append(f.special_use)
        wire = outgoing(name, session.utf8_names)
        out.append(Data(Atom(kind), [Atom(a) for a in attrs], DELIMITER, wire, *extra))
        if f is not None and "STATUS" in cmd.return_:
            # RFC 5819 2: after the folder's LIST line; none for a name that cannot be selected,
            # nor for one whose STATUS would fail, e.g. without the "r" right (RFC 4314 4): the
            # LIST itself still succeeds and tells nothing of the folder's counts.
            values = await _status_of(session, f, cmd.status_items)
            if values is not None:
                out.append(Data(Atom("STATUS"), wire, values))
    out.append(ok(cmd.tag, f"{kind} completed"))
    return out


async def _status_of(session: Session, listed: FolderInfo, items: Sequence[str]) -> list[Value] | None:
    """`folders()` leaves the counts out: STATUS reads the folder as STATUS does. None when
    the user may not ask its STATUS (no "r", RFC 4314 4) or it is gone (RFC 5819 2: the
    STATUS line is then left out)."""
    info = await session.box.folder(listed.name)
    if info is None or "r" not in session.box.rights_of(info):
        return None
    try:
        return await status_values(session, info, items)
    except Refusal:
        return None


async def create(session: Session, cmd: Create) -> list[Response]:
    """CREATE (RFC 9051 6.3.4), subscribed (see the module docstring), with at most one
    special use (RFC 6154 3): a use MSS cannot give, more than one, or one another folder has
    already, is `NO [USEATTR]` and nothing is created. (Two CREATEs racing for the same use:
    the core refuses the second, `NO [CANNOT]`.)"""
    # RFC 9051 6.3.4: a trailing delimiter declares the intent to create names under it.
    name = cmd.mailbox.rstrip(DELIMITER) if cmd.mailbox != DELIMITER else ""
    use: str | None = None
    if cmd.special_use:
        if len(cmd.special_use) > 1:
            return [no(cmd.tag, "A folder has at most one special use", "USEATTR")]
        use = next((u for u in CREATABLE_USES if u.lower() == cmd.special_use[0].lower()), None)
        if use is None:
            return [no(cmd.tag, f"Special use {cmd.special_use[0]} is not supported", "USEATTR")]
        holder = next((f.name for f in await session.box.folders() if f.special_use == use), None)
        if holder is not None:
            return [no(cmd.tag, f"{use} is already the use of folder {holder}", "USEATTR")]
    await session.box.create_folder(name, use)
    return [ok(cmd.tag, "CREATE completed")]
