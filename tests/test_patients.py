"""The patient space at the core (both backends): registry and life cycle, zero-access keys
with the reference client, the bridge (delivery, conversations, [FIN]), answers, blocks,
notifications, crypto-shredding. The SMTP replies are in test_patient_bridge.py."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, timedelta

import pytest
from mail import build_message
from sqlalchemy import text

from crypto.ins import ins_key
from crypto.patient import KdfParams, PatientCryptoError, derive_keys, normalise_activation_code
from crypto.patient_client import PatientClient
from mss.core import Core
from mss.notify import BODY, SUBJECT, Notifier, notification, portal_url
from mss.principal import Principal
from mss.refusals import Reason, Refusal

CLIENT = PatientClient()
PASSWORD = "correct horse battery staple"


def ins(body: str) -> str:
    return body + ins_key(body)


@pytest.fixture
async def core(fresh_deployment):
    c = await Core.open(fresh_deployment.settings())
    yield c
    await c.close()


def professional(dep, index: int = 0) -> tuple[Principal, str]:
    entry = dep.mailbox("PER", index)
    return Principal("PS", entry["idnat"], entry["name"], frozenset({entry["address"]}), entry["address"]), entry[
        "address"
    ]


async def activate(core, ins_value: str, code: str):
    record = await core.patients.key_record(ins_value)
    rewrap = await asyncio.to_thread(CLIENT.activate, code, PASSWORD, record)
    await core.patients.activate(ins_value, rewrap.old_auth_key, rewrap.new_auth_key, rewrap.wrapped.to_json())
    params = await core.patients.key_record(ins_value)
    auth = await asyncio.to_thread(CLIENT.login, PASSWORD, params)
    return await core.patients.authenticate(ins_value, auth)


async def send(core, principal, sender, to, subject="Résultats", body="texte", extra=""):
    raw, msgid = build_message(sender, list(to), subject, body, extra=extra)
    tx = core.submission.begin(principal)
    tx.mail_from(sender)
    for rcpt in to:
        await tx.add_recipient(rcpt)
    await tx.deliver(raw)
    return msgid


async def patient_inbox(core, address: str, folder: str = "INBOX") -> list[bytes]:
    info = await core.store.get_folder(address, folder)
    metas = await core.store.messages(address, info.id)
    content = await core.store.content(address, info.id, [m.uid for m in metas])
    return [content[m.uid] for m in metas]


async def test_create_refuses_a_bad_ins_and_names_the_check(core):
    for bad, reason in (
        ("1234", "length"),
        (ins("2690575123456")[:-2] + "00", "key"),
        ("2690575X23456" + "00", "characters"),
    ):
        with pytest.raises(Refusal) as err:
            await core.patients.create(bad, email="a@b.test")
        assert err.value.reason is Reason.BAD_ADDRESS and reason in err.value.log, (bad, err.value.log)
    corsica = ins("185082A123456")
    record, code = await core.patients.create(corsica, email="p@example.org", name="Pat")
    assert record.state == "pending" and record.address == f"{corsica}@patient.{core.settings.domain}"
    assert len(code.replace("-", "")) == 16
    with pytest.raises(Refusal):
        await core.patients.create(corsica, email="p@example.org")
    # The activation code is nowhere in the database, nor the private key.
    async with core.sessions() as s:
        row = (await s.execute(text("SELECT key_record, activation_hash FROM patient_space"))).one()
    assert code not in row[0] and code not in row[1] and row[1].startswith("$argon2id$")


async def test_activation_and_login_prove_knowledge_without_sending_it(core):
    value = ins("2690575123456")
    _, code = await core.patients.create(value, email="m@example.org", name="Marie")
    wrong = await asyncio.to_thread(CLIENT.login, "0000-0000-0000-0000", await core.patients.key_record(value))
    with pytest.raises(Refusal):
        await core.patients.activate(value, wrong, wrong, (await core.patients.key_record(value)))
    assert (await core.patients.get(value)).state == "pending"
    principal = await activate(core, value, code)
    assert principal.kind == "PATIENT" and principal.mailboxes == {f"{value}@patient.{core.settings.domain}"}
    assert (await core.patients.get(value)).state == "active"
    params = await core.patients.key_record(value)
    for identifier, password in ((value, "wrong password!!"), (ins("1850869123789"), PASSWORD), ("junk", PASSWORD)):
        key = await asyncio.to_thread(CLIENT.login, password, params)
        with pytest.raises(Refusal) as err:
            await core.patients.authenticate(identifier, key)
        assert err.value.public == "Invalid credentials"
    # The code works once: the key is no longer wrapped under it (the client finds out), and
    # the server no longer accepts its proof.
    with pytest.raises(PatientCryptoError):
        await asyncio.to_thread(CLIENT.activate, code, PASSWORD + "2", await core.patients.key_record(value))
    code_key, _ = derive_keys(normalise_activation_code(code), KdfParams.from_json(params))
    with pytest.raises(Refusal):
        await core.patients.activate(value, code_key, code_key, params)
    actions = [e.action for e in await core.patients.journal(value)]
    assert actions == ["created", "activated"]


async def test_mail_to_a_patient_is_encrypted_to_the_patient_only_and_threaded(core, fresh_deployment):
    value = ins("2690575123456")
    record, code = await core.patients.create(value, email="m@example.org", name="Marie")
    pro, sender = professional(fresh_deployment)
    paul = fresh_deployment.mailbox("PER", 1)["address"]
    canary = f"CANARY-{uuid.uuid4().hex}"
    # Mixed recipients: the patient and a colleague each get their own copy.
    first = await send(core, pro, sender, [record.address, paul], subject=f"Bilan {canary}", body=f"corps {canary}")
    (stored,) = await patient_inbox(core, record.address)
    assert canary.encode() not in stored and b"smime-type=authEnveloped-data" in stored
    # Before activation the mail waits; after it, the password opens it (and nothing else does).
    principal = await activate(core, value, code)
    key = await asyncio.to_thread(CLIENT.unlock, PASSWORD, await core.patients.key_record(value))
    inner = CLIENT.open(stored, key)
    assert f"Subject: Bilan {canary}".encode() in inner and f"corps {canary}".encode() in inner
    (conv,) = await core.patients.conversations(principal)
    assert conv.professional == sender and not conv.closed and conv.professional_name
    # An answer in the thread lands in the same conversation; [FIN] closes it, delivered.
    await send(core, pro, sender, [record.address], subject="Re: [FIN]", extra=f"In-Reply-To: {first}\r\n")
    assert not (await core.patients.conversation(principal, conv.id)).closed  # "Re: [FIN]" is not [FIN]
    await send(core, pro, sender, [record.address], subject="[FIN]", extra=f"References: {first}\r\n")
    closed = await core.patients.conversation(principal, conv.id)
    assert closed.closed and len(await patient_inbox(core, record.address)) == 3
    with pytest.raises(Refusal) as err:
        await core.patients.answer_rules(principal, conv.id)
    assert "a mis fin à vos échanges" in err.value.public
    # A later message from that professional in the thread reopens it.
    await send(core, pro, sender, [record.address], subject="Suite", extra=f"In-Reply-To: {first}\r\n")
    assert not (await core.patients.conversation(principal, conv.id)).closed
    # X-MSS-MES: FIN closes too; a message outside any thread starts a new conversation.
    await send(core, pro, sender, [record.address], subject="x", extra=f"In-Reply-To: {first}\r\nX-MSS-MES: FIN\r\n")
    assert (await core.patients.conversation(principal, conv.id)).closed
    await send(core, pro, sender, [record.address], subject="Nouveau sujet")
    assert len(await core.patients.conversations(principal)) == 2
    journal = [(e.actor_kind, e.action) for e in await core.patients.journal(value)]
    assert journal.count(("professional", "message_received")) == 6
    assert journal.count(("professional", "conversation_closed")) == 2


async def test_a_patient_answers_only_inside_an_open_conversation(core, fresh_deployment, tmp_path):
    from mail import openssl_decrypt

    value = ins("2690575123456")
    record, code = await core.patients.create(value, email="m@example.org", name="Marie")
    pro, sender = professional(fresh_deployment)
    paul = fresh_deployment.mailbox("PER", 1)["address"]
    await send(core, pro, sender, [record.address], subject="Question")
    principal = await activate(core, value, code)
    (conv,) = await core.patients.conversations(principal)

    # Outside a conversation (no `answering`), or to someone else: refused at the core API.
    tx = core.submission.begin(principal)
    tx.mail_from(record.address)
    with pytest.raises(Refusal) as err:
        await tx.add_recipient(sender)
    assert err.value.reason is Reason.NOT_ALLOWED
    tx = core.submission.begin(principal, answering=await core.patients.answer_rules(principal, conv.id))
    tx.mail_from(record.address)
    for other in (paul, f"{ins('1850869123789')}@patient.{core.settings.domain}"):
        with pytest.raises(Refusal):
            await tx.add_recipient(other)
    await tx.add_recipient(sender)
    canary = f"ANSWER-{uuid.uuid4().hex}"
    raw, _ = build_message(record.address, [sender], "Re: Question", f"réponse {canary}")
    await tx.deliver(raw)
    # The professional reads it with their own key; the patient keeps an encrypted Sent copy.
    info = await core.store.get_folder(sender, "INBOX")
    metas = await core.store.messages(sender, info.id)
    stored = (await core.store.content(sender, info.id, [metas[-1].uid]))[metas[-1].uid]
    assert canary.encode() not in stored
    entry = fresh_deployment.mailbox("PER", 0)
    assert canary.encode() in openssl_decrypt(fresh_deployment, entry, stored, tmp_path)
    (sent,) = await patient_inbox(core, record.address, "Sent")
    key = await asyncio.to_thread(CLIENT.unlock, PASSWORD, await core.patients.key_record(value))
    assert canary.encode() in CLIENT.open(sent, key)
    # A patient never writes to another patient, nor as someone else.
    with pytest.raises(Refusal):
        core.submission.begin(principal).mail_from(sender)
    # Blocked, the professional can no longer be answered, nor write.
    await core.patients.block(value, sender, by="patient")
    with pytest.raises(Refusal) as err:
        await core.patients.answer_rules(principal, conv.id)
    assert err.value.reason is Reason.NOT_ALLOWED
    tx = core.submission.begin(pro)
    tx.mail_from(sender)
    with pytest.raises(Refusal) as err:
        await tx.add_recipient(record.address)
    assert err.value.reason is Reason.NOT_ALLOWED and "not possible" in err.value.public
    await core.patients.unblock(value, sender, by="patient")
    await tx.add_recipient(record.address)


async def test_notifications_are_content_free_rate_limited_and_retried(core, fresh_deployment, tmp_path):
    value = ins("2690575123456")
    record, _ = await core.patients.create(value, email="marie@example.org", name="Marie")
    pro, sender = professional(fresh_deployment)
    sent: list[bytes] = []
    failing = [True]

    async def transport(msg):
        if failing[0]:
            raise OSError("MTA down")
        sent.append(msg.as_bytes())

    notifier = Notifier(core.settings, core.sessions, transport)
    canary = f"NOTIF-{uuid.uuid4().hex}"
    await send(core, pro, sender, [record.address], subject=f"Diagnostic {canary}", body=f"Tumeur {canary}")
    assert await notifier.send_due() == 0  # the MTA is down: kept, retried later
    async with core.sessions() as s:
        attempts, error = (await s.execute(text("SELECT attempts, last_error FROM patient_notification"))).one()
    assert attempts == 1 and "MTA down" in error
    failing[0] = False
    from datetime import datetime

    later = datetime.now(UTC) + timedelta(hours=2)
    assert await notifier.send_due(now=later) == 1
    # More mail within the window: one more notification only once the window is over.
    for _ in range(3):
        await send(core, pro, sender, [record.address], subject="encore")
    assert await notifier.send_due(now=later) == 0
    assert await notifier.send_due(now=later + timedelta(seconds=core.settings.patients.notify_window_s + 1)) == 1
    assert len(sent) == 2
    whole = sent[0].decode()
    for secret in (canary, "Diagnostic", "Tumeur", sender, pro.display_name, "Claire", "MARTIN", "Bilan"):
        assert secret not in whole, secret
    assert "marie@example.org" in whole and SUBJECT.split()[0] in whole
    assert notification(core.settings, "x@y.test").get_content() == BODY.format(portal=portal_url(core.settings))


async def test_closing_shreds_the_keys_first_then_everything_and_mail_is_refused(core, fresh_deployment):
    value = ins("2690575123456")
    record, code = await core.patients.create(value, email="m@example.org", name="Marie")
    pro, sender = professional(fresh_deployment)
    await send(core, pro, sender, [record.address], subject="avant")
    await activate(core, value, code)
    await core.patients.close(value, actor_kind="patient")
    async with core.sessions() as s:
        row = (
            await s.execute(
                text("SELECT state, key_record, auth_hash, activation_hash, certificate, email FROM patient_space")
            )
        ).one()
        counts = {
            t: (await s.execute(text(f"SELECT count(*) FROM {t}"))).scalar_one()  # noqa: S608 - fixed names
            for t in ("conversation", "patient_journal", "patient_notification", "patient_block")
        }
        folders = (
            await s.execute(text("SELECT count(*) FROM folder WHERE mailbox = :m"), {"m": record.address})
        ).scalar_one()
    assert row == ("closed", None, None, None, None, "")
    assert counts == dict.fromkeys(counts, 0) and folders == 0
    tx = core.submission.begin(pro)
    tx.mail_from(sender)
    with pytest.raises(Refusal) as err:
        await tx.add_recipient(record.address)
    assert err.value.reason is Reason.MAILBOX_DISABLED and "closed" in err.value.public
    with pytest.raises(Refusal):
        await core.patients.close(value)
    # Opposition before activation destroys the same way.
    other, _ = await core.patients.create(ins("1850869123789"), email="j@example.org")
    opposed = await core.patients.oppose(other.ins)
    assert opposed.state == "opposed"
    with pytest.raises(Refusal) as err:
        await core.patients.key_record(other.ins)
    assert err.value.reason is Reason.MAILBOX_DISABLED


async def test_import_reports_created_and_rejected_rows_by_reason(core, tmp_path):
    csv = tmp_path / "patients.csv"
    good = ins("2690575123456")
    csv.write_text(
        "ins,email,name\n"
        f"{good},m@example.org,Marie\n"
        f"{good[:-2]}00,x@example.org,Bad key\n"
        "123,y@example.org,Short\n"
        f"{good},m@example.org,Twice\n"
        "\n",
        encoding="utf-8",
    )
    report = await core.patients.import_csv(csv)
    assert [c["ins"] for c in report.created] == [good]
    assert report.rejected == {"ins key": [3], "ins length": [4], "duplicate": [5]}
