"""A hypothesis state machine over one sans-IO IMAP session (h11's way of testing its states).

Rules send what a client may send in any order: CAPABILITY, NOOP, STARTTLS, AUTHENTICATE
EXTERNAL and PLAIN (with and without initial response, succeeding, refused, cancelled,
malformed), LOGIN, SELECT/EXAMINE of an existing and of a missing folder, CLOSE/UNSELECT,
IDLE then DONE (or another line), FETCH/STORE/SEARCH, LOGOUT, garbage; meanwhile another
party delivers mail into the folder. A model written here from RFC 9051 (not from
`imap.state`) says what the answer and the next state must be, and the invariants check
that the session agrees, that every tagged command gets exactly one tagged completion,
that nothing follows a tagged completion but the BYE of a closing session, and that after
LOGOUT nothing more is processed.

Hypothesis' stateful tests are synchronous: each machine drives its session with a private
event loop, over its own store in a temporary SQLite file, all closed in `teardown`.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from imap_fakes import ALICE, ALICE_CERT, BOB, open_test_core, sample

from imap.actions import Close, Output
from imap.protocol.response import Continue, Data, Response, Status
from imap.session import Session, State

NOT_AUTH, AUTH, SELECTED = State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED
#: RFC 9051 3: the states in which a line is a command, and what each family accepts.
COMMAND_STATES = {NOT_AUTH, AUTH, SELECTED}
AUTHENTICATED_STATES = {AUTH, SELECTED}
IDLE_OF = {AUTH: State.IDLE_AUTHENTICATED, SELECTED: State.IDLE_SELECTED}
BACK_FROM_IDLE = {v: k for k, v in IDLE_OF.items()}
MAX_FAILURES = 3  # mss.sasl.MAX_AUTH_FAILURES: refused attempts before the connection ends


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


GOOD_PLAIN = b64(f"\0{ALICE}\0alice-app-pass")
WRONG_PLAIN = b64(f"\0{ALICE}\0not-the-password")
GARBAGE = [
    "{tag} FROBNICATE",
    "{tag} FETCH",
    '{tag} SELECT "unterminated',
    "{tag} UID SELECT INBOX",
    "{tag} NOOP extra",
    "{tag}",
    "",
    "DONE",
    "* OK forged",
    "+ continue",
    "{tag} SEARCH FOO",
    "{tag} STORE 1 FLAGS (",
    "{tag} LOGIN",
]


class ImapSession(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="imap-sm-"))
        self.core = self.loop.run_until_complete(open_test_core(self.dir / "imap.db"))
        self.session = Session(self.core, tls=True, starttls=False, peer="state-machine")
        self.session.tls_started(ALICE_CERT)
        # the model
        self.state = NOT_AUTH
        self.readonly = False
        self.failures = 0
        self.pending: tuple[str, str] | None = None  # (tag, AUTHENTICATE mechanism or "IDLE")
        self.n = 0
        self.completions: Counter[str] = Counter()  # tagged completions seen, per tag we sent
        self.issued: list[str] = []

    def teardown(self) -> None:
        try:
            self.session.close()
            self.loop.run_until_complete(self.core.aclose())
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- driving -------------------------------------------------------------------------

    def tag(self) -> str:
        self.n += 1
        t = f"t{self.n}"
        self.issued.append(t)
        return t

    def send(self, line: str | bytes) -> tuple[list[Response], list[Output]]:
        data = line.encode() if isinstance(line, str) else line
        self.session.feed(data + b"\r\n")
        out = self.loop.run_until_complete(self.session.process())
        responses = [o for o in out if isinstance(o, Response)]
        for r in responses:
            if isinstance(r, Status) and r.tag is not None and r.tag.startswith("t"):
                self.completions[r.tag] += 1
        # An action is only ever the last thing, and Close only ends a session.
        actions = [o for o in out if not isinstance(o, Response)]
        assert all(isinstance(o, Response) for o in out[: len(out) - len(actions)]), out
        assert (Close() in actions) == (self.session.state is State.LOGOUT), out
        return responses, out

    def completed(
        self, responses: Sequence[Response], tag: str, status: str, code: str | None = None, *, closing: bool = False
    ) -> Status:
        """Exactly one tagged completion, ours, with `status`; before it only untagged data
        (and no continuation request); after it nothing, or the BYE of a closing session."""
        tagged = [r for r in responses if isinstance(r, Status) and r.tag is not None]
        assert [r.tag for r in tagged] == [tag], responses
        done = tagged[0]
        assert done.status == status, responses
        if code is not None:
            assert done.code is not None and done.code.split()[0] == code, responses
        i = responses.index(done)
        assert not any(isinstance(r, Continue) for r in responses[:i]), responses
        after = list(responses[i + 1 :])
        if closing:
            assert len(after) == 1 and isinstance(after[0], Status) and after[0].status == "BYE", responses
        else:
            assert after == [], responses
        return done

    def counted_failure(self, responses: Sequence[Response], tag: str, code: str) -> None:
        self.failures += 1
        closing = self.failures >= MAX_FAILURES
        self.completed(responses, tag, "NO", code, closing=closing)
        self.state = State.LOGOUT if closing else NOT_AUTH
        self.pending = None

    def bad_state(self, responses: Sequence[Response], tag: str) -> None:
        """A command outside its states (RFC 9051 6): BAD, and nothing changes."""
        self.completed(responses, tag, "BAD")

    # -- setup ---------------------------------------------------------------------------

    @initialize()
    def seed(self) -> None:
        for i in range(2):
            self.loop.run_until_complete(self.core.deliver(ALICE, sample(f"seed {i}")))

    # -- any state -----------------------------------------------------------------------

    @precondition(lambda self: self.state in COMMAND_STATES)
    @rule()
    def capability(self) -> None:
        t = self.tag()
        responses, _ = self.send(f"{t} CAPABILITY")
        self.completed(responses, t, "OK")
        caps = [r for r in responses if isinstance(r, Data) and r.items[0] == "CAPABILITY"]
        assert len(caps) == 1
        assert ("AUTH=EXTERNAL" in caps[0].items) == (self.state is NOT_AUTH)

    @precondition(lambda self: self.state in COMMAND_STATES)
    @rule()
    def noop(self) -> None:
        t = self.tag()
        responses, _ = self.send(f"{t} NOOP")
        self.completed(responses, t, "OK")

    @precondition(lambda self: self.state in COMMAND_STATES)
    @rule()
    def starttls_on_tls(self) -> None:
        t = self.tag()
        responses, _ = self.send(f"{t} STARTTLS")
        self.completed(responses, t, "BAD")  # TLS is already active, or not valid here

    @precondition(lambda self: self.state in COMMAND_STATES)
    @rule()
    def logout(self) -> None:
        t = self.tag()
        responses, out = self.send(f"{t} LOGOUT")
        assert isinstance(responses[0], Status) and responses[0].status == "BYE"
        self.completed(responses[1:], t, "OK")
        assert out[-1] == Close()
        self.state = State.LOGOUT
        self.pending = None

    @precondition(lambda self: self.state in COMMAND_STATES)
    @rule(
        line=st.sampled_from(GARBAGE)
        | st.binary(max_size=30).map(lambda b: b"(" + b.replace(b"\n", b"").replace(b"{", b""))
    )
    def garbage(self, line: str | bytes) -> None:
        if isinstance(line, str):
            self.n += 1
            line = line.format(tag=f"g{self.n}")
        responses, _ = self.send(line)
        assert len(responses) == 1 and isinstance(responses[0], Status) and responses[0].status == "BAD", responses

    # -- not authenticated ---------------------------------------------------------------

    @precondition(lambda self: self.state in COMMAND_STATES)
    @rule()
    def external_with_the_certificate(self) -> None:
        t = self.tag()
        responses, _ = self.send(f"{t} AUTHENTICATE EXTERNAL =")
        if self.state is not NOT_AUTH:
            return self.bad_state(responses, t)
        self.completed(responses, t, "OK", "CAPABILITY")
        self.state = AUTH

    @precondition(lambda self: self.state in COMMAND_STATES)
    @rule()
    def external_for_another_mailbox(self) -> None:
        t = self.tag()
        responses, _ = self.send(f"{t} AUTHENTICATE EXTERNAL {b64(BOB)}")
        if self.state is not NOT_AUTH:
            return self.bad_state(responses, t)
        self.counted_failure(responses, t, "AUTHORIZATIONFAILED")

    @precondition(lambda self: self.state in COMMAND_STATES)
    @rule(mechanism=st.sampled_from(["EXTERNAL", "PLAIN"]))
    def authenticate_without_initial_response(self, mechanism: str) -> None:
        t = self.tag()
        responses, _ = self.send(f"{t} AUTHENTICATE {mechanism}")
        if self.state is not NOT_AUTH:
            return self.bad_state(responses, t)
        assert responses == [Continue("")], responses  # RFC 9051 6.2.2: an empty challenge
        self.state = State.AUTHENTICATING
        self.pending = (t, mechanism)

    @precondition(lambda self: self.state is State.AUTHENTICATING)
    @rule(answer=st.sampled_from(["good", "refused", "cancel", "not base64", "a command"]))
    def answer_the_challenge(self, answer: str) -> None:
        assert self.pending is not None
        t, mechanism = self.pending
        line = {
            ("EXTERNAL", "good"): b64(ALICE),
            ("EXTERNAL", "refused"): b64(BOB),
            ("PLAIN", "good"): GOOD_PLAIN,
            ("PLAIN", "refused"): WRONG_PLAIN,
        }.get((mechanism, answer), {"cancel": "*", "not base64": "!!!", "a command": "x1 SELECT INBOX"}.get(answer, ""))
        responses, _ = self.send(line)
        if answer == "good":
            self.completed(responses, t, "OK", "CAPABILITY")
            self.state, self.pending = AUTH, None
        elif answer == "refused":
            self.counted_failure(
                responses, t, "AUTHORIZATIONFAILED" if mechanism == "EXTERNAL" else "AUTHENTICATIONFAILED"
            )
        else:  # RFC 9051 6.2.2: "*" cancels, with BAD; an undecodable answer is BAD too
            self.completed(responses, t, "BAD")
            self.state, self.pending = NOT_AUTH, None

    @precondition(lambda self: self.state in COMMAND_STATES)
    @rule(good=st.booleans())
    def login(self, good: bool) -> None:
        t = self.tag()
        responses, _ = self.send(f"{t} LOGIN {ALICE} {'alice-app-pass' if good else 'wrong'}")
        if self.state is not NOT_AUTH:
            return self.bad_state(responses, t)
        if good:
            self.completed(responses, t, "OK", "CAPABILITY")
            self.state = AUTH
        else:
            self.counted_failure(responses, t, "AUTHENTICATIONFAILED")

    # -- authenticated -------------------------------------------------------------------

    @precondition(lambda self: self.state in COMMAND_STATES)
    @rule(examine=st.booleans(), folder=st.sampled_from(["INBOX", "inbox", "Missing"]))
    def select(self, examine: bool, folder: str) -> None:
        t = self.tag()
        responses, _ = self.send(f"{t} {'EXAMINE' if examine else 'SELECT'} {folder}")
        if self.state not in AUTHENTICATED_STATES:
            return self.bad_state(responses, t)
        if folder == "Missing":
            self.completed(responses, t, "NO", "NONEXISTENT")
            self.state = AUTH  # RFC 9051 6.3.2: a failed SELECT leaves nothing selected
            return
        self.completed(responses, t, "OK", "READ-ONLY" if examine else "READ-WRITE")
        assert any(isinstance(r, Data) and r.items[1:] == ("EXISTS",) for r in responses)
        self.state, self.readonly = SELECTED, examine

    @precondition(lambda self: self.state in COMMAND_STATES)
    @rule()
    def idle(self) -> None:
        t = self.tag()
        responses, _ = self.send(f"{t} IDLE")
        if self.state not in AUTHENTICATED_STATES:
            return self.bad_state(responses, t)
        assert responses[0] == Continue("idling"), responses
        assert all(isinstance(r, Data) for r in responses[1:]), responses  # updates, untagged
        self.state = IDLE_OF[self.state]
        self.pending = (t, "IDLE")

    @precondition(lambda self: self.state is State.IDLE_SELECTED)
    @rule()
    def idle_push(self) -> None:
        """What the I/O layer sends when the watch fires: untagged updates only."""
        updates = self.loop.run_until_complete(self.session.idle_updates())
        assert all(isinstance(r, Data) for r in updates), updates

    @precondition(lambda self: self.state in BACK_FROM_IDLE)
    @rule(line=st.sampled_from(["DONE", "done", "x2 NOOP", "DONE please", ""]))
    def end_idle(self, line: str) -> None:
        assert self.pending is not None
        t = self.pending[0]
        responses, _ = self.send(line)
        # RFC 2177 3: DONE ends IDLE; anything else is a BAD, and IDLE ends all the same.
        self.completed(responses, t, "OK" if line.upper() == "DONE" else "BAD")
        self.state, self.pending = BACK_FROM_IDLE[self.state], None

    # -- selected --------------------------------------------------------------------------

    @precondition(lambda self: self.state in COMMAND_STATES)
    @rule(name=st.sampled_from(["CLOSE", "UNSELECT"]))
    def close(self, name: str) -> None:
        t = self.tag()
        responses, _ = self.send(f"{t} {name}")
        if self.state is not SELECTED:
            return self.bad_state(responses, t)
        self.completed(responses, t, "OK")
        self.state = AUTH

    @precondition(lambda self: self.state in COMMAND_STATES)
    @rule(
        uid=st.booleans(),
        command=st.sampled_from(
            [
                "FETCH 1:* (FLAGS UID)",
                "SEARCH ALL",
                "SEARCH UNSEEN FROM bob",
                "STORE 1:* +FLAGS (\\Flagged)",
                "STORE 1:* -FLAGS.SILENT (\\Seen)",
            ]
        ),
    )
    def selected_command(self, uid: bool, command: str) -> None:
        t = self.tag()
        responses, _ = self.send(f"{t} {'UID ' if uid else ''}{command}")
        if self.state is not SELECTED:
            return self.bad_state(responses, t)
        if command.startswith("STORE") and self.readonly:
            self.completed(responses, t, "NO", "READ-ONLY")
        else:
            self.completed(responses, t, "OK")

    # -- the world around ------------------------------------------------------------------

    @precondition(lambda self: self.state is not State.LOGOUT)
    @rule()
    def another_party_delivers(self) -> None:
        self.loop.run_until_complete(self.core.deliver(ALICE, sample(f"delivered {self.n}")))

    @precondition(lambda self: self.state is State.LOGOUT)
    @rule(line=st.sampled_from(["z1 NOOP", "z2 LOGOUT", "DONE", "z3 AUTHENTICATE EXTERNAL ="]))
    def nothing_after_logout(self, line: str) -> None:
        responses, out = self.send(line)
        assert responses == [] and out == [Close()], out

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def the_session_is_where_the_model_is(self) -> None:
        s = self.session
        assert s.state is self.state, (s.state, self.state)
        if self.state is State.LOGOUT:
            assert s.idle is None and s.pending_auth is None
            return
        assert (s.idle is not None) == (self.state in BACK_FROM_IDLE)
        assert (s.pending_auth is not None) == (self.state is State.AUTHENTICATING)
        assert (s.view is not None) == (self.state in (SELECTED, State.IDLE_SELECTED))
        assert (s.handle is not None) == (self.state in (AUTH, SELECTED, *BACK_FROM_IDLE))
        if s.view is not None:
            assert s.view.readonly == self.readonly
        if s.idle is not None:
            assert self.pending is not None and s.idle.tag == self.pending[0]
        if s.pending_auth is not None:
            assert self.pending is not None and s.pending_auth.tag == self.pending[0]

    @invariant()
    def every_tagged_command_completes_exactly_once(self) -> None:
        assert all(n == 1 for n in self.completions.values()), self.completions
        waiting = {t for t in self.issued if t not in self.completions}
        # Every command was answered, but the one waiting for its continuation line.
        assert waiting <= ({self.pending[0]} if self.pending is not None else set()), waiting


ImapSession.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestImapSession = ImapSession.TestCase
