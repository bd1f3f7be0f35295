"""One delivery to several mailboxes: parsed once, protected once, encrypted once per mailbox
(DESIGN.md "Core services"), each copy opened by `openssl cms` with that mailbox's key."""

from __future__ import annotations

import pytest
from mail import build_message, find_stored, openssl_decrypt
from support import stored_messages

from crypto.smime import protect_and_encrypt
from mss import message as message_module
from mss import sealing
from mss.core import Core
from mss.message import parse_message
from mss.principal import Principal


@pytest.fixture
async def core(fresh_deployment):
    c = await Core.open(fresh_deployment.settings())
    yield c
    await c.close()


def _count(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[int]:
    calls: list[int] = []
    real = getattr(module, name)

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counting)
    return calls


async def test_one_parse_one_protection_one_encryption_per_mailbox(
    core, fresh_deployment, monkeypatch, tmp_path
) -> None:
    app, claire, paul = (
        fresh_deployment.mailbox("APP"),
        fresh_deployment.mailbox("PER", 0),
        fresh_deployment.mailbox("PER", 1),
    )
    parses = _count(monkeypatch, message_module, "parse_message")
    protections = _count(monkeypatch, sealing, "protect")
    encryptions = _count(monkeypatch, sealing, "encrypt")
    raw, msgid = build_message(app["address"], [claire["address"], paul["address"]], "Compte rendu", "Patient vu.\n")
    me = Principal("ORG", "1209270651", "LPS", frozenset({app["address"]}), app["address"])

    tx = core.submission.begin(me)
    tx.mail_from(app["address"])
    for rcpt in (claire["address"], paul["address"]):
        await tx.add_recipient(rcpt)
    result = await tx.deliver(raw)

    assert len(result.stored) == 3  # two INBOX copies and the practice software's Sent copy
    assert (len(parses), len(protections), len(encryptions)) == (1, 1, 3)
    copies = {
        name: find_stored(await stored_messages(fresh_deployment, entry["address"], folder), msgid)
        for name, entry, folder in (("claire", claire, "INBOX"), ("paul", paul, "INBOX"), ("app", app, "Sent"))
    }
    heads = {c.split(b"\r\n\r\n", 1)[0] for c in copies.values()}
    assert len(heads) == 1 and b"Subject: [...]" in heads.pop()  # one outer header for all
    assert len(set(copies.values())) == 3  # but a ciphertext of its own each
    payloads = {
        openssl_decrypt(fresh_deployment, entry, copies[name], tmp_path)
        for name, entry in (("claire", claire), ("paul", paul), ("app", app))
    }
    assert len(payloads) == 1 and b"Subject: Compte rendu" in payloads.pop()


async def test_an_already_encrypted_message_is_stored_as_it_came_for_every_mailbox(
    core, fresh_deployment, monkeypatch
) -> None:
    from crypto.pki import TestPKI

    claire, paul = fresh_deployment.mailbox("PER", 0), fresh_deployment.mailbox("PER", 1)
    pki = TestPKI.load(fresh_deployment.directory / "pki" / "ca")
    enc = pki.issue_encryption(f"x@{fresh_deployment.domain}", idnat="810001045367", surname="X", given_name="Y")
    sent = protect_and_encrypt(f"From: <{claire['address']}>\r\nSubject: s\r\n\r\nbody\r\n".encode(), [enc.cert])
    message = parse_message(sent, max_size=len(sent))
    assert message.encrypted

    encryptions = _count(monkeypatch, sealing, "encrypt")
    sealable = await core.sealer.prepare(message)
    for mailbox in (claire["address"], paul["address"]):
        stored, headers = await core.sealer.seal(mailbox, sealable)
        assert stored is sent and headers == message.outer
    assert encryptions == []
