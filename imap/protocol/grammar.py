"""The one registry of IMAP command names: each name, its grammar rule, its command class.

`COMMANDS` is the only place a command name is written. The parser looks names up here
(`imap.protocol.parser.parse_command`); the session's handler table (`imap.commands.HANDLERS`)
and the table of the states each command is valid in (`imap.state.COMMAND_STATES`) are keyed
by the classes found here, and tests check that the three cover the same commands.

Each rule reads the arguments after the command name (RFC 9051 9, "Formal Syntax") with a
`Reader` and builds the command object; `Head` carries what was read before them. A rule that
serves several names (SELECT and EXAMINE, COPY and MOVE) tells them apart by `Head.name` and
records the difference as a field (`readonly`, `move`), so handlers never compare names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from imap.protocol.commands import (
    Acl,
    Append,
    AppendMessage,
    Authenticate,
    Capability,
    Check,
    Command,
    Copy,
    Create,
    Delete,
    Enable,
    Expunge,
    Fetch,
    GetQuota,
    GetQuotaRoot,
    Id,
    Idle,
    List,
    Login,
    Logout,
    Namespace,
    Noop,
    Qresync,
    Rename,
    Search,
    SearchKey,
    Secret,
    Select,
    SetQuota,
    Sort,
    SortCriterion,
    SortKey,
    StartTls,
    Status,
    Store,
    StoreMode,
    Subscribe,
    Thread,
    ThreadAlgorithm,
    Unselect,
)
from imap.protocol.reader import ATOM_CHARS, Reader

C = TypeVar("C", bound=Command)

_STATUS_ITEMS = {
    "MESSAGES",
    "RECENT",
    "UIDNEXT",
    "UIDVALIDITY",
    "UNSEEN",
    "DELETED",
    "SIZE",
    "HIGHESTMODSEQ",
    "APPENDLIMIT",  # RFC 7889 3
    "DELETED-STORAGE",  # RFC 9208 4.4
}
#: RFC 9208 9: number64 (a resource limit), at most 2^63 - 1.
_MAX_NUMBER64 = 2**63 - 1
_BASE64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


@dataclass(frozen=True)
class Head:
    """What precedes the arguments: the tag, the command name (upper-case) and whether it
    came as `UID <name>`."""

    tag: str
    name: str
    uid: bool = False


Rule = Callable[[Reader, Head], Command]


@dataclass(frozen=True)
class CommandSpec:
    """One command name: the class its rule builds, the rule, and whether `UID <name>`
    exists (RFC 9051 6.4.9; RFC 4315 2.1 for UID EXPUNGE)."""

    cls: type[Command]
    rule: Rule
    uid: bool = False


def _spec(cls: type[C], rule: Callable[[Reader, Head], C], *, uid: bool = False) -> CommandSpec:
    """A `CommandSpec` whose rule is checked (by the type checker) to build `cls`."""
    return CommandSpec(cls, rule, uid)


# -- any state -----------------------------------------------------------------------------


def _capability(r: Reader, h: Head) -> Capability:
    return Capability(tag=h.tag, name=h.name)


def _noop(r: Reader, h: Head) -> Noop:
    return Noop(tag=h.tag, name=h.name)


def _logout(r: Reader, h: Head) -> Logout:
    return Logout(tag=h.tag, name=h.name)


def _id(r: Reader, h: Head) -> Id:
    """RFC 2971 3.1: `ID NIL` or a list of at most 30 field/value pairs."""
    r.sp()
    if r.try_expect(b"NIL"):
        return Id(tag=h.tag, name=h.name, params=None)
    items = r.paren_list(r.nstring)
    if len(items) % 2 or len(items) > 60:
        raise r.error("ID takes field/value pairs (at most 30)")
    return Id(tag=h.tag, name=h.name, params=tuple(zip(items[::2], items[1::2], strict=False)))


# -- not authenticated ---------------------------------------------------------------------


def _starttls(r: Reader, h: Head) -> StartTls:
    return StartTls(tag=h.tag, name=h.name)


def _authenticate(r: Reader, h: Head) -> Authenticate:
    """RFC 9051 6.2.2 with the RFC 4959 initial response, kept as a `Secret`."""
    r.sp()
    mech = r.atom().upper()
    initial = None
    if r.try_sp():
        raw = r.take(_BASE64)
        if not raw:
            raise r.error("Invalid SASL initial response")
        initial = Secret(raw)
    return Authenticate(tag=h.tag, name=h.name, mechanism=mech, initial=initial)


def _login(r: Reader, h: Head) -> Login:
    r.sp()
    user = r.astring()
    r.sp()
    password = Secret(r.astring_bytes())  # an app password; its repr never shows it
    return Login(tag=h.tag, name=h.name, user=user, password=password)


# -- authenticated -------------------------------------------------------------------------


def _enable(r: Reader, h: Head) -> Enable:
    caps = []
    while r.try_sp():
        caps.append(r.atom().upper())
    if not caps:
        raise r.error("ENABLE needs at least one capability")
    return Enable(tag=h.tag, name=h.name, capabilities=tuple(caps))


def _namespace(r: Reader, h: Head) -> Namespace:
    return Namespace(tag=h.tag, name=h.name)


def _select(r: Reader, h: Head) -> Select:
    """SELECT/EXAMINE with RFC 4466 select-params: CONDSTORE (RFC 7162 3.1.8) and
    QRESYNC (RFC 7162 3.2.5) are kept, any other parameter and its value skipped."""
    r.sp()
    mailbox = r.mailbox()
    condstore = False
    qresync: Qresync | None = None

    def param() -> None:
        nonlocal condstore, qresync
        name = r.atom().upper()
        if name == "CONDSTORE":
            condstore = True
        elif name == "QRESYNC":
            if qresync is not None:
                raise r.error("QRESYNC given twice")
            r.sp()
            qresync = _qresync(r)
        elif r.peek() == b" ":
            r.sp()
            _skip_value(r)

    if r.try_sp():
        r.paren_list(param)
    return Select(
        tag=h.tag, name=h.name, mailbox=mailbox, readonly=h.name == "EXAMINE", condstore=condstore, qresync=qresync
    )


def _qresync(r: Reader) -> Qresync:
    """`(uidvalidity mod-sequence-value [SP known-uids] [SP seq-match-data])` (RFC 7162 7)."""
    r.expect(b"(")
    r.enter()
    uidvalidity = r.number(nz=True)
    r.sp()
    modseq = r.modseq()
    known = None
    if r.try_sp() and r.peek() != b"(":
        known = r.sequence_set()
        if any(x is None for rng in known.ranges for x in rng):
            raise r.error("known-uids cannot use *")
        r.try_sp()
    if r.peek() == b"(":
        # seq-match-data: (known-sequence-set known-uid-set); parsed, not needed.
        r.expect(b"(")
        r.sequence_set()
        r.sp()
        r.sequence_set()
        r.expect(b")")
    r.expect(b")")
    r.leave()
    return Qresync(uidvalidity, modseq, known)


def _skip_value(r: Reader) -> None:
    if r.peek() == b"(":
        r.paren_list(lambda: _skip_value(r))
    else:
        r.astring_bytes()


def _create(r: Reader, h: Head) -> Create:
    r.sp()
    mailbox = r.mailbox()
    uses: list[str] = []
    if r.try_sp():
        uses = _create_params(r)
    return Create(tag=h.tag, name=h.name, mailbox=mailbox, special_use=tuple(uses))


def _create_params(r: Reader) -> list[str]:
    """create-params (RFC 4466 2.2): `USE (\\Drafts ...)` (RFC 6154 3) is kept, others skipped."""
    uses: list[str] = []

    def param() -> None:
        name = r.atom().upper()
        if not r.try_sp():
            return
        if name == "USE":
            uses.extend(r.flag_list())
        else:
            _skip_value(r)

    r.paren_list(param)
    return uses


def _delete(r: Reader, h: Head) -> Delete:
    r.sp()
    return Delete(tag=h.tag, name=h.name, mailbox=r.mailbox())


def _rename(r: Reader, h: Head) -> Rename:
    r.sp()
    old = r.mailbox()
    r.sp()
    return Rename(tag=h.tag, name=h.name, mailbox=old, new=r.mailbox())


def _subscribe(r: Reader, h: Head) -> Subscribe:
    r.sp()
    return Subscribe(tag=h.tag, name=h.name, mailbox=r.mailbox(), subscribed=h.name == "SUBSCRIBE")


def _return_opt(r: Reader, status: list[str]) -> str:
    """One RFC 5258 return option; STATUS's items (RFC 5819) go into `status`."""
    name = r.atom().upper()
    if r.peek() == b" " and r.data[r.pos + 1 : r.pos + 2] == b"(":
        r.sp()
        items = [i.upper() for i in r.paren_list(r.atom, allow_empty=name != "STATUS")]
        if name == "STATUS":
            unknown = [i for i in items if i not in _STATUS_ITEMS]
            if unknown:
                raise r.error(f"Unknown STATUS item {unknown[0]}")
            status.extend(items)
    elif name == "STATUS":
        raise r.error("RETURN (STATUS) needs its items")
    return name


def _list(r: Reader, h: Head) -> List:
    r.sp()
    select_opts: list[str] = []
    if r.peek() == b"(":
        # RFC 5258 list-select-opts: we honour SUBSCRIBED and SPECIAL-USE.
        select_opts = [o.upper() for o in r.paren_list(r.atom)]
        r.sp()
    ref = r.astring() if r.peek() not in (b'"', b"{") else r.utf8(r.string())
    r.sp()
    patterns = r.paren_list(r.list_mailbox, allow_empty=False) if r.peek() == b"(" else [r.list_mailbox()]
    return_opts: list[str] = []
    status_items: list[str] = []
    if r.try_sp():
        r.expect(b"RETURN")
        r.sp()
        return_opts = r.paren_list(lambda: _return_opt(r, status_items))
    return List(
        tag=h.tag,
        name=h.name,
        reference=ref,
        patterns=tuple(patterns),
        select=tuple(select_opts),
        return_=tuple(return_opts),
        status_items=tuple(status_items),
    )


def _lsub(r: Reader, h: Head) -> List:
    """LSUB (RFC 3501 6.3.9) is LIST (SUBSCRIBED) answered with LSUB lines."""
    r.sp()
    ref = r.astring()
    r.sp()
    return List(tag=h.tag, name=h.name, reference=ref, patterns=(r.list_mailbox(),), select=("SUBSCRIBED",))


def _status(r: Reader, h: Head) -> Status:
    r.sp()
    mailbox = r.mailbox()
    r.sp()
    items = [i.upper() for i in r.paren_list(r.atom, allow_empty=False)]
    unknown = [i for i in items if i not in _STATUS_ITEMS]
    if unknown:
        raise r.error(f"Unknown STATUS item {unknown[0]}")
    return Status(tag=h.tag, name=h.name, mailbox=mailbox, items=tuple(items))


#: Most messages one MULTIAPPEND may carry (RFC 3502 leaves the bound to the server); the
#: core refuses more (`mss.services.MAX_APPEND_MESSAGES`). The literals together stay within
#: the framing's whole-command limit (`Limits.command`), so the count alone bounds the work.
MAX_APPEND_MESSAGES = 1000


def _append_message(r: Reader) -> AppendMessage:
    """`[flag-list SP] [date-time SP] literal` (RFC 9051 9 append, RFC 3502 6 append-message)."""
    flags: list[str] = []
    when = None
    if r.peek() == b"(":
        flags = r.flag_list()
        r.sp()
    if r.peek() == b'"':
        when = r.date_time()
        r.sp()
    utf8 = r.try_expect(b"UTF8 (")  # RFC 6855 4: append-data =/ "UTF8" SP "(" literal8 ")"
    if utf8 and r.peek(2) != b"~{":
        raise r.error("APPEND UTF8 needs the message as a literal8 (RFC 6855 4)")
    if r.peek() not in (b"{", b"~"):
        raise r.error("APPEND needs the message as a literal")
    binary = r.peek() == b"~"  # literal8, RFC 3516 4.4
    message = r.literal()
    if utf8:
        r.expect(b")")
    return AppendMessage(message=message, flags=tuple(flags), date=when, binary=binary, utf8=utf8)


def _append(r: Reader, h: Head) -> Append:
    """RFC 3502 6: `APPEND mailbox 1*(SP append-message)`, at most `MAX_APPEND_MESSAGES`."""
    r.sp()
    mailbox = r.mailbox()
    r.sp()
    messages = [_append_message(r)]
    while r.try_sp():
        if len(messages) >= MAX_APPEND_MESSAGES:
            raise r.error(f"Too many messages in one APPEND (at most {MAX_APPEND_MESSAGES})")
        messages.append(_append_message(r))
    return Append(tag=h.tag, name=h.name, mailbox=mailbox, messages=tuple(messages))


def _idle(r: Reader, h: Head) -> Idle:
    return Idle(tag=h.tag, name=h.name)


def _getquota(r: Reader, h: Head) -> GetQuota:
    """RFC 9208 9: `GETQUOTA SP quota-root-name` (an astring)."""
    r.sp()
    return GetQuota(tag=h.tag, name=h.name, root=r.astring())


def _getquotaroot(r: Reader, h: Head) -> GetQuotaRoot:
    """RFC 9208 9: `GETQUOTAROOT SP mailbox`."""
    r.sp()
    return GetQuotaRoot(tag=h.tag, name=h.name, mailbox=r.mailbox())


def _acl(r: Reader, h: Head) -> Acl:
    """RFC 4314 3 and 8 (formal syntax):

    setacl     = "SETACL" SP mailbox SP identifier SP mod-rights
    deleteacl  = "DELETEACL" SP mailbox SP identifier
    getacl     = "GETACL" SP mailbox
    listrights = "LISTRIGHTS" SP mailbox SP identifier
    myrights   = "MYRIGHTS" SP mailbox
    identifier = astring;  mod-rights = astring ("+" or "-" then rights)
    """
    r.sp()
    mailbox = r.mailbox()
    identifier = rights = None
    if h.name in ("SETACL", "DELETEACL", "LISTRIGHTS"):
        r.sp()
        identifier = r.astring()
    if h.name == "SETACL":
        r.sp()
        rights = r.astring()
    return Acl(tag=h.tag, name=h.name, mailbox=mailbox, identifier=identifier, rights=rights)


def _number64(r: Reader) -> int:
    digits = r.take(b"0123456789")
    if not digits or len(digits) > 19 or int(digits) > _MAX_NUMBER64:
        raise r.error("Expected a resource limit (number64)")
    return int(digits)


def _setquota(r: Reader, h: Head) -> SetQuota:
    """RFC 9208 9: `SETQUOTA SP quota-root-name SP "(" [resource-name SP resource-limit
    *(SP resource-name SP resource-limit)] ")"`; each resource at most once (4.1)."""
    r.sp()
    root = r.astring()
    r.sp()
    limits: list[tuple[str, int]] = []

    def resource() -> None:
        resource_name = r.atom().upper()
        r.sp()
        limits.append((resource_name, _number64(r)))

    r.paren_list(resource)
    names = [n for n, _ in limits]
    if len(set(names)) != len(names):
        raise r.error("SETQUOTA names a resource twice")
    return SetQuota(tag=h.tag, name=h.name, root=root, limits=tuple(limits))


# -- selected ------------------------------------------------------------------------------


def _check(r: Reader, h: Head) -> Check:
    return Check(tag=h.tag, name=h.name)


def _unselect(r: Reader, h: Head) -> Unselect:
    return Unselect(tag=h.tag, name=h.name, expunge=h.name == "CLOSE")


def _expunge(r: Reader, h: Head) -> Expunge:
    if not h.uid:
        return Expunge(tag=h.tag, name=h.name)
    r.sp()
    return Expunge(tag=h.tag, name=h.name, uid=True, set=r.sequence_set(saved=True))


#: RFC 4731 3.1 search-return-opt, and SAVE (RFC 5182 2.1, SEARCHRES).
_ESEARCH_OPTIONS = ("MIN", "MAX", "ALL", "COUNT", "SAVE")


def _search(r: Reader, h: Head) -> Search:
    """RFC 4731 3.1: `SEARCH [RETURN (opts)] [CHARSET x] keys`; SAVE (RFC 5182 2.1) is
    taken out of the options into `Search.save`."""
    r.sp()
    returns: tuple[str, ...] | None = None
    save_result = False
    save = r.pos
    if r.take(ATOM_CHARS).upper() == b"RETURN":
        r.sp()
        opts = [o.upper() for o in r.paren_list(lambda: r.take(ATOM_CHARS).decode("ascii"))]
        unknown = [o for o in opts if o not in _ESEARCH_OPTIONS]
        if unknown or "" in opts:
            raise r.error(f"Unknown SEARCH RETURN option {unknown[0] if unknown else '(empty)'}")
        save_result = "SAVE" in opts
        others = tuple(dict.fromkeys(o for o in opts if o != "SAVE"))
        # RFC 4731 3.1: `RETURN ()` is ALL; RFC 5182 2.1: SAVE alone returns nothing.
        returns = others if others or save_result else ("ALL",)
        r.sp()
        save = r.pos
    else:
        r.pos = save
    charset = None
    if r.take(ATOM_CHARS).upper() == b"CHARSET":
        r.sp()
        charset = r.astring().upper()
        r.sp()
    else:
        r.pos = save
    return Search(
        tag=h.tag, name=h.name, uid=h.uid, charset=charset, key=r.search_keys(), return_=returns, save=save_result
    )


#: RFC 5256 3 sort-key.
_SORT_KEYS: dict[str, SortKey] = {
    "ARRIVAL": "ARRIVAL",
    "CC": "CC",
    "DATE": "DATE",
    "FROM": "FROM",
    "SIZE": "SIZE",
    "SUBJECT": "SUBJECT",
    "TO": "TO",
}
#: RFC 5256 3 thread-alg: the algorithms of sections 4 and 5 (no thread-alg-ext is known).
_THREAD_ALGORITHMS: dict[str, ThreadAlgorithm] = {"ORDEREDSUBJECT": "ORDEREDSUBJECT", "REFERENCES": "REFERENCES"}


def _sort_criterion(r: Reader) -> SortCriterion:
    """RFC 5256 3: `sort-criterion = ["REVERSE" SP] sort-key`."""
    word = r.take(ATOM_CHARS).decode("ascii").upper()
    reverse = word == "REVERSE"
    if reverse:
        r.sp()
        word = r.take(ATOM_CHARS).decode("ascii").upper()
    key = _SORT_KEYS.get(word)
    if key is None:
        raise r.error(f"Unknown SORT key {word or '(empty)'}")
    return SortCriterion(key=key, reverse=reverse)


def _search_criteria(r: Reader) -> tuple[str, SearchKey]:
    """RFC 5256 3: `search-criteria = charset 1*(SP search-key)`, the charset mandatory."""
    r.sp()
    charset = r.astring().upper()
    r.sp()
    return charset, r.search_keys()


def _sort(r: Reader, h: Head) -> Sort:
    """RFC 5256 3: `SORT (sort-criteria) charset search-key...`."""
    r.sp()
    criteria = r.paren_list(lambda: _sort_criterion(r), allow_empty=False)
    charset, key = _search_criteria(r)
    return Sort(tag=h.tag, name=h.name, uid=h.uid, criteria=tuple(criteria), charset=charset, key=key)


def _thread(r: Reader, h: Head) -> Thread:
    """RFC 5256 3: `THREAD thread-alg charset search-key...`; an algorithm this server does
    not know is a syntax error (BAD)."""
    r.sp()
    word = r.take(ATOM_CHARS).decode("ascii").upper()
    algorithm = _THREAD_ALGORITHMS.get(word)
    if algorithm is None:
        raise r.error(f"Unknown THREAD algorithm {word or '(empty)'}")
    charset, key = _search_criteria(r)
    return Thread(tag=h.tag, name=h.name, uid=h.uid, algorithm=algorithm, charset=charset, key=key)


def _fetch(r: Reader, h: Head) -> Fetch:
    """FETCH with the RFC 7162 fetch-modifiers: CHANGEDSINCE (3.1.4.1) and, for UID
    FETCH with CHANGEDSINCE, VANISHED (3.2.6)."""
    r.sp()
    seqs = r.sequence_set(saved=True)  # `$`: RFC 5182 2.1
    r.sp()
    atts = r.fetch_atts()
    changed_since: int | None = None
    vanished = False

    def modifier() -> None:
        nonlocal changed_since, vanished
        name = r.atom().upper()
        if name == "CHANGEDSINCE" and changed_since is None:
            r.sp()
            changed_since = r.modseq()
        elif name == "VANISHED" and not vanished:
            vanished = True
        else:
            raise r.error(f"Unknown or repeated FETCH modifier {name}")

    if r.try_sp():
        r.paren_list(modifier, allow_empty=False)
    if vanished and (not h.uid or changed_since is None):
        raise r.error("VANISHED needs UID FETCH and CHANGEDSINCE (RFC 7162 3.2.6)")
    return Fetch(
        tag=h.tag,
        name=h.name,
        uid=h.uid,
        set=seqs,
        atts=tuple(atts),
        changed_since=changed_since,
        vanished=vanished,
    )


def _store(r: Reader, h: Head) -> Store:
    r.sp()
    seqs = r.sequence_set(saved=True)  # `$`: RFC 5182 2.1
    r.sp()
    unchanged_since: int | None = None
    if r.peek() == b"(":
        # store-modifiers (RFC 4466 2.5); RFC 7162 3.1.3 defines UNCHANGEDSINCE.
        def modifier() -> None:
            nonlocal unchanged_since
            name = r.atom().upper()
            if name != "UNCHANGEDSINCE" or unchanged_since is not None:
                raise r.error(f"Unknown or repeated STORE modifier {name}")
            r.sp()
            unchanged_since = r.modseq(zero=True)

        r.paren_list(modifier, allow_empty=False)
        r.sp()
    mode: StoreMode = "replace"
    if r.try_expect(b"+"):
        mode = "add"
    elif r.try_expect(b"-"):
        mode = "remove"
    r.expect(b"FLAGS")
    silent = r.try_expect(b".SILENT")
    r.sp()
    if r.peek() == b"(":
        flags = r.flag_list()
    else:
        flags = [r.flag()]
        while r.try_sp():
            flags.append(r.flag())
    return Store(
        tag=h.tag,
        name=h.name,
        uid=h.uid,
        set=seqs,
        mode=mode,
        silent=silent,
        flags=tuple(flags),
        unchanged_since=unchanged_since,
    )


def _copy(r: Reader, h: Head) -> Copy:
    r.sp()
    seqs = r.sequence_set(saved=True)  # `$`: RFC 5182 2.1
    r.sp()
    return Copy(tag=h.tag, name=h.name, uid=h.uid, set=seqs, mailbox=r.mailbox(), move=h.name == "MOVE")


# -- the registry --------------------------------------------------------------------------

COMMANDS: Mapping[str, CommandSpec] = {
    # any state (RFC 9051 6.1)
    "CAPABILITY": _spec(Capability, _capability),
    "NOOP": _spec(Noop, _noop),
    "LOGOUT": _spec(Logout, _logout),
    "ID": _spec(Id, _id),
    # not authenticated (RFC 9051 6.2)
    "STARTTLS": _spec(StartTls, _starttls),
    "AUTHENTICATE": _spec(Authenticate, _authenticate),
    "LOGIN": _spec(Login, _login),
    # authenticated (RFC 9051 6.3)
    "ENABLE": _spec(Enable, _enable),
    "NAMESPACE": _spec(Namespace, _namespace),
    "SELECT": _spec(Select, _select),
    "EXAMINE": _spec(Select, _select),
    "CREATE": _spec(Create, _create),
    "DELETE": _spec(Delete, _delete),
    "RENAME": _spec(Rename, _rename),
    "SUBSCRIBE": _spec(Subscribe, _subscribe),
    "UNSUBSCRIBE": _spec(Subscribe, _subscribe),
    "LIST": _spec(List, _list),
    "LSUB": _spec(List, _lsub),
    "STATUS": _spec(Status, _status),
    "APPEND": _spec(Append, _append),
    "IDLE": _spec(Idle, _idle),
    # QUOTA (RFC 9208 4): authenticated and selected states
    "GETQUOTA": _spec(GetQuota, _getquota),
    "GETQUOTAROOT": _spec(GetQuotaRoot, _getquotaroot),
    "SETQUOTA": _spec(SetQuota, _setquota),
    # ACL (RFC 4314 3): authenticated and selected states
    "SETACL": _spec(Acl, _acl),
    "DELETEACL": _spec(Acl, _acl),
    "GETACL": _spec(Acl, _acl),
    "LISTRIGHTS": _spec(Acl, _acl),
    "MYRIGHTS": _spec(Acl, _acl),
    # selected (RFC 9051 6.4)
    "CHECK": _spec(Check, _check),
    "CLOSE": _spec(Unselect, _unselect),
    "UNSELECT": _spec(Unselect, _unselect),
    "EXPUNGE": _spec(Expunge, _expunge, uid=True),
    "SEARCH": _spec(Search, _search, uid=True),
    "SORT": _spec(Sort, _sort, uid=True),  # RFC 5256
    "THREAD": _spec(Thread, _thread, uid=True),  # RFC 5256
    "FETCH": _spec(Fetch, _fetch, uid=True),
    "STORE": _spec(Store, _store, uid=True),
    "COPY": _spec(Copy, _copy, uid=True),
    "MOVE": _spec(Copy, _copy, uid=True),
}
COMMAND_NAMES = frozenset(COMMANDS)
#: Every command class, once (several names may share one).
COMMAND_CLASSES: frozenset[type[Command]] = frozenset(spec.cls for spec in COMMANDS.values())
