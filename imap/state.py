"""The IMAP session's states and the one table of transitions between them (RFC 9051 3).

In the manner of h11's `_state.py`: no I/O and no core here, only which states there are,
which events move between them (`TRANSITIONS`), and which commands each state accepts
(`COMMAND_STATES`). `imap.session.Session.apply` is the one place that fires events; it asks
`next_state` for the next state before it changes anything, so a transition that is not in
the table raises `LocalProtocolError` and changes nothing. That exception is a bug
of this server (a handler fired an event its state cannot take), never the client's fault:
what the client gets wrong is answered BAD or NO before any event is fired.

RFC 9051 3 draws four states. Three more are made explicit here, each a moment in which
the next client line is no command and must be read differently:

- `STARTING_TLS`: STARTTLS was answered OK; nothing more is read until the TLS handshake is
  done (RFC 9051 6.2.1), and what the client pipelined in clear is dropped.
- `AUTHENTICATING`: an AUTHENTICATE exchange sent a challenge (`+ ...`); the next line is
  the client's response to it, or `*` to cancel (RFC 9051 6.2.2).
- `IDLE_AUTHENTICATED`, `IDLE_SELECTED`: IDLE is running (RFC 2177); the next line must be
  DONE. The state remembers whether a folder was selected, so IDLE_DONE returns there.

Every state but LOGOUT goes to LOGOUT on DISCONNECT (RFC 9051 3, transition (7)); the three
command states also on the LOGOUT command. The table below is the whole truth.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from imap.protocol.commands import (
    Acl,
    Append,
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
    Rename,
    Search,
    Select,
    SetQuota,
    Sort,
    StartTls,
    Status,
    Store,
    Subscribe,
    Thread,
    Unselect,
)


class State(enum.Enum):
    """Where one IMAP connection is. The values are the words used in BAD replies."""

    NOT_AUTHENTICATED = "not authenticated"
    STARTING_TLS = "starting TLS"
    AUTHENTICATING = "authenticating"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    IDLE_AUTHENTICATED = "idle (authenticated)"
    IDLE_SELECTED = "idle (selected)"
    LOGOUT = "logout"


class Event(enum.Enum):
    """What happened, as the session reports it to the table."""

    #: STARTTLS answered OK: the handshake starts (RFC 9051 6.2.1).
    STARTTLS = "starttls"
    #: The TLS handshake is done: after STARTTLS, or at once on the implicit-TLS port (RFC 8314).
    TLS_STARTED = "tls started"
    #: An AUTHENTICATE exchange sent a challenge: the next line answers it (RFC 9051 6.2.2).
    AUTH_CONTINUE = "auth continue"
    #: AUTHENTICATE or LOGIN succeeded and the mailbox is open.
    AUTH_OK = "auth ok"
    #: AUTHENTICATE or LOGIN ended without authenticating (refused, cancelled, malformed).
    AUTH_FAILED = "auth failed"
    #: SELECT or EXAMINE opened a folder.
    SELECT_OK = "select ok"
    #: SELECT or EXAMINE failed: no folder stays selected (RFC 9051 6.3.2).
    SELECT_FAILED = "select failed"
    #: CLOSE or UNSELECT (RFC 9051 6.4.1, RFC 3691).
    CLOSE = "close"
    #: IDLE answered `+ idling` (RFC 2177 3).
    IDLE_START = "idle start"
    #: The line after IDLE arrived: DONE, or anything else, which also ends IDLE.
    IDLE_DONE = "idle done"
    #: The client's LOGOUT command (RFC 9051 6.1.3; RFC 9051 3, transition (4)).
    LOGOUT = "logout"
    #: The server ends the session (a fatal protocol error, too many failed attempts), or the
    #: connection is gone (RFC 9051 3, transition (7): "server shutdown or connection closed").
    DISCONNECT = "disconnect"


class LocalProtocolError(Exception):
    """An event fired in a state that cannot take it: a bug of this server, as h11's
    exception of the same name. The session is no longer trustworthy; the connection ends."""


_S = State
_E = Event

#: The one table: (state, event) -> next state. A pair that is missing is a bug.
TRANSITIONS: Mapping[State, Mapping[Event, State]] = {
    _S.NOT_AUTHENTICATED: {
        _E.STARTTLS: _S.STARTING_TLS,
        _E.TLS_STARTED: _S.NOT_AUTHENTICATED,  # implicit TLS: the handshake came first
        _E.AUTH_CONTINUE: _S.AUTHENTICATING,
        _E.AUTH_OK: _S.AUTHENTICATED,  # LOGIN, or AUTHENTICATE with an initial response
        _E.AUTH_FAILED: _S.NOT_AUTHENTICATED,
        _E.LOGOUT: _S.LOGOUT,
        _E.DISCONNECT: _S.LOGOUT,
    },
    _S.STARTING_TLS: {
        _E.TLS_STARTED: _S.NOT_AUTHENTICATED,  # RFC 9051 6.2.1: authenticate again, over TLS
        _E.DISCONNECT: _S.LOGOUT,  # the handshake failed
    },
    _S.AUTHENTICATING: {
        _E.AUTH_CONTINUE: _S.AUTHENTICATING,  # another challenge (AUTHENTICATE LOGIN has two)
        _E.AUTH_OK: _S.AUTHENTICATED,
        _E.AUTH_FAILED: _S.NOT_AUTHENTICATED,
        _E.DISCONNECT: _S.LOGOUT,
    },
    _S.AUTHENTICATED: {
        _E.SELECT_OK: _S.SELECTED,
        _E.SELECT_FAILED: _S.AUTHENTICATED,
        _E.IDLE_START: _S.IDLE_AUTHENTICATED,
        _E.LOGOUT: _S.LOGOUT,
        _E.DISCONNECT: _S.LOGOUT,
    },
    _S.SELECTED: {
        _E.SELECT_OK: _S.SELECTED,  # another folder (or the same one again)
        _E.SELECT_FAILED: _S.AUTHENTICATED,  # RFC 9051 6.3.2: deselected before the attempt
        _E.CLOSE: _S.AUTHENTICATED,
        _E.IDLE_START: _S.IDLE_SELECTED,
        _E.LOGOUT: _S.LOGOUT,
        _E.DISCONNECT: _S.LOGOUT,
    },
    _S.IDLE_AUTHENTICATED: {
        _E.IDLE_DONE: _S.AUTHENTICATED,
        _E.DISCONNECT: _S.LOGOUT,
    },
    _S.IDLE_SELECTED: {
        _E.IDLE_DONE: _S.SELECTED,
        _E.DISCONNECT: _S.LOGOUT,
    },
    _S.LOGOUT: {},
}

#: States in which the next client line is a command (RFC 9051 3's three command states).
COMMAND_READY = frozenset({State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED})
#: States in which the next client line is read as a raw line, not as a command.
RAW_LINE = frozenset({State.AUTHENTICATING, State.IDLE_AUTHENTICATED, State.IDLE_SELECTED})
#: States in which client input is read at all.
READING = COMMAND_READY | RAW_LINE
#: States before authentication (the I/O layer's pre-authentication deadline applies).
UNAUTHENTICATED = frozenset({State.NOT_AUTHENTICATED, State.STARTING_TLS, State.AUTHENTICATING})
IDLE = frozenset({State.IDLE_AUTHENTICATED, State.IDLE_SELECTED})

_ANY = COMMAND_READY
_NOT_AUTH = frozenset({State.NOT_AUTHENTICATED})
_AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
_SELECTED = frozenset({State.SELECTED})

#: Which command classes (`imap.protocol.grammar.COMMANDS`) each state accepts (RFC 9051
#: 6.1-6.4); another command is answered BAD and changes nothing.
COMMAND_STATES: Mapping[type[Command], frozenset[State]] = {
    Capability: _ANY,
    Noop: _ANY,
    Logout: _ANY,
    Id: _ANY,
    StartTls: _NOT_AUTH,
    Authenticate: _NOT_AUTH,
    Login: _NOT_AUTH,
    Enable: frozenset({State.AUTHENTICATED}),  # RFC 5161 3.1: before any mailbox is selected
    Namespace: _AUTH,
    Select: _AUTH,
    Create: _AUTH,
    Delete: _AUTH,
    Rename: _AUTH,
    Subscribe: _AUTH,
    List: _AUTH,
    Status: _AUTH,
    Append: _AUTH,
    Idle: _AUTH,
    GetQuota: _AUTH,  # RFC 9208 4: authenticated and selected states
    GetQuotaRoot: _AUTH,
    SetQuota: _AUTH,
    Acl: _AUTH,  # RFC 4314 3: authenticated and selected states
    Check: _SELECTED,
    Unselect: _SELECTED,
    Expunge: _SELECTED,
    Search: _SELECTED,
    Sort: _SELECTED,  # RFC 5256 3: selected state only
    Thread: _SELECTED,
    Fetch: _SELECTED,
    Store: _SELECTED,
    Copy: _SELECTED,
}

#: RFC 9051 6.2.1 / 7.5.1 (and RFC 8314 for the policy): on a clear connection only these
#: commands are accepted before STARTTLS; anything else is NO [PRIVACYREQUIRED], so that no
#: credentials and no mailbox name ever cross the network in clear.
BEFORE_TLS: frozenset[type[Command]] = frozenset({Capability, Noop, Logout, StartTls})


def allowed_states(command: Command) -> frozenset[State]:
    """The states in which `command` is valid."""
    return COMMAND_STATES[type(command)]


def next_state(state: State, event: Event) -> State:
    """The table's answer for `(state, event)`; raises LocalProtocolError if it has none."""
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        raise LocalProtocolError(f"event {event.name} is not possible in state {state.name}") from None
