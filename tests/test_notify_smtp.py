"""Patient notifications through a real SMTP server (aiosmtpd on loopback), as
`[patients] notify_url = "smtp://HOST:PORT"` configures."""

from __future__ import annotations

from aiosmtpd.controller import Controller

from mss.config import Settings
from mss.notify import notification, transport_for


class Sink:
    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK"


async def test_a_notification_is_handed_to_the_configured_mta():
    import socket

    with socket.socket() as probe:  # a free loopback port for the sink
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        settings = Settings(domain="h.test", patients={"notify_url": f"smtp://127.0.0.1:{port}"})
        send = transport_for(settings)
        assert send is not None
        await send(notification(settings, "marie@example.org"))
    finally:
        controller.stop()
    ((mail_from, rcpts, data),) = sink.received
    assert mail_from == "no-reply@h.test" and rcpts == ["marie@example.org"]
    assert b"Auto-Submitted: auto-generated" in data and b"/portal/" in data


def test_a_bad_notify_url_is_refused_clearly():
    import pytest

    with pytest.raises(ValueError, match="notify_url"):
        transport_for(Settings(domain="h.test", patients={"notify_url": "http://x"}))
