"""`mss.trace`: the `Received:` field of each hop (RFC 5321 4.4) and the hop count (6.3)."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default

from crypto.rfc5322 import scan
from mss.records import TraceInfo
from mss.trace import FOLD_AT, hop_count, received_field

NOW = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)


def _unfold(field: bytes) -> str:
    return field.decode().replace("\r\n\t", " ").removesuffix("\r\n")


def test_received_names_the_client_our_host_the_protocol_the_id_and_the_one_recipient():
    trace = TraceInfo("client.example.test", "192.0.2.7:50123", "ESMTPSA", "TLSv1.3 TLS_AES_256_GCM_SHA384")
    field = received_field(trace, by="a.mssante.test", recipient="bob@b.mssante.test", id="0123ABCD", now=NOW)
    assert _unfold(field) == (
        "Received: from client.example.test ([192.0.2.7]) by a.mssante.test with ESMTPSA"
        " (TLSv1.3 TLS_AES_256_GCM_SHA384) id 0123ABCD for <bob@b.mssante.test>;"
        " Wed, 02 Dec 2026 10:00:00 +0000"
    )
    assert field.endswith(b"\r\n")
    assert all(len(line) <= FOLD_AT for line in field.split(b"\r\n"))
    # A mail parser reads it back as one field with its date.
    msg = message_from_bytes(field + b"Subject: x\r\n\r\nbody\r\n", policy=default)
    assert msg["Received"].endswith("Wed, 02 Dec 2026 10:00:00 +0000")


def test_several_recipients_are_not_disclosed_and_ipv6_is_an_address_literal():
    trace = TraceInfo("mx.b.test", "[2001:db8::5]:25", "ESMTPS")
    line = _unfold(received_field(trace, by="a.test", recipient=None, id="X1", now=NOW))
    assert "for <" not in line
    assert "([IPv6:2001:db8::5])" in line
    assert line.endswith("id X1; Wed, 02 Dec 2026 10:00:00 +0000")


def test_a_message_made_here_has_no_from_clause():
    line = _unfold(received_field(None, by="a.test", recipient="x@b.test", id="Q", now=NOW))
    assert line == "Received: by a.test id Q for <x@b.test>; Wed, 02 Dec 2026 10:00:00 +0000"


def test_a_hostile_helo_cannot_add_a_line_nor_move_the_date():
    trace = TraceInfo("evil\r\nX-Injected: 1; (", "127.0.0.1:1", "ESMTPS\r\nX: y")
    field = received_field(trace, by="a.test", recipient="a>b@c.test\r\nX: z", id="Q", now=NOW)
    fields = scan(field + b"\r\n").fields
    assert [f.name for f in fields] == ["Received"]
    assert field.count(b";") == 1
    assert b"with ESMTP " in field  # an unknown protocol name is not written as given


def test_hop_count_counts_received_fields_only():
    raw = (
        b"Received: from a by b; Wed, 02 Dec 2026 10:00:00 +0000\r\n"
        b"X-Received: not one\r\n"
        b"received: from c\r\n\tby d; Wed, 02 Dec 2026 10:00:00 +0000\r\n"
        b"From: <x@y.test>\r\n\r\nReceived: in the body\r\n"
    )
    assert hop_count(raw) == 2
    assert hop_count(b"From: <x@y.test>\r\n\r\n") == 0
