"""Recipient routing: local mailbox, unknown local, another operator of the trust space
(whitelist), or outside the trust space; each with its own reply."""

from __future__ import annotations

import asyncio

import idna
import pytest

from annuaire.whitelist import import_whitelist
from mss.core import Core
from mss.principal import Principal
from mss.refusals import Reason, Refusal
from smtp.replies import smtp_reply

PRO = Principal(
    "PS",
    "810000000001",
    "Claire",
    frozenset({"claire.martin@hopital-demo.mssante.test"}),
    "claire.martin@hopital-demo.mssante.test",
)

WHITELIST = """<?xml version="1.0" encoding="UTF-8"?>
<ListeBlanche xmlns="https://listeblanche.mssante.fr/schema">
  <Domaine><Nom>medecin.mssante.fr</Nom></Domaine>
  <Domaine><Nom>clinique-sainte-hélène.mssante.fr</Nom></Domaine>
</ListeBlanche>
"""


@pytest.fixture
async def core(fresh_deployment, tmp_path):
    c = await Core.open(fresh_deployment.settings())
    wl = tmp_path / "listeblanche.xml"
    wl.write_text(WHITELIST, encoding="utf-8")
    await import_whitelist(c.engine, wl)
    yield c
    await c.close()


async def test_each_kind_of_recipient_gets_its_reply(core, fresh_deployment):
    from mss.delivery import Delivery
    from mss.queue import RelayQueue

    paul = fresh_deployment.mailbox("PER", 1)["address"]
    assert (await core.submission.resolve(paul.upper(), principal=PRO, sender=PRO.primary)).kind == "local"
    # Another operator of the trust space: relayed (queued at DATA) when relaying is on...
    relaying = Delivery(
        core.settings,
        core.sessions,
        core.sealer,
        core.store,
        core.patients,
        queue=RelayQueue(core.settings, core.sessions),
    )
    # ...and refused clearly when it is off (`[relay] enabled = false`).
    off = core.settings.model_copy(update={"relay": core.settings.relay.model_copy(update={"enabled": False})})
    not_relaying = Delivery(off, core.sessions, core.sealer, core.store, core.patients)
    trust_space = ["dr.x@medecin.mssante.fr", "dr.y@" + idna.encode("clinique-sainte-hélène.mssante.fr").decode()]
    for address in trust_space:
        assert (await relaying.resolve(address, principal=PRO, sender=PRO.primary)).kind == "remote"
        with pytest.raises(Refusal) as err:
            await not_relaying.resolve(address, principal=PRO, sender=PRO.primary)
        assert err.value.reason is Reason.RELAY_NOT_ENABLED and "trust space is not enabled" in err.value.public
        assert smtp_reply(err.value).startswith("550 5.7.1")
    cases = {
        f"nobody@{fresh_deployment.domain}": (Reason.UNKNOWN_RECIPIENT, "does not exist"),
        "someone@gmail.com": (Reason.OUTSIDE_TRUST_SPACE, "outside the health trust space"),
        "dr.z@sub.medecin.mssante.fr": (Reason.OUTSIDE_TRUST_SPACE, "outside the health trust space"),
    }
    for address, (reason, text) in cases.items():
        for delivery in (relaying, not_relaying):
            with pytest.raises(Refusal) as err:
                await delivery.resolve(address, principal=PRO, sender=PRO.primary)
            assert err.value.reason is reason and text in err.value.public, address
            assert smtp_reply(err.value).startswith("550 5.1.1" if reason is Reason.UNKNOWN_RECIPIENT else "550 5.7.1")


async def test_a_mailbox_without_encryption_certificate_is_refused_at_rcpt(core, fresh_deployment):
    from annuaire.local import LocalDirectory

    address = f"sans.cle@{fresh_deployment.domain}"
    async with core.sessions() as s, s.begin():
        await LocalDirectory(s).add_mailbox(address, "PER", idnat="810000000009")
    with pytest.raises(Refusal) as err:
        await core.submission.resolve(address, principal=PRO, sender=PRO.primary)
    assert err.value.reason is Reason.NO_ENCRYPTION_KEY and smtp_reply(err.value).startswith("550 5.7.1")
    assert "no valid encryption certificate" in err.value.public


async def test_from_header_must_name_the_authenticated_users_mailbox(core, fresh_deployment):
    from mss.principal import Principal

    claire, paul = fresh_deployment.mailbox("PER", 0)["address"], fresh_deployment.mailbox("PER", 1)["address"]
    org = fresh_deployment.mailbox("ORG")["address"]
    me = Principal("PS", "x", "Claire", frozenset({claire, org}), claire)

    def msg(headers: str) -> bytes:
        return (headers + "Date: Tue, 24 Nov 2026 10:00:00 +0000\r\nSubject: s\r\n\r\nbody\r\n").encode()

    for headers, who in (
        (f"From: Paul <{paul}>\r\n", paul),
        (f"From: <{claire}>, <{paul}>\r\n", paul),
        (f"From: <{claire}>\r\nSender: <{paul}>\r\n", paul),
    ):
        tx = core.submission.begin(me)
        tx.mail_from(claire)
        await tx.add_recipient(paul)
        with pytest.raises(Refusal) as err:
            await tx.deliver(msg(headers))
        assert err.value.reason is Reason.NOT_ALLOWED and who in err.value.public
    # Her own mailbox, and the ORG mailbox she belongs to, are fine.
    for headers in (f"From: Claire <{claire.upper()}>\r\n", f"From: <{org}>\r\nSender: <{claire}>\r\n"):
        tx = core.submission.begin(me)
        tx.mail_from(claire)
        await tx.add_recipient(paul)
        result = await tx.deliver(msg(headers))
        assert len(result.stored) == 1


async def test_stopping_commits_what_is_queued(fresh_deployment):
    from mss.store import NewMessage, OuterHeaders

    c = await Core.open(fresh_deployment.settings())
    paul = fresh_deployment.mailbox("PER", 1)["address"]
    try:
        writes = [
            asyncio.create_task(c.store.write([NewMessage(paul, "INBOX", b"x%d" % i, OuterHeaders())]))
            for i in range(20)
        ]
        await asyncio.sleep(0)
        await c.store.close()
        refs = await asyncio.gather(*writes)
        assert sorted(r[0].uid for r in refs) == list(range(1, 21))
    finally:
        await c.close()


async def test_operator_may_hide_the_clear_subject_of_messages_encrypted_by_their_sender(core, fresh_deployment):
    from crypto.pki import TestPKI
    from crypto.smime import protect_and_encrypt
    from mss.sealing import Sealer

    pki = TestPKI.load(fresh_deployment.directory / "pki" / "ca")
    enc = pki.issue_encryption(f"x@{fresh_deployment.domain}", idnat="810001045367", surname="X", given_name="Y")
    sent = protect_and_encrypt(b"From: <a@b.test>\r\nSubject: s\r\n\r\nbody\r\n", [enc.cert]).replace(
        b"Subject: [...]", b"Subject: Patient DUPONT"
    )
    paul = fresh_deployment.mailbox("PER", 1)["address"]
    as_it_came, _ = await core.sealer.seal(paul, sent)
    assert as_it_came == sent
    hiding = core.settings.model_copy(
        update={"delivery": core.settings.delivery.model_copy(update={"hide_subject_of_encrypted": True})}
    )
    hidden, headers = await Sealer(hiding, core.sessions).seal(paul, sent)
    assert b"DUPONT" not in hidden and headers.subject == "[...]"


async def test_the_sent_copy_follows_what_the_principal_read_at_authentication(core, fresh_deployment):
    """A principal carries which of its mailboxes keep a Sent copy (read with them at
    authentication), so a submission looks nothing up for it; one built without that
    knowledge (None) still gets the directory's answer."""
    app = fresh_deployment.mailbox("APP")
    paul = fresh_deployment.mailbox("PER", 1)["address"]
    raw = (f"From: <{app['address']}>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\nSubject: s\r\n\r\nbody\r\n").encode()
    stored = {}
    for name, sent_copy in (("unknown", None), ("keeps", frozenset({app["address"]})), ("keeps none", frozenset())):
        me = Principal("ORG", "x", "DPI", frozenset({app["address"]}), app["address"], sent_copy=sent_copy)
        tx = core.submission.begin(me)
        tx.mail_from(app["address"])
        await tx.add_recipient(paul)
        stored[name] = sorted(ref.mailbox for ref in (await tx.deliver(raw)).stored)
    assert stored == {
        "unknown": sorted([paul, app["address"]]),
        "keeps": sorted([paul, app["address"]]),
        "keeps none": [paul],
    }
    narrowed = Principal(
        "PS", "x", "C", frozenset({"a@x.test", "b@x.test"}), "a@x.test", sent_copy=frozenset({"b@x.test"})
    )
    assert (narrowed.keeps_sent_copy("B@x.test"), narrowed.keeps_sent_copy("a@x.test")) == (True, False)
    assert narrowed.restricted_to("a@x.test").keeps_sent_copy("a@x.test") is False
    assert narrowed.restricted_to("b@x.test").keeps_sent_copy("b@x.test") is True
    assert PRO.keeps_sent_copy(PRO.primary) is None
