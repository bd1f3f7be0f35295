"""The one (state, event) table (`imap.state`) and the tables keyed by command class: what
is not in them raises, and they cover exactly the registry's commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from imap.commands import HANDLERS
from imap.protocol.grammar import COMMAND_CLASSES, COMMANDS
from imap.state import (
    BEFORE_TLS,
    COMMAND_READY,
    COMMAND_STATES,
    IDLE,
    RAW_LINE,
    READING,
    TRANSITIONS,
    UNAUTHENTICATED,
    Event,
    LocalProtocolError,
    State,
    next_state,
)

ALL_PAIRS = [(s, e) for s in State for e in Event]


@pytest.mark.parametrize("state,event", ALL_PAIRS, ids=[f"{s.name}-{e.name}" for s, e in ALL_PAIRS])
def test_every_pair_is_in_the_table_or_raises(state, event):
    if event in TRANSITIONS[state]:
        assert next_state(state, event) is TRANSITIONS[state][event]
    else:
        with pytest.raises(LocalProtocolError, match=f"{event.name}.*{state.name}"):
            next_state(state, event)


def test_the_table_has_a_row_for_every_state_and_only_states_as_targets():
    assert set(TRANSITIONS) == set(State)
    assert all(isinstance(t, State) for row in TRANSITIONS.values() for t in row.values())


def test_logout_is_final_and_every_other_state_can_end():
    assert TRANSITIONS[State.LOGOUT] == {}
    for state in set(State) - {State.LOGOUT}:
        assert TRANSITIONS[state][Event.DISCONNECT] is State.LOGOUT  # RFC 9051 3, (7)
    for state in COMMAND_READY:
        assert TRANSITIONS[state][Event.LOGOUT] is State.LOGOUT  # the command (RFC 9051 3, (4))


def test_idle_returns_where_it_started():
    for start, idle in ((State.AUTHENTICATED, State.IDLE_AUTHENTICATED), (State.SELECTED, State.IDLE_SELECTED)):
        assert next_state(next_state(start, Event.IDLE_START), Event.IDLE_DONE) is start
        assert idle in IDLE


def test_every_state_is_reachable_from_the_greeting():
    seen, todo = {State.NOT_AUTHENTICATED}, [State.NOT_AUTHENTICATED]
    while todo:
        for nxt in TRANSITIONS[todo.pop()].values():
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(State)


def test_state_sets_partition_the_states():
    assert COMMAND_READY | RAW_LINE | {State.STARTING_TLS, State.LOGOUT} == set(State)
    assert not COMMAND_READY & RAW_LINE and READING == COMMAND_READY | RAW_LINE
    assert {State.NOT_AUTHENTICATED, State.STARTING_TLS, State.AUTHENTICATING} == UNAUTHENTICATED


def test_command_tables_cover_exactly_the_registry():
    assert {spec.cls for spec in COMMANDS.values()} == COMMAND_CLASSES
    assert set(COMMAND_STATES) == COMMAND_CLASSES
    assert set(HANDLERS) == COMMAND_CLASSES
    assert BEFORE_TLS <= COMMAND_CLASSES
    for cls, states in COMMAND_STATES.items():
        assert states and states <= COMMAND_READY, cls  # commands run only in command states
    # Names that share a class share a handler and states by construction; a name is
    # written once, in the registry.
    assert len(COMMANDS) > len(COMMAND_CLASSES)


async def test_an_impossible_event_raises_and_changes_nothing(make_session):
    d = make_session()
    s = d.session
    with pytest.raises(LocalProtocolError):
        s.apply(Event.IDLE_DONE)
    with pytest.raises(LocalProtocolError):
        s.apply(Event.CLOSE)
    assert s.state is State.NOT_AUTHENTICATED and s.idle is None and s.view is None
    with pytest.raises(LocalProtocolError):
        s.apply(Event.AUTH_OK, None)  # type: ignore[call-overload]  # the handle is missing
    assert s.state is State.NOT_AUTHENTICATED and s.handle is None
    assert (await d.line("a NOOP")).startswith("a OK")  # still in step


async def test_the_server_side_events_end_the_session(make_session):
    d = make_session()
    d.session.close()
    assert d.session.state is State.LOGOUT
    d.session.close()  # twice is fine
    assert await d.line("a NOOP") == "" and d.actions  # nothing more is processed, Close


def test_no_handler_module_imports_the_session_at_run_time():
    """The import cycle session <-> commands is gone: the handlers, the table and the
    actions load without `imap.session`."""
    code = (
        "import sys, imap.commands, imap.commands.auth, imap.actions, imap.state\n"
        "assert 'imap.session' not in sys.modules, sorted(m for m in sys.modules if m.startswith('imap'))\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


async def test_nothing_is_read_between_starttls_and_the_handshake(make_session):
    d = make_session(tls=False)
    out = await d.send(b"a STARTTLS\r\nb NOOP\r\n")
    assert out == b"a OK Begin TLS negotiation now\r\n" and d.session.state is State.STARTING_TLS
    assert await d.line("c LOGIN user pass") == ""  # in clear, before the handshake: never read
    d.session.tls_started(b"cert-alice")
    assert d.session.state is State.NOT_AUTHENTICATED and d.session.tls
    assert await d.line("d NOOP") == "d OK NOOP completed\r\n"  # b and c were dropped
    assert (await d.line("e STARTTLS")).startswith("e BAD")  # TLS is already active
    assert (await d.line("f AUTHENTICATE EXTERNAL =")).startswith("f OK")
    with pytest.raises(LocalProtocolError):
        d.session.tls_started(b"cert-alice")  # a second handshake after authentication: a bug
    assert d.session.state is State.AUTHENTICATED
