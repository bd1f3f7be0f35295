"""`LocalDirectory.delivery_target`: what every RCPT reads of a local mailbox, in one query
(its type, its Sent-copy setting, the certificates a message for it is encrypted to)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import event

from annuaire.local import LocalDirectory

NOW = datetime.now(UTC)


def _cert(cn: str, *, days_from: int = -1, days_to: int = 365) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + timedelta(days=days_from))
        .not_valid_after(NOW + timedelta(days=days_to))
        .sign(key, hashes.SHA256())
    )


def _cns(target) -> list[str]:
    return [c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value for c in target.certificates]


async def _setup(s) -> None:
    local = LocalDirectory(s)
    await local.add_mailbox("per@a.test", "PER", idnat="810000000001")
    await local.add_certificate("per@a.test", _cert("per-current"))
    await local.add_certificate("per@a.test", _cert("per-expired", days_from=-30, days_to=-1))
    await local.add_certificate("per@a.test", _cert("per-retired"), active=False)
    await local.add_certificate("per@a.test", _cert("per-not-yet", days_from=2, days_to=30))
    await local.add_mailbox("other@a.test", "PER", idnat="810000000002")
    await local.add_certificate("other@a.test", _cert("other-current"))
    await local.add_mailbox("nokey@a.test", "PER", idnat="810000000003")
    await local.add_mailbox("app@a.test", "APP", structure_id="100000000001")
    await local.add_certificate("app@a.test", _cert("app-current"))
    # An ORG mailbox with a key of its own and two members, one of them without a key.
    await local.add_mailbox("org@a.test", "ORG", structure_id="100000000001", members=["per@a.test", "nokey@a.test"])
    await local.add_certificate("org@a.test", _cert("org-own"))
    await s.commit()


async def test_one_query_gives_type_sent_copy_and_only_valid_active_certificates(session_factory, engine):
    async with session_factory() as s:
        await _setup(s)
    statements: list[str] = []

    def count(conn, cursor, statement, params, context, executemany):
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        async with session_factory() as s:
            target = await LocalDirectory(s).delivery_target("PER@A.test")
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert len(statements) == 1
    assert (target.address, target.type, target.sent_copy) == ("per@a.test", "PER", False)
    assert _cns(target) == ["per-current"]


async def test_org_is_encrypted_to_its_own_key_and_its_members_keys(session_factory):
    async with session_factory() as s:
        await _setup(s)
        target = await LocalDirectory(s).delivery_target("org@a.test")
        assert target.type == "ORG"
        # Not `other`'s key: it is no member. The member without a key adds nothing.
        assert sorted(_cns(target)) == ["org-own", "per-current"]


async def test_mailbox_without_key_unknown_mailbox_and_no_certificates_asked(session_factory):
    async with session_factory() as s:
        await _setup(s)
        local = LocalDirectory(s)
        nokey = await local.delivery_target("nokey@a.test")
        assert nokey is not None and nokey.certificates == ()  # RCPT refuses it (nothing stored in clear)
        assert await local.delivery_target("nobody@a.test") is None
        app = await local.delivery_target("app@a.test", certificates=False)
        assert (app.type, app.sent_copy, app.certificates) == ("APP", True, ())
        assert await local.delivery_target("nobody@a.test", certificates=False) is None
        # A certificate past its window is left out at that instant, not at another.
        later = await local.delivery_target("per@a.test", at=NOW + timedelta(days=10))
        assert sorted(_cns(later)) == ["per-current", "per-not-yet"]


async def test_org_is_not_encrypted_to_members_without_the_read_right(session_factory):
    """RFC 4314 2.1: a member without "r" may not read the mailbox: no copy for their key."""
    async with session_factory() as s:
        await _setup(s)
        local = LocalDirectory(s)
        await local.grant("org@a.test", "other@a.test", "l")  # lookup only
        await s.commit()
        assert sorted(_cns(await local.delivery_target("org@a.test"))) == ["org-own", "per-current"]
        await local.grant("org@a.test", "other@a.test", "lr")
        await local.grant("org@a.test", "per@a.test", "lsw")  # "r" taken away
        await s.commit()
        assert sorted(_cns(await local.delivery_target("org@a.test"))) == ["org-own", "other-current"]
