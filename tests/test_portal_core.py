"""The patient portal's core (`Core.portal`, both backends): pre-login parameters and decoys,
activation and sign-in with the reference browser client, TOTP and recovery codes, the
throttle, sessions, the inbox and conversations (read state, IDOR), answers delivered
encrypted, settings, closing the space, and migration 0006."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import inspect
import time
import uuid
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
import test_patients
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import text
from support import run_alembic
from test_patients import CLIENT, PASSWORD, ins, patient_inbox, professional, send

import mss.throttle
from crypto.patient import normalise_activation_code
from mss.core import Core
from mss.portal import BAD_ACTIVATION, BAD_CODE, BAD_LOGIN, EXPIRED_ACTIVATION, CorePortal, build_answer, clean_subject
from mss.principal import Principal
from mss.refusals import Reason, Refusal
from mss.services import PatientPortal, WebServices

#: The fixture of test_patients.py: a Core over a fresh demo deployment (each backend).
core = test_patients.core
PARAM_KEYS = {"v", "kdf", "iterations", "salt"}
MARIE = ins("2690575123456")
JEAN = ins("1850869123789")


async def activate_in_browser(portal: PatientPortal, login: str, code: str, password: str = PASSWORD) -> Principal:
    """What the portal's JavaScript does: parameters, proof of the code, re-wrap, sign in."""
    params = await portal.activation_params(login)
    code_key = await asyncio.to_thread(CLIENT.login, normalise_activation_code(code), params)
    record = await portal.activation_record(login, code_key)
    rewrap = await asyncio.to_thread(CLIENT.activate, code, password, record)
    assert rewrap.old_auth_key == code_key
    await portal.activate(login, rewrap.old_auth_key, rewrap.new_auth_key, rewrap.wrapped.to_json())
    return await sign_in(portal, login, password)


async def sign_in(portal: PatientPortal, login: str, password: str = PASSWORD) -> Principal:
    params = await portal.login_params(login)
    auth = await asyncio.to_thread(CLIENT.login, password, params)
    return await portal.authenticate(login, auth)


async def new_patient(core: Core, value: str = MARIE, name: str = "Marie Durand") -> tuple[str, str]:
    record, code = await core.patients.create(value, email="m@example.org", name=name)
    return record.address, code


def test_core_portal_implements_the_protocol():
    """Core satisfies WebServices: `portal` is a CorePortal, whose methods are the Protocol's,
    with the same parameters and all of them coroutines."""
    assert Core.__dataclass_fields__["portal"].type in ("CorePortal", CorePortal)
    for name, member in vars(PatientPortal).items():
        if name.startswith("_") or not callable(member):
            continue
        mine = getattr(CorePortal, name)
        assert inspect.iscoroutinefunction(mine), name
        assert list(inspect.signature(mine).parameters) == list(inspect.signature(member).parameters), name
    assert "portal" in vars(WebServices)


async def test_prelogin_gives_real_params_only_for_the_right_state_and_stable_decoys_otherwise(core):
    portal = core.portal
    address, code = await new_patient(core)
    pending = await core.patients.key_record(MARIE)
    unknown = [JEAN, f"{JEAN}@{core.settings.patient_domain}", "junk", "", "x" * 10_000, "a@b@c\r\n", "\ud800"]
    decoys = [await portal.login_params(login) for login in unknown]
    for login, params in zip(unknown, decoys, strict=True):
        assert set(params) == PARAM_KEYS and params["iterations"] == core.settings.patients.kdf_iterations
        assert await portal.login_params(login) == params, login  # stable
    assert decoys[0] == decoys[1]  # an INS and its address are one login
    assert len({d["salt"] for d in decoys}) == len(decoys) - 1  # otherwise different per login
    # Pending: the activation parameters are the record's, sign-in gets a decoy.
    real = await portal.activation_params(MARIE)
    assert real == {k: pending[k] for k in PARAM_KEYS} and set(real) == PARAM_KEYS
    assert await portal.activation_params(address) == real
    assert (await portal.login_params(MARIE))["salt"] != pending["salt"]
    assert (await portal.activation_params(JEAN))["salt"] != (await portal.login_params(JEAN))["salt"]
    # Active: the other way round (the new record was written by the client, new salt).
    await activate_in_browser(portal, MARIE, code)
    record = await core.patients.key_record(MARIE)
    assert await portal.login_params(address) == {k: record[k] for k in PARAM_KEYS}
    assert (await portal.activation_params(MARIE))["salt"] not in (record["salt"], pending["salt"])
    # The deployment's secret is shared through the database, not per process.
    other = CorePortal(core.settings, core.sessions, core.patients, core.submission, core.mail)
    assert await other.secret() == await portal.secret() and len(await portal.secret()) == 32
    assert await other.login_params(JEAN) == decoys[0]
    # Two nodes creating it at once end up with the same one.
    async with core.sessions() as s, s.begin():
        await s.execute(text("DELETE FROM portal_secret"))
    nodes = [CorePortal(core.settings, core.sessions, core.patients, core.submission, core.mail) for _ in range(4)]
    made = await asyncio.gather(*(n.secret() for n in nodes))
    assert len(set(made)) == 1 and made[0] != await portal.secret()  # (the old one was cached here)


async def test_activation_then_sign_in_and_password_change_through_the_portal(core):
    portal = core.portal
    address, code = await new_patient(core)
    params = await portal.activation_params(MARIE)
    wrong = await asyncio.to_thread(CLIENT.login, normalise_activation_code("0000-0000-0000-0000"), params)
    for login, key in ((MARIE, wrong), (JEAN, wrong), ("junk", wrong), (MARIE, b"short")):
        with pytest.raises(Refusal) as err:
            await portal.activation_record(login, key)
        assert err.value.reason is Reason.NOT_ALLOWED and err.value.public == BAD_ACTIVATION
    with pytest.raises(Refusal) as err:
        await portal.activate(MARIE, wrong, wrong, await core.patients.key_record(MARIE))
    assert err.value.public == BAD_ACTIVATION
    assert (await core.patients.get(MARIE)).state == "pending"  # unchanged
    # An expired code is said to be so, but only to whoever proves it.
    _, jeans_code = await new_patient(core, JEAN, "Jean Martin")
    async with core.sessions() as s, s.begin():
        await s.execute(
            text("UPDATE patient_space SET activation_expires_at = :t WHERE ins = :i"),
            {"t": datetime.now(UTC) - timedelta(days=1), "i": JEAN},
        )
    jean_params = await portal.activation_params(JEAN)
    jean_key = await asyncio.to_thread(CLIENT.login, normalise_activation_code(jeans_code), jean_params)
    with pytest.raises(Refusal) as err:
        await portal.activation_record(JEAN, jean_key)
    assert err.value.reason is Reason.NOT_ALLOWED and err.value.public == EXPIRED_ACTIVATION
    with pytest.raises(Refusal) as err:
        await portal.activation_record(JEAN, wrong)
    assert err.value.public == BAD_ACTIVATION

    principal = await activate_in_browser(portal, MARIE, code)
    assert principal.kind == "PATIENT" and principal.identifier == MARIE and principal.default_mailbox == address
    assert (await sign_in(portal, address)).identifier == MARIE
    for login, password in ((MARIE, "wrong password!!"), (JEAN, PASSWORD), ("junk", PASSWORD)):
        with pytest.raises(Refusal) as err:
            await sign_in(portal, login, password)
        assert err.value.reason is Reason.NOT_ALLOWED and err.value.public == BAD_LOGIN
    # The code is spent, and an active space does not say so to whoever tries it.
    code_key = await asyncio.to_thread(CLIENT.login, normalise_activation_code(code), params)
    with pytest.raises(Refusal) as err:
        await portal.activation_record(MARIE, code_key)
    assert err.value.public == BAD_ACTIVATION

    # The full record comes only after the password is proven, then it can be re-wrapped.
    record = await portal.key_record(principal)
    assert {"wrapped", "iv"} <= set(record)
    with pytest.raises(Refusal) as err:
        await portal.password_record(principal, wrong)
    assert err.value.reason is Reason.NOT_ALLOWED and "mot de passe" in err.value.public
    old_key = await asyncio.to_thread(CLIENT.login, PASSWORD, record)
    assert await portal.password_record(principal, old_key) == record
    new_password = "un tout autre mot de passe"
    rewrap = await asyncio.to_thread(CLIENT.change_password, PASSWORD, new_password, record)
    here, _ = await portal.open_session(principal, pending_totp=False, client="192.0.2.1", user_agent="a")
    stolen, _ = await portal.open_session(principal, pending_totp=False, client="203.0.113.9", user_agent="b")
    await portal.change_password(
        principal, rewrap.old_auth_key, rewrap.new_auth_key, rewrap.wrapped.to_json(), current_session=here
    )
    # Every other session ends with the old password; the one that changed it stays.
    assert await portal.session(here) is not None and await portal.session(stolen) is None
    assert (await sign_in(portal, MARIE, new_password)).identifier == MARIE
    with pytest.raises(Refusal):
        await sign_in(portal, MARIE, PASSWORD)
    actions = [line.action for line in await portal.journal(principal)]
    assert actions[0] == "password_changed" and "activated" in actions


async def test_totp_enable_replay_recovery_and_disable(core):
    portal = core.portal
    _, code = await new_patient(core)
    principal = await activate_in_browser(portal, MARIE, code)
    assert not await portal.totp_required(principal)
    with pytest.raises(Refusal):
        await portal.second_factor(principal, "123456")  # not set up
    with pytest.raises(Refusal):
        await portal.totp_confirm(principal, "123456")  # not begun
    setup = await portal.totp_begin(principal)
    assert setup.uri.startswith("otpauth://totp/") and f"secret={setup.secret}" in setup.uri
    otp = pyotp.TOTP(setup.secret)
    wrong = f"{(int(otp.now()) + 1) % 1_000_000:06d}"
    with pytest.raises(Refusal) as err:
        await portal.totp_confirm(principal, wrong)
    assert err.value.public == BAD_CODE and not await portal.totp_required(principal)
    codes = await portal.totp_confirm(principal, otp.now())
    assert len(codes) == 10 and len(set(codes)) == 10
    assert await portal.totp_required(principal) and (await portal.me(principal)).totp
    with pytest.raises(Refusal):
        await portal.totp_begin(principal)  # already on
    # The code that confirmed is spent (RFC 6238 5.2), as is any code of an earlier step.
    with pytest.raises(Refusal) as err:
        await portal.second_factor(principal, otp.now())
    assert err.value.reason is Reason.NOT_ALLOWED and err.value.public == BAD_CODE
    nxt = otp.at(time.time() + 30)  # one step ahead: accepted (clock drift), once
    await portal.second_factor(principal, nxt[:3] + " " + nxt[3:])
    for again in (nxt, otp.now()):
        with pytest.raises(Refusal):
            await portal.second_factor(principal, again)
    # A recovery code works once, typed loosely; nothing is stored in clear.
    await portal.second_factor(principal, codes[0].lower().replace("-", " "))
    with pytest.raises(Refusal):
        await portal.second_factor(principal, codes[0])
    with pytest.raises(Refusal):
        await portal.second_factor(principal, "ZZZZ-ZZZZ-ZZZZ")
    async with core.sessions() as s:
        stored = (await s.execute(text("SELECT totp_recovery FROM patient_space"))).scalar_one()
    assert not any(c.replace("-", "") in stored for c in codes) and stored.count("sha256$") == 9
    # Turning it off needs a code too.
    with pytest.raises(Refusal):
        await portal.totp_disable(principal, "000000")
    await portal.totp_disable(principal, codes[1])
    assert not await portal.totp_required(principal)
    actions = [line.action for line in await portal.journal(principal)]
    assert actions[:4] == ["totp_disabled", "recovery_code_used", "recovery_code_used", "totp_enabled"]


async def test_throttle_backs_off_exponentially_per_key_and_resets_on_success(core):
    portal = core.portal
    core.settings.portal.account_free_failures = 3
    core.settings.portal.address_free_failures = 6
    core.settings.portal.max_backoff_s = 8
    keys = [f"account:{MARIE}|192.0.2.7", "address:192.0.2.7"]
    waits = []
    for _ in range(9):
        await portal.throttle_failed(keys)
        waits.append(round(await portal.throttle_wait(keys)))
    # 3 free, then 1, 2, 4 s, then capped at 8 (the address key's own back-off starts later).
    assert waits == [0, 0, 0, 1, 2, 4, 8, 8, 8], waits
    assert round(await portal.throttle_wait(["address:192.0.2.7"])) == 4  # 9 failures, 6 free
    assert await portal.throttle_wait(["address:198.51.100.1", f"account:{JEAN}"]) == 0
    # The account is the space, whichever way its login is typed.
    domain = core.settings.patient_domain.upper()
    assert round(await portal.throttle_wait([f"account:{MARIE}@{domain}|192.0.2.7"])) == 8
    await portal.throttle_succeeded(keys, reset=keys)
    assert await portal.throttle_wait(keys) == 0
    await portal.throttle_failed(keys)
    assert await portal.throttle_wait(keys) == 0  # counting starts again
    long_key = "totp:" + "é" * 5000
    for _ in range(4):
        await portal.throttle_failed([long_key])
    assert await portal.throttle_wait([long_key]) > 0
    async with core.sessions() as s:
        longest = (await s.execute(text("SELECT max(length(key)) FROM portal_throttle"))).scalar_one()
    assert longest <= 255


async def test_parallel_guesses_cannot_pass_the_throttle_together(core, monkeypatch):
    """Each attempt is reserved before its secret is checked: of 40 attempts sent at once,
    only the free ones and one more go through; a success refunds its reservation on the
    keys it does not reset, and account-wide and address keys have their own allowance.
    Time stands still: the first back-off is 1 s, which a loaded machine can spend between
    two attempts (CI once let an eighth through)."""
    frozen = datetime.now(UTC)
    monkeypatch.setattr(mss.throttle, "utc_now", lambda: frozen)
    portal = core.portal
    core.settings.portal.account_free_failures = 3
    core.settings.portal.account_wide_free_failures = 10
    core.settings.portal.max_backoff_s = 60
    keys = [f"account:{MARIE}", f"account:{MARIE}|203.0.113.0", "address:203.0.113.0"]
    waits = await asyncio.gather(*(portal.throttle_attempt(keys) for _ in range(40)))
    assert sum(1 for w in waits if w == 0) == 4, waits
    assert all(0 < w <= 60 for w in waits if w)
    # Another network: the pair key is fresh, the account-wide one still has room.
    other = [f"account:{MARIE}", f"account:{MARIE}|198.51.100.0", "address:198.51.100.0"]
    assert await portal.throttle_attempt(other) == 0
    # A success resets its pair key only; the account-wide and address keys are refunded.
    await portal.throttle_succeeded(other, reset=[other[1]])
    async with core.sessions() as s:
        rows = dict((await s.execute(text("SELECT key, failures FROM portal_throttle"))).all())
    assert rows[f"account:{MARIE}"] == 4 and f"account:{MARIE}|198.51.100.0" not in rows
    assert rows["address:198.51.100.0"] == 0
    # The account-wide key stops a guesser spread over many networks.
    allowed = 0
    for n in range(20):
        spread = [f"account:{MARIE}", f"account:{MARIE}|10.0.{n}.0", f"address:10.0.{n}.0"]
        allowed += await portal.throttle_attempt(spread) == 0
    assert allowed == 7, allowed  # 4 counted already, 10 free, then one more
    # A refused flood leaves no rows behind, and counters older than a day are forgotten.
    async with core.sessions() as s:
        before = (await s.execute(text("SELECT count(*) FROM portal_throttle"))).scalar_one()
    for n in range(30):
        flood = [f"account:{MARIE}", f"account:{MARIE}|10.9.{n}.0", f"address:10.9.{n}.0"]
        assert await portal.throttle_attempt(flood) > 0
    async with core.sessions() as s, s.begin():
        assert (await s.execute(text("SELECT count(*) FROM portal_throttle"))).scalar_one() == before
        await s.execute(
            text("UPDATE portal_throttle SET last_failure_at = :old WHERE key LIKE 'address:10.0.%'"),
            {"old": datetime.now(UTC) - timedelta(days=2)},
        )
    await portal.throttle_attempt(["address:192.0.2.200"])
    async with core.sessions() as s:
        left = (
            await s.execute(text("SELECT count(*) FROM portal_throttle WHERE key LIKE 'address:10.0.%'"))
        ).scalar_one()
    assert left == 0


async def test_sessions_expire_when_idle_and_keep_only_a_hash(core):
    portal = core.portal
    _, code = await new_patient(core)
    principal = await activate_in_browser(portal, MARIE, code)
    sid, session = await portal.open_session(
        principal, pending_totp=False, client="203.0.113.45", user_agent="Mozilla/5.0\r\nX: y"
    )
    assert session.handle == hashlib.sha256(sid.encode()).hexdigest() and not session.pending_totp
    assert len(sid) == 43  # 32 bytes, url-safe base64
    again = await portal.session(sid)
    assert again is not None and again.principal == principal and again.handle == session.handle
    assert 0 < (again.expires_at - again.created_at).total_seconds() <= core.settings.portal.idle_timeout_s
    async with core.sessions() as s:
        row = (await s.execute(text("SELECT * FROM portal_session"))).one()
    assert sid not in " ".join(str(v) for v in row)
    login = next(line for line in await portal.journal(principal) if line.action == "login")
    assert "203.0.113.0/24" in login.detail and "203.0.113.45" not in login.detail and "\n" not in login.detail
    # A pending session (waiting for TOTP) is its own and is not a login yet.
    pending_id, pending = await portal.open_session(principal, pending_totp=True, client="", user_agent="")
    assert pending.pending_totp and (await portal.session(pending_id)).pending_totp
    assert (pending.expires_at - pending.created_at).total_seconds() <= 300  # the second factor is due now
    assert [line.action for line in await portal.journal(principal)].count("login") == 1
    await portal.close_session(sid)
    assert await portal.session(sid) is None and await portal.session("not-a-session") is None
    assert await portal.session("é" * 30) is None
    # Idle for longer than the timeout, or past the absolute timeout however active: gone,
    # and their rows too.
    core.settings.portal.idle_timeout_s = 1
    idle_id, _ = await portal.open_session(principal, pending_totp=False, client="", user_agent="")
    core.settings.portal.idle_timeout_s = 900
    core.settings.portal.absolute_timeout_s = 1
    busy_id, _ = await portal.open_session(principal, pending_totp=False, client="", user_agent="")
    await asyncio.sleep(0.6)
    assert await portal.session(busy_id) is not None  # used: still there...
    await asyncio.sleep(0.6)
    assert await portal.session(busy_id) is None  # ...until the absolute timeout
    assert await portal.session(idle_id) is None  # not used for over its idle timeout
    async with core.sessions() as s:
        left = (await s.execute(text("SELECT count(*) FROM portal_session"))).scalar_one()
    assert left == 1 and await portal.session(pending_id) is not None  # opened under the old timeout


async def test_session_key_status_reads_and_the_certificate(core):
    """Each session has its own K_s (32 random bytes, in its row only, never in a repr); a
    status read (`touch=False`) leaves the idle expiry alone, any other read pushes it back;
    the certificate the browser checks the key against is the space's own, while it lives."""
    portal = core.portal
    _, code = await new_patient(core)
    with pytest.raises(Refusal):
        await portal.certificate("junk")
    pending_cert = await portal.certificate(MARIE)  # a pending space: for the activation check
    principal = await activate_in_browser(portal, MARIE, code)
    cert = x509.load_der_x509_certificate(await portal.certificate(f"{MARIE}@{core.settings.patient_domain}"))
    assert cert.public_bytes(Encoding.DER) == pending_cert
    assert (await core.patients.own_target(principal.default_mailbox)).certificate == cert

    sid, session = await portal.open_session(principal, pending_totp=False, client="", user_agent="")
    other_id, other = await portal.open_session(principal, pending_totp=False, client="", user_agent="")
    assert len(session.local_key) == 32 and len(other.local_key) == 32 and session.local_key != other.local_key
    assert session.local_key.hex() not in repr(session) and str(session.local_key) not in repr(session)
    assert (await portal.session(sid)).local_key == session.local_key
    pending_id, pending = await portal.open_session(principal, pending_totp=True, client="", user_agent="")
    assert pending.local_key == b"" and (await portal.session(pending_id)).local_key == b""
    await portal.close_session(pending_id)
    async with core.sessions() as s:
        stored = (
            await s.execute(text("SELECT local_key FROM portal_session WHERE id_hash = :h"), {"h": session.handle})
        ).scalar_one()
    assert bytes(stored) == session.local_key

    # Pretend the last request was a minute ago: a status read does not count as activity...
    past = datetime.now(UTC) - timedelta(seconds=60)
    idle_at = past + timedelta(seconds=core.settings.portal.idle_timeout_s)
    async with core.sessions() as s, s.begin():
        await s.execute(
            text("UPDATE portal_session SET last_seen_at = :p, idle_expires_at = :e WHERE id_hash = :h"),
            {"p": past, "e": idle_at, "h": session.handle},
        )
    for _ in range(3):
        looked = await portal.session(sid, touch=False)
        assert looked is not None and abs((looked.expires_at - idle_at).total_seconds()) < 1e-3
    # ...any other request does.
    used = await portal.session(sid)
    assert (used.expires_at - idle_at).total_seconds() >= 59
    assert (await portal.session(sid, touch=False)).expires_at == used.expires_at

    # The key goes with its session.
    await portal.close_session(sid)
    assert await portal.session(sid) is None and await portal.session(sid, touch=False) is None
    async with core.sessions() as s:
        keys = (await s.execute(text("SELECT local_key FROM portal_session"))).scalars().all()
    assert [bytes(k) for k in keys] == [other.local_key]
    await portal.close(principal)
    with pytest.raises(Refusal):
        await portal.certificate(MARIE)


async def test_inbox_read_state_pages_and_other_patients_ids(core, fresh_deployment):
    portal = core.portal
    address, code = await new_patient(core)
    other_address, other_code = await new_patient(core, JEAN, "Jean Martin")
    pro, sender = professional(fresh_deployment)
    org = fresh_deployment.mailbox("ORG")["address"]
    secretariat = Principal("PS", pro.identifier, pro.display_name, frozenset({sender, org}), sender)
    await send(core, pro, sender, [address], subject="Premier")
    await send(core, secretariat, org, [address], subject="Rendez-vous")
    await send(core, pro, sender, [other_address], subject="Pour Jean")
    marie = await activate_in_browser(portal, MARIE, code)
    jean = await activate_in_browser(portal, JEAN, other_code)

    inbox = await portal.inbox(marie, 1)
    assert (inbox.page, inbox.pages, inbox.total, inbox.unread) == (1, 1, 2, 2)
    newest, oldest = inbox.conversations
    assert newest.professional == org and newest.professional_kind == "etablissement"
    assert oldest.professional == sender and oldest.professional_kind == "professionnel"
    assert oldest.professional_name and all(c.unread and c.latest_message for c in inbox.conversations)

    view = await portal.conversation(marie, oldest.id)
    assert [(i.direction, i.sender_name) for i in view.items] == [("in", oldest.professional_name)]
    assert view.answer_refused is None and view.summary.latest_message == view.items[-1].id
    inbox = await portal.inbox(marie, 1)
    assert inbox.unread == 1 and [c.unread for c in inbox.conversations] == [True, False]
    line = (await portal.journal(marie))[0]
    assert (line.action, line.actor_kind, line.detail) == ("conversation_read", "patient", oldest.professional_name)
    stored = await portal.message(marie, view.items[0].id)
    assert b"smime-type=authEnveloped-data" in stored
    assert stored in await patient_inbox(core, address)

    # Another patient's ids are "not found", exactly like ids that do not exist.
    (jeans,) = (await portal.inbox(jean, 1)).conversations
    for conversation_id in (oldest.id, 10**9):
        with pytest.raises(Refusal) as err:
            await portal.conversation(jean, conversation_id)
        assert err.value.reason is Reason.UNKNOWN_RECIPIENT
        with pytest.raises(Refusal) as err:
            await portal.answer(jean, conversation_id, "x", "texte")
        assert err.value.reason is Reason.UNKNOWN_RECIPIENT
    for message_id in (view.items[0].id, newest.latest_message, 10**9):
        with pytest.raises(Refusal) as err:
            await portal.message(jean, message_id)
        assert err.value.reason is Reason.UNKNOWN_RECIPIENT
    assert (await portal.message(jean, jeans.latest_message)) != stored
    with pytest.raises(Refusal):
        await portal.inbox(pro, 1)  # professionals have no portal

    # Pages from 1; below is the first, past the end is the last.
    core.settings.portal.inbox_page_size = 1
    pages = [await portal.inbox(marie, n) for n in (0, 1, 2, 3, 99)]
    assert [(p.page, p.pages, p.total) for p in pages] == [(1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2)]
    assert [p.conversations[0].id for p in pages] == [newest.id, newest.id, oldest.id, oldest.id, oldest.id]
    assert pages[0].unread == 1


async def test_answer_is_delivered_encrypted_and_refused_once_closed(core, fresh_deployment, tmp_path):
    from mail import openssl_decrypt

    portal = core.portal
    address, code = await new_patient(core)
    pro, sender = professional(fresh_deployment)
    first = await send(core, pro, sender, [address], subject="Question")
    marie = await activate_in_browser(portal, MARIE, code)
    (conv,) = (await portal.inbox(marie, 1)).conversations
    canary = f"ANSWER-{uuid.uuid4().hex}"
    for bad in ("", "  \n\t "):
        with pytest.raises(Refusal) as err:
            await portal.answer(marie, conv.id, "Re: Question", bad)
        assert err.value.reason is Reason.MALFORMED_MESSAGE and err.value.public == "Votre réponse est vide."
    with pytest.raises(Refusal) as err:
        await portal.answer(marie, conv.id, "x", "a" * (core.settings.portal.answer_max_chars + 1))
    assert err.value.reason is Reason.MALFORMED_MESSAGE

    await portal.answer(marie, conv.id, "Re: Question\r\nBcc: evil@example.org", f"Bonjour,\nréponse {canary}\n")
    info = await core.store.get_folder(sender, "INBOX")
    metas = await core.store.messages(sender, info.id)
    stored = (await core.store.content(sender, info.id, [metas[-1].uid]))[metas[-1].uid]
    assert canary.encode() not in stored
    clear = openssl_decrypt(fresh_deployment, fresh_deployment.mailbox("PER", 0), stored, tmp_path)
    assert canary.encode() in _decoded_body(clear)
    inner = email.message_from_bytes(clear, policy=email.policy.default)
    assert inner["In-Reply-To"].strip() == first and inner["References"].strip() == first and "Bcc" not in inner
    assert inner["Subject"] == "Re: Question Bcc: evil@example.org"
    assert inner["From"] == f"Marie Durand <{address}>" and inner["To"].addresses[0].addr_spec == sender
    assert inner["Message-ID"].strip().endswith(f"@{core.settings.patient_domain}>")
    # The patient's own copy, encrypted to the patient; the conversation shows it.
    (sent,) = await patient_inbox(core, address, "Sent")
    key = await asyncio.to_thread(CLIENT.unlock, PASSWORD, await portal.key_record(marie))
    assert canary.encode() in _decoded_body(CLIENT.open(sent, key))
    view = await portal.conversation(marie, conv.id)
    assert [(i.direction, i.sender_name) for i in view.items] == [
        ("in", conv.professional_name),
        ("out", "Marie Durand"),
    ]
    assert await portal.message(marie, view.items[1].id) == sent
    exported = await portal.export(marie)
    assert [(e.message, e.conversation, e.direction) for e in exported] == [
        (view.items[0].id, conv.id, "in"),
        (view.items[1].id, conv.id, "out"),
    ]
    assert (await portal.journal(marie))[1].action == "message_sent"

    # [FIN]: the conversation is closed for the patient, with the professional's name.
    await send(core, pro, sender, [address], subject="[FIN]", extra=f"References: {first}\r\n")
    view = await portal.conversation(marie, conv.id)
    assert view.answer_refused == f"{conv.professional_name} a mis fin à vos échanges."
    assert view.summary.closed_at is not None
    with pytest.raises(Refusal) as err:
        await portal.answer(marie, conv.id, "Re: [FIN]", "encore une question")
    assert err.value.reason is Reason.NOT_ALLOWED and err.value.public == view.answer_refused


def _decoded_body(raw: bytes) -> bytes:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    part = next(p for p in msg.walk() if p.get_content_type() == "text/plain")
    return part.get_content().encode("utf-8")


def test_answers_are_built_with_clean_headers():
    raw, msgid = build_answer(
        patient_name="Zoé «L'Hôpital»",
        patient_address="x@patient.test",
        professional="dr@mss.test",
        professional_name="Dr Who",
        subject="a\u2028b\x00c\u202ed" + "é" * 500,
        text="ligne 1\nligne 2 " + "long " * 300,
        in_reply_to="<a@b>",
        references=["<a@b>"],
        domain="patient.test",
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"\n" not in raw.replace(b"\r\n", b"") and b"\r" not in raw.replace(b"\r\n", b"")
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert msgid.endswith("@patient.test>") and f"Message-ID: {msgid}".encode() in head
    assert b'charset="utf-8"' in head or b"charset=utf-8" in head
    assert clean_subject("a\r\nb\x00c\u202ed") == "a b c d" and clean_subject(" \r\n") == "Re: (sans objet)"
    assert len(clean_subject("é" * 500)) == 200


async def test_settings_blocks_notifications_and_closing_end_everything(core, fresh_deployment):
    portal = core.portal
    address, code = await new_patient(core)
    pro, sender = professional(fresh_deployment)
    await send(core, pro, sender, [address], subject="Bonjour")
    marie = await activate_in_browser(portal, MARIE, code)
    me = await portal.me(marie)
    assert (me.ins, me.address, me.name, me.notify, me.totp, me.blocked) == (
        MARIE,
        address,
        "Marie Durand",
        True,
        False,
        (),
    )
    assert [p for p, _ in me.professionals] == [sender]
    await portal.set_notify(marie, False)
    await portal.block(marie, sender.upper())
    for bad in ("pas une adresse", f"{JEAN}@{core.settings.patient_domain}", "a@b\r\nX: y", "x" * 400 + "@b.fr"):
        with pytest.raises(Refusal) as err:
            await portal.block(marie, bad)
        assert err.value.reason is Reason.BAD_ADDRESS
    me = await portal.me(marie)
    assert not me.notify and me.blocked == (sender,)
    (conv,) = (await portal.inbox(marie, 1)).conversations
    assert "bloqué" in (await portal.conversation(marie, conv.id)).answer_refused
    await portal.unblock(marie, sender)
    assert (await portal.me(marie)).blocked == ()
    await portal.note(marie, "journal_csv_export\r\n" + "x" * 100, "onglet moi")
    lines = await portal.journal(marie)
    assert lines[0].action.startswith("journal_csv_export") and len(lines[0].action) <= 32
    assert [line.action for line in lines[1:5]] == ["unblocked", "conversation_read", "blocked", "notifications_off"]
    assert lines == sorted(lines, key=lambda line: line.at, reverse=True)

    salt = (await portal.login_params(MARIE))["salt"]
    sid, _ = await portal.open_session(marie, pending_totp=False, client="::1", user_agent="UA")
    other, _ = await portal.open_session(marie, pending_totp=True, client="::1", user_agent="UA")
    await portal.close(marie)
    assert await portal.session(sid) is None and await portal.session(other) is None
    assert (await core.patients.get(MARIE)).state == "closed"
    with pytest.raises(Refusal) as err:
        await sign_in(portal, MARIE)
    assert err.value.public == BAD_LOGIN
    assert (await portal.login_params(MARIE))["salt"] != salt  # a decoy now
    with pytest.raises(Refusal):
        await portal.open_session(marie, pending_totp=False, client="", user_agent="")
    with pytest.raises(Refusal):
        await portal.close(marie)


# -- migration 0006 -------------------------------------------------------------------------


@pytest.fixture
def db_url(empty_database_url: str) -> str:
    return empty_database_url


_alembic = run_alembic


async def test_migration_0006_upgrades_a_0005_database_and_downgrades(db_url):
    from mss.db.engine import create_engine

    await asyncio.to_thread(_alembic, db_url, "upgrade", "0005")
    engine = create_engine(db_url)
    try:
        async with engine.begin() as c:
            await c.execute(
                text(
                    "INSERT INTO patient_space (ins, address, display_name, email, state, notify, created_at) "
                    "VALUES (:i, :a, 'Marie', '', 'pending', true, '2026-11-02 10:00:00+00:00')"
                ),
                {"i": MARIE, "a": f"{MARIE}@patient.x.test"},
            )
            await c.execute(
                text(
                    "INSERT INTO conversation (ins, professional, professional_name, started_at, last_at) "
                    "VALUES (:i, 'dr@x.test', 'Dr', '2026-11-02 10:00:00+00:00', '2026-11-02 10:00:00+00:00')"
                ),
                {"i": MARIE},
            )
        await asyncio.to_thread(_alembic, db_url, "upgrade", "head")
        await asyncio.to_thread(_alembic, db_url, "upgrade", "head")  # nothing left to do
        async with engine.connect() as c:
            row = (await c.execute(text("SELECT state, totp_secret, totp_recovery FROM patient_space"))).one()
            assert tuple(row) == ("pending", None, None)
            for table in ("portal_session", "portal_secret", "portal_throttle"):
                assert (await c.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one() == 0  # noqa: S608
            assert (await c.execute(text("SELECT count(local_key) FROM portal_session"))).scalar_one() == 0
        # A database of an earlier build of 0006 (no session key column) gains it.
        async with engine.begin() as c:
            await c.execute(text("ALTER TABLE portal_session DROP COLUMN local_key"))
            await c.execute(text("UPDATE alembic_version SET version_num = '0005'"))
        await asyncio.to_thread(_alembic, db_url, "upgrade", "head")
        async with engine.connect() as c:
            assert (await c.execute(text("SELECT count(local_key) FROM portal_session"))).scalar_one() == 0
        await asyncio.to_thread(_alembic, db_url, "downgrade", "0005")
        async with engine.connect() as c:
            assert (await c.execute(text("SELECT count(*) FROM conversation"))).scalar_one() == 1
            with pytest.raises(Exception):  # noqa: B017 - the column is gone, whatever the driver says
                await c.execute(text("SELECT totp_secret FROM patient_space"))
        await asyncio.to_thread(_alembic, db_url, "upgrade", "head")
    finally:
        await engine.dispose()


def test_portal_settings_have_defaults_and_bounds():
    from pydantic import ValidationError

    from mss.config import PortalSettings, Settings

    defaults = Settings(domain="x.test").portal
    assert (defaults.idle_timeout_s, defaults.absolute_timeout_s, defaults.warn_before_s) == (900, 43200, 120)
    assert (defaults.account_free_failures, defaults.address_free_failures, defaults.max_backoff_s) == (5, 50, 900)
    assert (defaults.answer_max_chars, defaults.inbox_page_size) == (10_000, 20)
    assert Settings.model_validate({"domain": "x.test", "portal": {"idle_timeout_s": 60}}).portal.idle_timeout_s == 60
    for bad in (
        {"idle_timeout_s": 0},
        {"idle_timeout_s": 7200, "absolute_timeout_s": 3600},
        {"max_backoff_s": 86400},
        {"inbox_page_size": 0},
        {"idle_timeot_s": 60},
    ):
        with pytest.raises(ValidationError):
            PortalSettings.model_validate(bad)
