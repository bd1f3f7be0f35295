"""smtp.relay.SmtpRelayClient against a small real aiosmtpd peer on 127.0.0.1.

Real TLS both ways: both operators' SERV certificates come from the project's test PKI
(`crypto.pki.TestPKI.issue_serv`); the peer asks for and verifies our client certificate.
The peer records what it was sent (MAIL/RCPT parameters, content, our certificate) so the
tests assert what crossed the wire.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509

from crypto.pki import Issued, TestPKI
from mss.config import Settings
from mss.records import MailDsn, RcptDsn
from mss.services import RelayRecipient, RelayRoute, RelayUnavailable
from smtp.relay import SmtpRelayClient, enhanced_status, orcpt_param, xtext

CONTENT = b"From: alice@a.test\r\nTo: bob@b.test\r\nSubject: hello\r\n\r\nBonjour Bob.\r\n.leading dot\r\n"
DSN_PARAMS = ("RET", "ENVID", "NOTIFY", "ORCPT")


@dataclass
class Peer:
    """What the fake peer operator saw."""

    port: int = 0
    mail_args: list[str] = field(default_factory=list)
    rcpt_args: list[str] = field(default_factory=list)
    contents: list[bytes] = field(default_factory=list)
    rcpt_tos: list[list[str]] = field(default_factory=list)
    client_certs: list[x509.Certificate] = field(default_factory=list)


class Handler:
    def __init__(self, peer: Peer, *, dsn: bool, refuse: dict[str, str]) -> None:
        self.peer, self.dsn, self.refuse = peer, dsn, refuse

    async def handle_EHLO(self, server, session: Session, envelope: Envelope, hostname: str, responses: list[str]):
        session.host_name = hostname
        if self.dsn:
            responses.insert(len(responses) - 1, "250-DSN")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session: Session, envelope: Envelope):
        self.peer.contents.append(envelope.original_content)
        self.peer.rcpt_tos.append(list(envelope.rcpt_tos))
        der = session.ssl["ssl_object"].getpeercert(binary_form=True) if session.ssl else None
        if der:
            self.peer.client_certs.append(x509.load_der_x509_certificate(der))
        return "250 2.0.0 Ok: queued as Q1"


class DsnAwareSMTP(SMTP):
    """aiosmtpd refuses MAIL/RCPT parameters it does not know: the DSN ones are recorded and
    taken off first (as MSS's own listeners do), everything else goes through aiosmtpd."""

    peer: Peer

    @staticmethod
    def _strip(arg: str) -> str:
        words = arg.split()
        kept = [w for w in words if w.split("=", 1)[0].upper() not in DSN_PARAMS]
        return " ".join(kept)

    async def smtp_MAIL(self, arg: str) -> None:
        self.peer.mail_args.append(arg)
        await super().smtp_MAIL(self._strip(arg))

    async def smtp_RCPT(self, arg: str) -> None:
        self.peer.rcpt_args.append(arg)
        await super().smtp_RCPT(self._strip(arg))


@dataclass
class World:
    tmp: Path
    pki: TestPKI
    settings: Settings  # operator A's
    anchors: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    tmp = tmp_path_factory.mktemp("relay-client")
    pki = TestPKI.create(tmp / "ca")
    anchors = pki.write_trust_anchors(tmp / "anchors.pem")
    ours = pki.issue_serv(["mss.a.test", "a.test"], "1234567890", "Operateur A")
    ours.write_pem(tmp / "a.crt", tmp / "a.key")
    settings = Settings(
        domain="a.test",
        base_dir=tmp,
        tls={"cert": "a.crt", "key": "a.key", "trust_anchors": "anchors.pem"},
        relay={"connect_timeout_s": 5, "command_timeout_s": 10},
    )
    return World(tmp, pki, settings, anchors)


def server_context(world: World, issued: Issued, *, anchors: Path | None = None) -> ssl.SSLContext:
    name = f"peer-{id(issued)}"
    issued.write_pem(world.tmp / f"{name}.crt", world.tmp / f"{name}.key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(world.tmp / f"{name}.crt", world.tmp / f"{name}.key")
    ctx.verify_mode = ssl.CERT_REQUIRED  # the peer demands our SERV certificate
    ctx.load_verify_locations(cafile=str(anchors or world.anchors))
    return ctx


@pytest.fixture
async def start_peer(world: World) -> AsyncIterator:
    servers: list[asyncio.AbstractServer] = []

    async def start(
        *,
        tls: ssl.SSLContext | str | None = "default",
        dsn: bool = True,
        refuse: dict[str, str] | None = None,
        smtputf8: bool = False,
    ) -> Peer:
        if tls == "default":
            tls = server_context(world, world.pki.issue_serv(["localhost", "b.test"], "2234567890", "Operateur B"))
        peer = Peer()
        handler = Handler(peer, dsn=dsn, refuse=refuse or {})

        def factory() -> SMTP:
            smtp = DsnAwareSMTP(
                handler,
                hostname="mx.b.test",
                tls_context=tls,
                require_starttls=tls is not None,
                enable_SMTPUTF8=smtputf8,
                decode_data=False,
            )
            smtp.peer = peer
            return smtp

        srv = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
        servers.append(srv)
        peer.port = srv.sockets[0].getsockname()[1]
        return peer

    yield start
    for srv in servers:
        srv.close()
        await srv.wait_closed()


def route(peer: Peer, host: str = "localhost") -> RelayRoute:
    return RelayRoute(host=host, port=peer.port, source="static")


async def test_happy_path_mutual_tls(world: World, start_peer) -> None:
    peer = await start_peer(dsn=False)
    result = await SmtpRelayClient(world.settings).send(
        route(peer),
        mail_from="alice@a.test",
        recipients=[RelayRecipient("bob@b.test"), RelayRecipient("carol@b.test")],
        content=CONTENT,
    )
    assert {a: (r.code, r.text) for a, r in result.replies.items()} == {
        "bob@b.test": (250, "2.0.0 Ok: queued as Q1"),
        "carol@b.test": (250, "2.0.0 Ok: queued as Q1"),
    }
    assert result.peer_offers_dsn is False
    assert result.remote_host == "localhost"
    assert peer.contents == [CONTENT]  # dot-stuffing undone by the peer: the exact bytes
    assert peer.rcpt_tos == [["bob@b.test", "carol@b.test"]]
    # We authenticated with our SERV certificate (mutual TLS).
    (cert,) = peer.client_certs
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "a.test" in sans.get_values_for_type(x509.DNSName)
    assert peer.mail_args[0].startswith("FROM:<alice@a.test> SIZE=")


async def test_unknown_recipient_among_good_ones(world: World, start_peer) -> None:
    peer = await start_peer(refuse={"nobody@b.test": "550 5.1.1 <nobody@b.test>: no such user"})
    result = await SmtpRelayClient(world.settings).send(
        route(peer),
        mail_from="alice@a.test",
        recipients=[RelayRecipient("bob@b.test"), RelayRecipient("nobody@b.test"), RelayRecipient("carol@b.test")],
        content=CONTENT,
    )
    bad = result.replies["nobody@b.test"]
    assert (bad.code, bad.permanent, enhanced_status(bad)) == (550, True, "5.1.1")
    assert result.replies["bob@b.test"].accepted and result.replies["carol@b.test"].accepted
    assert peer.rcpt_tos == [["bob@b.test", "carol@b.test"]]


async def test_every_recipient_refused_sends_no_data(world: World, start_peer) -> None:
    peer = await start_peer(refuse={"nobody@b.test": "550 5.1.1 no such user", "later@b.test": "450 4.2.1 try later"})
    result = await SmtpRelayClient(world.settings).send(
        route(peer),
        mail_from="alice@a.test",
        recipients=[RelayRecipient("nobody@b.test"), RelayRecipient("later@b.test")],
        content=CONTENT,
    )
    assert {a: r.code for a, r in result.replies.items()} == {"nobody@b.test": 550, "later@b.test": 450}
    assert peer.contents == []


async def test_no_starttls_offered_is_temporary_and_logged(world: World, start_peer, caplog) -> None:
    peer = await start_peer(tls=None)
    with pytest.raises(RelayUnavailable) as err:
        await SmtpRelayClient(world.settings).send(
            route(peer), mail_from="alice@a.test", recipients=[RelayRecipient("bob@b.test")], content=CONTENT
        )
    assert not err.value.permanent
    assert "peer offers no STARTTLS" in err.value.reason
    assert "peer offers no STARTTLS" in caplog.text
    assert peer.mail_args == [] and peer.contents == []  # nothing went in clear


async def test_peer_certificate_for_another_name(world: World, start_peer) -> None:
    other = world.pki.issue_serv(["mss.other.test"], "3234567890", "Operateur C")
    peer = await start_peer(tls=server_context(world, other))
    with pytest.raises(RelayUnavailable) as err:
        await SmtpRelayClient(world.settings).send(
            route(peer), mail_from="alice@a.test", recipients=[RelayRecipient("bob@b.test")], content=CONTENT
        )
    assert not err.value.permanent
    assert "does not name it" in err.value.reason and "localhost" in err.value.reason
    assert peer.mail_args == []


async def test_peer_certificate_from_another_ca(world: World, start_peer, tmp_path) -> None:
    stranger_pki = TestPKI.create(tmp_path / "other-ca", range_name="OTHER")
    stranger = stranger_pki.issue_serv(["localhost"], "4234567890", "Operateur inconnu")
    # The stranger trusts our CA (so only OUR check of its certificate can refuse it).
    peer = await start_peer(tls=server_context(world, stranger))
    with pytest.raises(RelayUnavailable) as err:
        await SmtpRelayClient(world.settings).send(
            route(peer), mail_from="alice@a.test", recipients=[RelayRecipient("bob@b.test")], content=CONTENT
        )
    assert not err.value.permanent
    assert "not trusted" in err.value.reason
    assert peer.mail_args == []


async def test_peer_refusing_our_certificate(world: World, start_peer, tmp_path) -> None:
    stranger_pki = TestPKI.create(tmp_path / "other-ca", range_name="OTHER")
    anchors = stranger_pki.write_trust_anchors(tmp_path / "other-anchors.pem")
    b = world.pki.issue_serv(["localhost"], "2234567890", "Operateur B")
    peer = await start_peer(tls=server_context(world, b, anchors=anchors))
    with pytest.raises(RelayUnavailable) as err:
        await SmtpRelayClient(world.settings).send(
            route(peer), mail_from="alice@a.test", recipients=[RelayRecipient("bob@b.test")], content=CONTENT
        )
    assert not err.value.permanent
    assert "our certificate refused" in err.value.reason
    assert peer.contents == []


async def test_connection_refused_is_temporary(world: World, start_peer) -> None:
    peer = await start_peer()
    port = peer.port
    with pytest.raises(RelayUnavailable) as err:
        await SmtpRelayClient(world.settings).send(
            RelayRoute("127.0.0.1", 1, "static"),
            mail_from="a@a.test",
            recipients=[RelayRecipient("b@b.test")],
            content=CONTENT,
        )
    assert not err.value.permanent and "cannot connect" in err.value.reason
    assert port  # the live peer was not involved


async def test_dsn_parameters_only_when_offered(world: World, start_peer) -> None:
    dsn_rcpt = RcptDsn(notify=frozenset({"SUCCESS", "FAILURE"}), orcpt="rfc822;Bob+Test=x@b.test")
    never = RcptDsn(notify=frozenset(), orcpt=None)
    kwargs = dict(
        mail_from="alice@a.test",
        recipients=[RelayRecipient("bob@b.test", dsn_rcpt), RelayRecipient("carol@b.test", never)],
        content=CONTENT,
        dsn=MailDsn(ret="HDRS", envid="env id+1"),
    )
    with_dsn = await start_peer(dsn=True)
    result = await SmtpRelayClient(world.settings).send(route(with_dsn), **kwargs)
    assert result.peer_offers_dsn is True
    assert "RET=HDRS" in with_dsn.mail_args[0].split()
    assert "ENVID=env+20id+2B1" in with_dsn.mail_args[0].split()
    assert with_dsn.rcpt_args[0].split()[1:] == ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Bob+2BTest+3Dx@b.test"]
    assert with_dsn.rcpt_args[1].split()[1:] == ["NOTIFY=NEVER"]

    without = await start_peer(dsn=False)
    result = await SmtpRelayClient(world.settings).send(route(without), **kwargs)
    assert result.peer_offers_dsn is False
    assert all(r.accepted for r in result.replies.values())
    assert not any(p in without.mail_args[0] for p in DSN_PARAMS)
    assert without.rcpt_args == ["TO:<bob@b.test>", "TO:<carol@b.test>"]


async def test_8bit_content_sent_with_body_8bitmime(world: World, start_peer) -> None:
    peer = await start_peer(dsn=False)
    content = "Subject: t\r\n\r\nCafé à l'hôpital\r\n".encode()
    result = await SmtpRelayClient(world.settings).send(
        route(peer), mail_from="alice@a.test", recipients=[RelayRecipient("bob@b.test")], content=content
    )
    assert result.replies["bob@b.test"].accepted
    assert "BODY=8BITMIME" in peer.mail_args[0].split()
    assert peer.contents == [content]


async def test_utf8_recipient_needs_smtputf8(world: World, start_peer) -> None:
    plain = await start_peer(dsn=False, smtputf8=False)
    result = await SmtpRelayClient(world.settings).send(
        route(plain),
        mail_from="alice@a.test",
        recipients=[RelayRecipient("zoé@b.test"), RelayRecipient("bob@b.test")],
        content=CONTENT,
    )
    assert result.replies["zoé@b.test"].code == 553 and enhanced_status(result.replies["zoé@b.test"]) == "5.6.7"
    assert result.replies["bob@b.test"].accepted
    utf8 = await start_peer(dsn=False, smtputf8=True)
    result = await SmtpRelayClient(world.settings).send(
        route(utf8), mail_from="alice@a.test", recipients=[RelayRecipient("zoé@b.test")], content=CONTENT
    )
    assert result.replies["zoé@b.test"].accepted
    assert "SMTPUTF8" in utf8.mail_args[0].split()


def test_xtext_and_orcpt() -> None:
    assert xtext("a+b=c d") == "a+2Bb+3Dc+20d"
    assert orcpt_param("rfc822;zoé@b.test", smtputf8=False) is None
    assert orcpt_param("rfc822;zoé@b.test", smtputf8=True) == "ORCPT=utf-8;zo\\x{E9}@b.test"
