"""Mail client autoconfiguration: a client finds the servers and ports from the address alone.

- Thunderbird asks `https://autoconfig.<domain>/mail/config-v1.1.xml?emailaddress=...` and
  `https://<domain>/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=...` for a
  Mozilla ISPDB document ("clientConfig" version 1.1,
  https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat).
- Outlook POSTs a "Plain Old XML" request to `/autodiscover/autodiscover.xml` and reads the
  IMAP and SMTP `Protocol` elements of the response ([MS-OXDSCLI] 2.2.4, the 2006a
  "outlook/responseschema"); some clients GET the same path with `?emailaddress=`.

The documents are built from the settings the listeners run with (`[autoconfig] hostname`,
else the [listen] host; the ports `mss serve` actually bound, see mss.serve.run), so what they
advertise is what answers. Every connection needs the health-PKI client certificate in TLS;
the login is SASL EXTERNAL (`TLS-client-cert`) or an app password of `mss mailbox
app-password` (`password-cleartext`, always inside TLS). Both are listed, `TLS-client-cert`
first for clients that know it; Thunderbird does not ("Not yet supported by Thunderbird" in the
ConfigFileFormat page), skips it and takes `password-cleartext`, so the document fills in its
servers, ports and TLS modes and the user switches the account to "TLS Certificate" by hand
(docs/thunderbird.md). The MTA listener is for other operators,
not clients: never advertised. Addresses outside this operator's domain get 404 (patients use
the portal, not IMAP). XML is built with ElementTree (escaped), and requests are parsed with
defusedxml (no DTD, hence no entities and no external references: a DOCTYPE gets 400).
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as safe_fromstring
from fastapi import APIRouter, Request
from starlette.responses import Response

from mss.config import Settings

MOZILLA_PATHS = ("/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml")
AUTODISCOVER_PATHS = ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml")
MOZILLA_MEDIA_TYPE = "application/xml"
AUTODISCOVER_MEDIA_TYPE = "text/xml; charset=utf-8"

AD_RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
AD_OUTLOOK_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
AD_REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
MAX_ADDRESS = 320  # RFC 5321 4.5.3.1: 64 + 1 + 255
CACHE = {"Cache-Control": "max-age=3600"}


@dataclass(frozen=True)
class Endpoint:
    """One client-facing listener as a client configures it."""

    protocol: str  # "imap" | "smtp"
    port: int
    tls: str  # "SSL" (implicit TLS) | "STARTTLS"


def hostname(settings: Settings) -> str:
    """The host name clients are told to connect to."""
    if settings.autoconfig.hostname:
        return settings.autoconfig.hostname
    host = settings.listen.host.strip().strip("[]")
    try:
        if ipaddress.ip_address(host).is_unspecified:
            return settings.domain
    except ValueError:
        pass
    return host or settings.domain


def endpoints(settings: Settings) -> list[Endpoint]:
    """Client listeners, preferred first: implicit TLS (RFC 8314 3) before STARTTLS."""
    listen = settings.listen
    return [
        Endpoint("imap", listen.imaps, "SSL"),
        Endpoint("imap", listen.imap, "STARTTLS"),
        Endpoint("smtp", listen.submissions, "SSL"),
        Endpoint("smtp", listen.submission, "STARTTLS"),
    ]


def _ours(settings: Settings, address: str | None) -> bool:
    """No address (a client asking in general), or one of this operator's domain."""
    if address is None:
        return True
    local, at, domain = address.strip().rpartition("@")
    return bool(at and local) and domain.lower().rstrip(".") == settings.domain.lower()


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def mozilla_document(settings: Settings) -> bytes:
    """The ISPDB clientConfig 1.1 document of this operator."""
    root = ET.Element("clientConfig", version="1.1")
    provider = _sub(root, "emailProvider", id=settings.domain)
    _sub(provider, "domain", settings.domain)
    _sub(provider, "displayName", f"MSS {settings.domain}")
    _sub(provider, "displayShortName", "MSS")
    host = hostname(settings)
    for ep in endpoints(settings):
        server = _sub(provider, "incomingServer" if ep.protocol == "imap" else "outgoingServer", type=ep.protocol)
        _sub(server, "hostname", host)
        _sub(server, "port", str(ep.port))
        _sub(server, "socketType", ep.tls)
        # SASL EXTERNAL with the card certificate; Thunderbird ignores this value (unsupported)
        _sub(server, "authentication", "TLS-client-cert")
        # an app password, inside TLS: what Thunderbird picks (the first value it knows)
        _sub(server, "authentication", "password-cleartext")
        _sub(server, "username", "%EMAILADDRESS%")
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def autodiscover_document(settings: Settings, address: str | None) -> bytes:
    """Outlook's POX response: one IMAP and one SMTP protocol, both implicit TLS (the POX
    schema has one server per type; STARTTLS listeners stay for clients that ask for them)."""
    root = ET.Element("Autodiscover", xmlns=AD_RESPONSE_NS)
    response = _sub(root, "Response", xmlns=AD_OUTLOOK_NS)
    account = _sub(response, "Account")
    _sub(account, "AccountType", "email")
    _sub(account, "Action", "settings")
    host = hostname(settings)
    for kind in ("imap", "smtp"):
        ep = next(e for e in endpoints(settings) if e.protocol == kind and e.tls == "SSL")
        proto = _sub(account, "Protocol")
        _sub(proto, "Type", kind.upper())
        _sub(proto, "Server", host)
        _sub(proto, "Port", str(ep.port))
        _sub(proto, "DomainRequired", "off")
        if address:
            _sub(proto, "LoginName", address)
        _sub(proto, "SPA", "off")
        _sub(proto, "SSL", "on")
        _sub(proto, "Encryption", "SSL")
        _sub(proto, "AuthRequired", "on")
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def autodiscover_error(code: str, message: str) -> bytes:
    """[MS-OXDSCLI] 2.2.4.2.1.1 Error: 600 invalid request, 500 unknown address."""
    root = ET.Element("Autodiscover", xmlns=AD_RESPONSE_NS)
    error = _sub(_sub(root, "Response"), "Error")
    _sub(error, "ErrorCode", code)
    _sub(error, "Message", message)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def requested_address(body: bytes) -> str | None:
    """The `Request/EMailAddress` of an Outlook POX request; ValueError if it is not one."""
    try:
        root = safe_fromstring(body, forbid_dtd=True)  # DTDForbidden is a DefusedXmlException
    except (ET.ParseError, DefusedXmlException) as exc:
        raise ValueError("not an XML document") from exc
    found = root.find(f"{{{AD_REQUEST_NS}}}Request/{{{AD_REQUEST_NS}}}EMailAddress")
    if found is None:
        found = root.find("Request/EMailAddress")  # some clients leave the namespace out
    address = (found.text or "").strip() if found is not None else ""
    if not address or len(address) > MAX_ADDRESS:
        raise ValueError("no EMailAddress")
    return address


def router(settings: Settings) -> APIRouter:
    """The routes, out of the OpenAPI document (they answer XML for mail clients)."""
    r = APIRouter(include_in_schema=False)

    async def mozilla(emailaddress: str | None = None) -> Response:
        if emailaddress is not None and (len(emailaddress) > MAX_ADDRESS or not _ours(settings, emailaddress)):
            return Response(b"not found\n", status_code=404, media_type="text/plain")
        return Response(mozilla_document(settings), media_type=MOZILLA_MEDIA_TYPE, headers=CACHE)

    async def autodiscover(request: Request) -> Response:
        if request.method == "POST":
            try:
                address: str | None = requested_address(await request.body())
            except ValueError:
                return Response(
                    autodiscover_error("600", "Invalid Request"), status_code=400, media_type=AUTODISCOVER_MEDIA_TYPE
                )
        else:
            address = request.query_params.get("emailaddress") or request.query_params.get("email")
            if address is not None and len(address) > MAX_ADDRESS:
                address = ""
        if not _ours(settings, address):
            return Response(
                autodiscover_error("500", "The e-mail address cannot be found."),
                status_code=404,
                media_type=AUTODISCOVER_MEDIA_TYPE,
            )
        return Response(autodiscover_document(settings, address), media_type=AUTODISCOVER_MEDIA_TYPE)

    for path in MOZILLA_PATHS:
        r.add_api_route(path, mozilla, methods=["GET"])
    for path in AUTODISCOVER_PATHS:
        r.add_api_route(path, autodiscover, methods=["GET", "POST"])
    return r
