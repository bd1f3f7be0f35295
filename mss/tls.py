"""TLS contexts for every listener: TLS 1.2+, client certificate requested and verified
against the configured health trust anchors only (never the system CAs)."""

from __future__ import annotations

import ssl

from mss.config import Settings


def server_context(settings: Settings) -> ssl.SSLContext:
    """A server context that asks for a client certificate.

    CERT_OPTIONAL, not CERT_REQUIRED: a client that sends no certificate completes the
    handshake and gets a clear protocol reply ("certificate required") instead of a bare
    TLS alert; a certificate that is sent but does not chain to the anchors still fails
    the handshake. Policy checks (usage, revocation, identity) run in-process afterwards.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion[settings.tls.minimum_version.replace(".", "_")]
    ctx.load_cert_chain(settings.path(settings.tls.cert), settings.path(settings.tls.key))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.load_verify_locations(cafile=str(settings.path(settings.tls.trust_anchors)))
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx


def peer_certificate_der(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> bytes | None:
    """The client's leaf certificate in DER, or None when it sent none."""
    if ssl_object is None:
        return None
    return ssl_object.getpeercert(binary_form=True)


def http_server_context(settings: Settings) -> ssl.SSLContext:
    """The `http` listener's context (`[listen] http_tls`): the same server certificate and
    TLS floor as the mail listeners, but no client certificate is asked for: browsers would
    prompt patients for one, and the portal and the directory authenticate otherwise."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion[settings.tls.minimum_version.replace(".", "_")]
    ctx.load_cert_chain(settings.path(settings.tls.cert), settings.path(settings.tls.key))
    ctx.verify_mode = ssl.CERT_NONE
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx
