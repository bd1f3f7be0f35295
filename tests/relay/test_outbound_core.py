"""`mss.delivery` with the relay, on a real deployment (SQLite, and PostgreSQL when there):
other operators' recipients queued in the transaction of the local copies, DKIM-signed, end
to end when the directory knows their certificates; another operator's (SERV) relayed mail
checked, verified and stored; success DSNs; `Delivery.send_report`.

The queue is `mss.queue.RelayQueue` (the real one); its own behaviour (leases, retries,
encryption at rest) is tested in its own file.
"""

from __future__ import annotations

import uuid

import pytest
from mail import build_message, openssl_decrypt
from support import stored_messages

from annuaire.local import LocalDirectory
from annuaire.whitelist import import_whitelist
from crypto import dkim as dkim_keys
from crypto.pki import TestPKI
from crypto.rfc5322 import scan
from crypto.smime import decrypt
from mss.core import Core
from mss.delivery import Delivery
from mss.principal import Principal
from mss.queue import RelayQueue
from mss.records import MailDsn, RcptDsn, TraceInfo
from mss.refusals import Reason, Refusal
from smtp.replies import smtp_reply

REMOTE = "b.mssante.test"  # another operator, on the whitelist
THIRD = "c.mssante.test"  # a third one, on the whitelist too
WHITELIST = f"""<?xml version="1.0" encoding="UTF-8"?>
<ListeBlanche xmlns="https://listeblanche.mssante.fr/schema">
  <Domaine><Nom>{REMOTE}</Nom></Domaine>
  <Domaine><Nom>{THIRD}</Nom></Domaine>
</ListeBlanche>
"""
SUBMISSION = TraceInfo("poste.cabinet.test", "192.0.2.10:50000", "ESMTPSA", "TLSv1.3 TLS_AES_256_GCM_SHA384")
PEER_TRACE = TraceInfo("mx.b.mssante.test", "192.0.2.20:40000", "ESMTPS", "TLSv1.3 TLS_AES_256_GCM_SHA384")


def with_relay(settings, **changes):
    return settings.model_copy(update={"relay": settings.relay.model_copy(update=changes)})


@pytest.fixture
async def env(fresh_deployment, tmp_path):
    """A core, the whitelist, a DKIM key of our domain, and a Delivery with the real queue."""
    settings = fresh_deployment.settings()
    core = await Core.open(settings)
    wl = tmp_path / "listeblanche.xml"
    wl.write_text(WHITELIST, encoding="utf-8")
    await import_whitelist(core.engine, wl)
    dkim_dir = settings.path(settings.dkim.directory)
    dkim_keys.generate(settings.domain, "t1", "rsa").write(dkim_dir)
    queue = RelayQueue(settings, core.sessions)
    delivery = Delivery(settings, core.sessions, core.sealer, core.store, core.patients, queue=queue)
    yield core, delivery, queue
    await core.close()


def published_keys(settings, domain: str):
    """dkimpy's dnsfunc over every key of `domain` in the key directory (the DNS stand-in)."""
    folder = settings.path(settings.dkim.directory) / domain
    table = {}
    for path in folder.glob("*.key"):
        key = dkim_keys.load(path, domain, path.stem)
        table[f"{key.record_name}."] = key.txt_value().encode()

    def dnsfunc(name, timeout=5):
        return table.get(name.decode() if isinstance(name, bytes) else name)

    return dnsfunc


def claire_principal(dep) -> Principal:
    claire = dep.mailbox("PER", 0)["address"]
    return Principal("PS", "810000000001", "Claire", frozenset({claire}), claire)


def peer(domain: str = REMOTE) -> Principal:
    return Principal("SERV", "1750001232", "Opérateur B", frozenset(), domains=frozenset({domain}))


async def count_inbox(dep, address: str) -> int:
    return len(await stored_messages(dep, address))


# -- outbound ------------------------------------------------------------------------------------


async def test_a_remote_recipient_is_queued_with_the_local_copy(env, fresh_deployment):
    core, delivery, queue = env
    me = claire_principal(fresh_deployment)
    paul = fresh_deployment.mailbox("PER", 1)["address"]
    bob = f"bob@{REMOTE}"
    raw, msgid = build_message(me.primary, [paul, bob], "Compte rendu", "Bonjour,\nle compte rendu.\n")
    tx = delivery.begin(me, trace=SUBMISSION)
    tx.mail_from(me.primary, MailDsn(ret="HDRS", envid="ENV-1"))
    assert (await tx.add_recipient(paul)).kind == "local"
    recipient = await tx.add_recipient(bob.upper(), RcptDsn(frozenset({"SUCCESS", "FAILURE"}), f"rfc822;{bob}"))
    assert recipient.kind == "remote"
    assert queue.wakeup.is_set() is False
    result = await tx.deliver(raw)
    assert len(result.stored) == 1 and len(result.queued) == 1
    assert queue.wakeup.is_set()

    entry = await queue.get(result.queued[0])
    assert entry is not None
    assert (entry.domain, entry.mail_from, entry.envid, entry.ret) == (REMOTE, me.primary, "ENV-1", "HDRS")
    assert entry.end_to_end is False  # no certificate of bob known here: clear over mutual TLS
    (r,) = entry.recipients
    assert (r.address, r.orcpt, r.notify) == (bob, f"rfc822;{bob}", frozenset({"SUCCESS", "FAILURE"}))

    content = await queue.content(entry.id)
    fields = scan(content).fields
    assert fields[0].name == "Received"
    assert "from poste.cabinet.test ([192.0.2.10])" in fields[0].unfolded
    assert "with ESMTPSA" in fields[0].unfolded and f"for <{bob}>" in fields[0].unfolded
    assert fields[1].name == "DKIM-Signature"
    assert msgid.encode() in content and b"le compte rendu." in content
    # The signature verifies with the public key of our domain (what peers find in DNS).
    assert dkim_keys.verify(content, dnsfunc=published_keys(core.settings, core.settings.domain))
    # Paul's copy is there, stored in the same commit.
    assert await count_inbox(fresh_deployment, paul) == 1


async def test_the_queue_entry_and_the_local_copy_commit_together_or_not_at_all(env, fresh_deployment, monkeypatch):
    core, delivery, queue = env
    me = claire_principal(fresh_deployment)
    paul = fresh_deployment.mailbox("PER", 1)["address"]

    async def broken(s, messages, **kw):
        await RelayQueue.enqueue(queue, s, messages, **kw)  # the rows are written...
        raise RuntimeError("disk gone")  # ...and the transaction fails after them

    monkeypatch.setattr(queue, "enqueue", broken)
    raw, _ = build_message(me.primary, [paul, f"bob@{REMOTE}"], "s", "b\n")
    tx = delivery.begin(me)
    tx.mail_from(me.primary)
    await tx.add_recipient(paul)
    await tx.add_recipient(f"bob@{REMOTE}")
    with pytest.raises(RuntimeError, match="disk gone"):
        await tx.deliver(raw)
    assert await count_inbox(fresh_deployment, paul) == 0
    assert await queue.list() == []


async def test_a_message_for_remote_recipients_only_is_queued_before_the_answer(env, fresh_deployment):
    core, delivery, queue = env
    me = claire_principal(fresh_deployment)
    raw, _ = build_message(me.primary, [f"bob@{REMOTE}", f"eve@{REMOTE}", f"zoe@{THIRD}"], "s", "b\n")
    tx = delivery.begin(me)
    tx.mail_from(me.primary)
    for address in (f"bob@{REMOTE}", f"eve@{REMOTE}", f"zoe@{THIRD}"):
        await tx.add_recipient(address)
    result = await tx.deliver(raw)
    assert result.stored == () and len(result.queued) == 2  # one entry per domain
    entries = {e.domain: e for e in await queue.list()}
    assert set(entries) == {REMOTE, THIRD}
    assert sorted(r.address for r in entries[REMOTE].recipients) == [f"bob@{REMOTE}", f"eve@{REMOTE}"]
    # Two recipients in one copy: the Received field names neither (RFC 5321 7.6).
    assert b"for <" not in scan(await queue.content(entries[REMOTE].id)).fields[0].raw


async def test_relay_disabled_or_without_a_queue_refuses_other_operators(env, fresh_deployment):
    core, delivery, queue = env
    me = claire_principal(fresh_deployment)
    off = Delivery(
        with_relay(core.settings, enabled=False), core.sessions, core.sealer, core.store, core.patients, queue=queue
    )
    unwired = Delivery(core.settings, core.sessions, core.sealer, core.store, core.patients)
    for d in (off, unwired):
        with pytest.raises(Refusal) as err:
            await d.resolve(f"bob@{REMOTE}", principal=me, sender=me.primary)
        assert err.value.reason is Reason.RELAY_NOT_ENABLED
        assert smtp_reply(err.value).startswith("550 5.7.1")
    # Outside the trust space stays outside, relay or not.
    with pytest.raises(Refusal) as err:
        await delivery.resolve("x@gmail.com", principal=me, sender=me.primary)
    assert err.value.reason is Reason.OUTSIDE_TRUST_SPACE


async def test_a_patient_never_gets_a_remote_recipient(env, fresh_deployment):
    core, delivery, queue = env
    patient = Principal("PATIENT", "1", "P", frozenset({f"1@patient.{core.settings.domain}"}))
    with pytest.raises(Refusal) as err:
        await delivery.resolve(f"bob@{REMOTE}", principal=patient, sender=f"1@patient.{core.settings.domain}")
    assert err.value.reason is Reason.NOT_ALLOWED


async def test_end_to_end_when_every_remote_recipient_s_certificate_is_known(env, fresh_deployment, tmp_path):
    core, delivery, queue = env
    me = claire_principal(fresh_deployment)
    pki = TestPKI.load(fresh_deployment.directory / "pki" / "ca")
    bob, eve = f"bob@{REMOTE}", f"eve@{REMOTE}"
    issued = {a: pki.issue_encryption(a, surname=a.split("@")[0].upper(), given_name="X") for a in (bob, eve)}
    async with core.sessions() as s, s.begin():
        for address, cert in issued.items():
            await LocalDirectory(s).add_mailbox(address, "PER", idnat="8" + uuid.uuid4().hex[:11])
            await LocalDirectory(s).add_certificate(address, cert.cert)
    canary = f"CANARY-{uuid.uuid4().hex}"
    raw, msgid = build_message(me.primary, [bob, eve], f"Résultats {canary}", f"Bonjour {canary}\n")
    tx = delivery.begin(me, trace=SUBMISSION)
    tx.mail_from(me.primary)
    await tx.add_recipient(bob)
    await tx.add_recipient(eve)
    result = await tx.deliver(raw)
    entry = await queue.get(result.queued[0])
    assert entry.end_to_end is True
    content = await queue.content(entry.id)
    assert canary.encode() not in content  # neither the Subject nor the body in clear
    assert msgid.encode() in content  # the routing fields stay outside
    assert dkim_keys.verify(content, dnsfunc=published_keys(core.settings, core.settings.domain))
    for address in (bob, eve):  # each remote recipient's own key opens it
        inner = decrypt(content, issued[address].cert, issued[address].key)
        assert canary.encode() in inner


async def test_one_unknown_certificate_keeps_the_domain_s_copy_clear(env, fresh_deployment):
    core, delivery, queue = env
    me = claire_principal(fresh_deployment)
    pki = TestPKI.load(fresh_deployment.directory / "pki" / "ca")
    bob = f"bob@{REMOTE}"
    async with core.sessions() as s, s.begin():
        await LocalDirectory(s).add_mailbox(bob, "PER", idnat="8" + uuid.uuid4().hex[:11])
        await LocalDirectory(s).add_certificate(bob, pki.issue_encryption(bob).cert)
    raw, _ = build_message(me.primary, [bob, f"eve@{REMOTE}"], "s", "clear body\n")
    tx = delivery.begin(me)
    tx.mail_from(me.primary)
    await tx.add_recipient(bob)
    await tx.add_recipient(f"eve@{REMOTE}")
    result = await tx.deliver(raw)
    entry = await queue.get(result.queued[0])
    assert entry.end_to_end is False and b"clear body" in await queue.content(entry.id)


# -- inbound: another operator's relayed mail ------------------------------------------------------


async def test_serv_sender_rules(env, fresh_deployment):
    core, delivery, queue = env
    paul = fresh_deployment.mailbox("PER", 1)["address"]
    tx = delivery.begin(peer(), trace=PEER_TRACE)
    tx.mail_from("")  # a DSN: the null reverse-path, from another operator only
    await tx.add_recipient(paul)
    tx.mail_from(f"bob@{REMOTE}")
    with pytest.raises(Refusal) as err:
        delivery.begin(peer()).mail_from(f"zoe@{THIRD}")
    assert err.value.reason is Reason.NOT_ALLOWED and smtp_reply(err.value).startswith("550 5.7.1")
    with pytest.raises(Refusal) as err:
        delivery.begin(claire_principal(fresh_deployment)).mail_from("")
    assert err.value.reason is Reason.NOT_ALLOWED


@pytest.mark.parametrize("address", [f"zoe@{THIRD}", f"bob@{REMOTE}", "x@gmail.com"])
async def test_serv_cannot_relay_onwards(env, fresh_deployment, address):
    core, delivery, queue = env
    tx = delivery.begin(peer())
    tx.mail_from(f"bob@{REMOTE}")
    with pytest.raises(Refusal) as err:
        await tx.add_recipient(address)
    assert err.value.reason is Reason.RELAY_DENIED
    assert smtp_reply(err.value).startswith("550 5.7.1") and "Relaying denied" in err.value.public


async def test_serv_message_is_verified_recorded_and_stored_encrypted(env, fresh_deployment, tmp_path):
    core, delivery, queue = env
    paul = fresh_deployment.mailbox("PER", 1)
    key = dkim_keys.generate(REMOTE, "mss", "rsa")
    settings = with_relay(core.settings, dkim_keys={key.record_name: key.txt_value()})
    d = Delivery(settings, core.sessions, core.sealer, core.store, core.patients, queue=queue)
    canary = f"CANARY-{uuid.uuid4().hex}"
    raw, msgid = build_message(f"bob@{REMOTE}", [paul["address"]], "Réponse", f"Merci {canary}\n")
    forged_ar = f"Authentication-Results: {settings.domain}; dkim=pass header.d=nowhere\r\n".encode()
    signed = forged_ar + dkim_keys.sign(raw, key) + raw
    tx = d.begin(peer(), trace=PEER_TRACE)
    tx.mail_from(f"bob@{REMOTE}")
    await tx.add_recipient(paul["address"])
    result = await tx.deliver(signed)
    assert len(result.stored) == 1 and result.queued == ()
    (stored,) = [m for m in await stored_messages(fresh_deployment, paul["address"]) if msgid.encode() in m]
    assert canary.encode() not in stored
    inner = openssl_decrypt(fresh_deployment, paul, stored, tmp_path).replace(b"\r\n", b"\n")
    assert canary.encode() in inner
    results = [ln for ln in inner.split(b"\n") if ln.startswith(b"Authentication-Results:")]
    assert len(results) == 1 and results[0].startswith(f"Authentication-Results: {settings.domain};".encode())
    assert f"dkim=pass header.d={REMOTE} header.s=mss".encode() in inner
    assert b"header.d=nowhere" not in inner  # the forged one is gone
    assert b"Received: from mx.b.mssante.test ([192.0.2.20])" in inner


async def test_serv_refusals_loop_author_and_dkim(env, fresh_deployment):
    core, delivery, queue = env
    paul = fresh_deployment.mailbox("PER", 1)["address"]
    key = dkim_keys.generate(REMOTE, "mss", "rsa")
    other = dkim_keys.generate(REMOTE, "mss", "rsa")
    strict = with_relay(core.settings, dkim_keys={key.record_name: key.txt_value()}, refuse_dkim_fail=True)
    d = Delivery(strict, core.sessions, core.sealer, core.store, core.patients, queue=queue)
    raw, _ = build_message(f"bob@{REMOTE}", [paul], "s", "b\n")

    async def send(message: bytes) -> Refusal:
        tx = d.begin(peer(), trace=PEER_TRACE)
        tx.mail_from(f"bob@{REMOTE}")
        await tx.add_recipient(paul)
        with pytest.raises(Refusal) as err:
            await tx.deliver(message)
        return err.value

    hop = b"Received: from x by y; Wed, 02 Dec 2026 10:00:00 +0000\r\n"
    assert (await send(hop * strict.relay.max_hops + raw)).reason is Reason.MAIL_LOOP
    assert (await send(dkim_keys.sign(raw, other) + raw)).reason is Reason.DKIM_FAILED
    ours = raw.replace(f"From: <bob@{REMOTE}>".encode(), f"From: <{paul}>".encode())
    refusal = await send(dkim_keys.sign(ours, key) + ours)  # a peer cannot write as our users
    assert refusal.reason is Reason.NOT_ALLOWED and "domain your certificate speaks for" in refusal.public
    assert await count_inbox(fresh_deployment, paul) == 0


async def test_serv_notify_success_queues_a_success_dsn_to_the_sender_s_operator(env, fresh_deployment):
    core, delivery, queue = env
    paul = fresh_deployment.mailbox("PER", 1)["address"]
    raw, msgid = build_message(f"bob@{REMOTE}", [paul], "Avec accusé", "b\n")
    tx = delivery.begin(peer(), trace=PEER_TRACE)
    tx.mail_from(f"bob@{REMOTE}", MailDsn(ret="HDRS", envid="B-ENV-7"))
    await tx.add_recipient(paul, RcptDsn(frozenset({"SUCCESS"}), f"rfc822;{paul}"))
    result = await tx.deliver(raw)
    assert len(result.stored) == 1 and len(result.queued) == 1
    entry = await queue.get(result.queued[0])
    assert (entry.domain, entry.mail_from) == (REMOTE, "")  # the null reverse-path
    assert [r.address for r in entry.recipients] == [f"bob@{REMOTE}"]
    report = await queue.content(entry.id)
    assert b"report-type=delivery-status" in report
    assert b"Action: delivered" in report and b"Status: 2.0.0" in report
    assert b"Original-Envelope-Id: B-ENV-7" in report
    assert dkim_keys.verify(report, dnsfunc=published_keys(core.settings, core.settings.domain))
    # No DSN about a DSN: a null-sender message asking SUCCESS gets none.
    tx = delivery.begin(peer(), trace=PEER_TRACE)
    tx.mail_from("")
    await tx.add_recipient(paul, RcptDsn(frozenset({"SUCCESS"})))
    dsn_raw, _ = build_message(f"MAILER-DAEMON@{REMOTE}", [paul], "DSN", "b\n")
    assert (await tx.deliver(dsn_raw)).queued == ()


# -- reports made here -----------------------------------------------------------------------------


async def test_send_report_to_a_local_sender_lands_encrypted_in_the_inbox(env, fresh_deployment, tmp_path):
    core, delivery, queue = env
    claire = fresh_deployment.mailbox("PER", 0)
    canary = f"CANARY-{uuid.uuid4().hex}"
    report, msgid = build_message(f"MAILER-DAEMON@{core.settings.domain}", [claire["address"]], "DSN", canary + "\n")
    await delivery.send_report(claire["address"].upper(), report)
    (stored,) = [m for m in await stored_messages(fresh_deployment, claire["address"]) if msgid.encode() in m]
    assert canary.encode() not in stored
    assert canary.encode() in openssl_decrypt(fresh_deployment, claire, stored, tmp_path)


async def test_send_report_to_another_operator_is_queued_with_the_null_sender(env, fresh_deployment):
    core, delivery, queue = env
    report, _ = build_message(f"MAILER-DAEMON@{core.settings.domain}", [f"bob@{REMOTE}"], "DSN", "x\n")
    await delivery.send_report(f"bob@{REMOTE}", report)
    (entry,) = await queue.list()
    assert (entry.domain, entry.mail_from, [r.address for r in entry.recipients]) == (REMOTE, "", [f"bob@{REMOTE}"])
    assert queue.wakeup.is_set()


async def test_send_report_elsewhere_is_dropped(env, fresh_deployment):
    core, delivery, queue = env
    report, _ = build_message(f"MAILER-DAEMON@{core.settings.domain}", ["x@gmail.com"], "DSN", "x\n")
    for to in ("x@gmail.com", f"nobody@{core.settings.domain}", ""):
        await delivery.send_report(to, report)
    assert await queue.list() == []


async def test_serv_message_encrypted_by_its_sender_is_stored_as_it_came_with_our_trace(
    env, fresh_deployment, tmp_path
):
    from crypto.smime import protect_and_encrypt

    core, delivery, queue = env
    paul = fresh_deployment.mailbox("PER", 1)
    async with core.sessions() as s:
        certs = await LocalDirectory(s).encryption_certificates(paul["address"])
    canary = f"CANARY-{uuid.uuid4().hex}"
    clear, _ = build_message(f"bob@{REMOTE}", [paul["address"]], "s", f"{canary}\n")
    smime = protect_and_encrypt(clear, certs)
    tx = delivery.begin(peer(), trace=PEER_TRACE)
    tx.mail_from(f"bob@{REMOTE}")
    await tx.add_recipient(paul["address"])
    await tx.deliver(smime)
    (stored,) = await stored_messages(fresh_deployment, paul["address"])
    names = [f.name for f in scan(stored).fields]
    assert names[:2] == ["Received", "Authentication-Results"]
    assert b"dkim=none" in stored
    assert stored.endswith(scan(smime).body)  # the CMS object byte for byte
    assert canary.encode() in openssl_decrypt(fresh_deployment, paul, stored, tmp_path)


async def test_notify_success_on_local_delivery_reports_to_the_local_sender(env, fresh_deployment, tmp_path):
    core, delivery, queue = env
    me = claire_principal(fresh_deployment)
    claire, paul = fresh_deployment.mailbox("PER", 0), fresh_deployment.mailbox("PER", 1)["address"]
    raw, _ = build_message(me.primary, [paul], "Avec accusé", "b\n")
    tx = delivery.begin(me)
    tx.mail_from(me.primary, MailDsn(envid="LOCAL-1"))
    await tx.add_recipient(paul, RcptDsn(frozenset({"SUCCESS"})))
    result = await tx.deliver(raw)
    assert len(result.stored) == 2 and result.queued == ()  # Paul's copy and Claire's report
    (report,) = await stored_messages(fresh_deployment, claire["address"])
    inner = openssl_decrypt(fresh_deployment, claire, report, tmp_path)
    assert b"Action: delivered" in inner and b"Original-Envelope-Id: LOCAL-1" in inner
