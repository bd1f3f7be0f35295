"""ENVELOPE, BODYSTRUCTURE and BODY[section] from stored message bytes (RFC 9051 6.4.5, 7.5.2).

The stored message is usually one application/pkcs7-mime part with clear outer headers,
but this module is general: it walks multipart and message/rfc822 structure by byte
offsets, so BODY[section] returns exactly the bytes that were stored (clients verify
signatures over them). Nothing here decrypts anything.

Header sections are read by the one scanner of MSS (`crypto.rfc5322`, RFC 5322 §2.2), the
same that split the message when it came in; field values are handed on as `email.parser`
(compat32) used to hand them (folding kept, octets beyond ASCII as U+FFFD) and MIME
parameters are parsed by `crypto.rfc2045`, so ENVELOPE and BODYSTRUCTURE answer as before.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass, field
from email.utils import collapse_rfc2231_value, getaddresses

from crypto import rfc2045
from crypto.rfc5322 import Field, HeaderSection, scan
from imap.protocol.commands import Section

_MAX_DEPTH = 20  # nested multiparts deeper than this are shown as opaque parts


class SectionError(Exception):
    """A section that does not exist in this message (answered with an empty string)."""


@dataclass
class Part:
    """One MIME entity: its header block (with the blank line) and its body, as bytes."""

    header: bytes
    body: bytes
    ctype: str = "text"
    csubtype: str = "plain"
    params: list[tuple[str, str]] = field(default_factory=list)
    children: list[Part] = field(default_factory=list)  # multipart parts
    message: Part | None = None  # the encapsulated message of a message/rfc822 part
    fields: tuple[Field, ...] = ()  # the header fields, as scanned

    @property
    def raw(self) -> bytes:
        return self.header + self.body

    @property
    def is_multipart(self) -> bool:
        return self.ctype == "multipart"

    def field(self, name: str) -> str | None:
        """The value of the first field called `name`, folding kept (None: no such field)."""
        key = name.lower()
        for f in self.fields:
            if f.key == key:
                return rfc2045.header_text(f.value)
        return None

    def field_all(self, name: str) -> list[str]:
        """The values of every field called `name`, in order."""
        key = name.lower()
        return [rfc2045.header_text(f.value) for f in self.fields if f.key == key]

    def param(self, name: str) -> str | None:
        for k, v in self.params:
            if k.lower() == name:
                return v
        return None


def split_header(raw: bytes) -> tuple[bytes, bytes]:
    """Header section (ending with its empty line, if it has one) and body (RFC 5322 §2.1).

    The header ends at the first empty line or at the first line that is not a field (that
    line starts the body); no empty line and only fields: all header.
    """
    section = scan(raw)
    return section.header, section.body


def parse(raw: bytes, *, default: tuple[str, str] = ("text", "plain"), depth: int = 0) -> Part:
    section: HeaderSection = scan(raw)
    body = section.body
    part = Part(section.header, body, fields=section.fields)
    ct = part.field("Content-Type")
    if ct is not None:
        full = rfc2045.content_type(ct)  # falls back to text/plain on nonsense
        part.ctype, _, part.csubtype = full.partition("/")
        part.params = [(k, _param_value(v)) for k, v in rfc2045.params(ct)[1:]]
    else:
        part.ctype, part.csubtype = default
        if default == ("text", "plain"):
            part.params = [("charset", "us-ascii")]
    if depth >= _MAX_DEPTH:
        return part
    if part.ctype == "multipart":
        boundary = part.param("boundary")
        if boundary:
            child_default = ("message", "rfc822") if part.csubtype == "digest" else ("text", "plain")
            part.children = [parse(b, default=child_default, depth=depth + 1) for b in _split_multipart(body, boundary)]
        if not part.children:
            # A multipart without parts is not representable: show it as a single empty part.
            part.children = [parse(b"", depth=depth + 1)]
    elif (part.ctype, part.csubtype) == ("message", "rfc822") and _cte(part) in ("7bit", "8bit", "binary"):
        part.message = parse(body, depth=depth + 1)
    return part


def _param_value(v: rfc2045.ParamValue) -> str:
    if isinstance(v, tuple):
        return collapse_rfc2231_value(v)
    return str(v)


def _cte(part: Part) -> str:
    return (part.field("Content-Transfer-Encoding") or "7bit").strip().lower()


def _split_multipart(body: bytes, boundary: str) -> list[bytes]:
    """The body parts between `--boundary` lines (RFC 2046 5.1.1); CRLF before a delimiter
    belongs to the delimiter."""
    delim = re.escape(b"--" + boundary.encode("latin-1", "replace"))
    pattern = re.compile(rb"(?:^|\r?\n)" + delim + rb"(--)?[ \t]*(?:\r?\n|$)", re.M)
    parts: list[bytes] = []
    start = None
    for m in pattern.finditer(body):
        if start is not None:
            parts.append(body[start : m.start()])
        if m.group(1):
            start = None
            break
        start = m.end()
    else:
        if start is not None:
            parts.append(body[start:])  # no close delimiter: the rest is the last part
    return parts


# -- section extraction (RFC 9051 6.4.5) ----------------------------------------------------


def _find(msg: Part, path: tuple[int, ...]) -> Part:
    """The entity a part path names (RFC 9051 6.4.5 numbering rules)."""
    cur, is_message = msg, True
    for n in path:
        if not is_message and cur.message is not None:
            # A message/rfc822 part: the numbers go on inside the encapsulated message.
            cur, is_message = cur.message, True
        if cur.is_multipart:
            if not 1 <= n <= len(cur.children):
                raise SectionError("no such part")
            cur, is_message = cur.children[n - 1], False
        elif is_message and n == 1:
            is_message = False  # a non-multipart message has exactly one part: its body
        else:
            raise SectionError("no such part")
    return cur


def _header_fields(fields: tuple[Field, ...], names: tuple[str, ...], negate: bool) -> bytes:
    """HEADER.FIELDS (NOT): the named fields as stored, continuation lines included, then
    the empty line (RFC 9051 6.4.5)."""
    wanted = {n.lower() for n in names}
    return b"".join(f.raw for f in fields if (f.key in wanted) != negate) + b"\r\n"


def section_bytes(msg: Part, section: Section) -> bytes:
    """The bytes BODY[section] names. Raises SectionError for parts that do not exist."""
    text = section.text
    if section.part:
        target = _find(msg, section.part)
        if text is None:
            return target.body
        if text == "MIME":
            return target.header
        # Only a message/rfc822 part has a header and text of its own.
        if target.message is None:
            raise SectionError("part is not a message")
        target = target.message
    else:
        target = msg
        if text is None:
            return msg.raw
    if text == "HEADER":
        return target.header
    if text == "TEXT":
        return target.body
    return _header_fields(target.fields, section.fields, negate=text == "HEADER.FIELDS.NOT")


class UnknownCte(Exception):
    """BINARY of a part whose Content-Transfer-Encoding this server cannot decode (RFC 3516
    4.3: the request fails with `NO [UNKNOWN-CTE]`)."""


#: The encodings RFC 2045 6.1 defines; the identity ones are returned as they are.
_IDENTITY_CTE = frozenset({"7bit", "8bit", "binary"})
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")


def check_binary(msg: Part, path: tuple[int, ...]) -> None:
    """Raise UnknownCte when BINARY[path] could not be decoded (a part that does not exist
    can: it is empty)."""
    if not path:
        return
    try:
        target = _find(msg, path)
    except SectionError:
        return
    cte = _cte(target)
    if cte not in _IDENTITY_CTE and cte not in ("base64", "quoted-printable"):
        raise UnknownCte(cte)


def binary_bytes(msg: Part, path: tuple[int, ...]) -> bytes:
    """The content BINARY[path] names, its Content-Transfer-Encoding removed (RFC 3516 4.2).

    BINARY[] is the whole message as stored: a message's transfer encoding applies to its
    body, not to its header, and the top level of a message is in the 7bit/8bit domain.
    BINARY[1] of a single-part message is its body decoded (for a stored S/MIME message,
    the DER of the application/pkcs7-mime part). Line endings are never converted (4.3).
    Decoding is one linear pass of `binascii`, over bytes no larger than the message.
    Raises UnknownCte for an encoding other than those of RFC 2045 6.1; a part that does
    not exist is empty, as it is for BODY[].
    """
    if not path:
        return msg.raw
    try:
        target = _find(msg, path)
    except SectionError:
        return b""
    cte = _cte(target)
    if cte in _IDENTITY_CTE:
        return target.body
    if cte == "base64":
        # Non-strict: characters outside the alphabet (line breaks) are skipped, RFC 2045 6.8.
        try:
            return binascii.a2b_base64(target.body)
        except binascii.Error:
            # Missing padding: complete it (a lone sixth of an octet is dropped), as mail
            # readers do.
            data = _NOT_BASE64.sub(b"", target.body)
            data = data[: len(data) - 1] if len(data) % 4 == 1 else data
            return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
    if cte == "quoted-printable":
        return binascii.a2b_qp(target.body)
    raise UnknownCte(cte)


def partial(data: bytes, spec: tuple[int, int] | None) -> bytes:
    if spec is None:
        return data
    start, length = spec
    return data[start : start + length]


# -- ENVELOPE (RFC 9051 7.5.2) --------------------------------------------------------------


def _nstr(v: str | None):
    if v is None:
        return None
    v = " ".join(v.replace("\r", "").split("\n"))  # unfold
    return v.strip()


def _addresses(value: str | None):
    """An address list as ((name adl mailbox host) ...), or NIL."""
    if value is None or not value.strip():
        return None
    out = []
    for name, addr in getaddresses([_nstr(value)]):
        if not addr and not name:
            continue
        local, _, host = addr.rpartition("@") if "@" in addr else (addr, "", None)
        out.append((name or None, None, local or None, host or None))
    return out or None


def envelope(msg: Part) -> tuple:
    f = msg.field
    frm = _addresses(f("From"))
    sender = _addresses(f("Sender")) or frm
    reply_to = _addresses(f("Reply-To")) or frm
    return (
        _nstr(f("Date")),
        _nstr(f("Subject")),
        frm,
        sender,
        reply_to,
        _addresses(f("To")),
        _addresses(f("Cc")),
        _addresses(f("Bcc")),
        _nstr(f("In-Reply-To")),
        _nstr(f("Message-ID")),
    )


# -- BODY / BODYSTRUCTURE (RFC 9051 7.5.2) --------------------------------------------------


def _param_list(params: list[tuple[str, str]]):
    if not params:
        return None
    flat: list[str] = []
    for k, v in params:
        flat += [k.upper() if k.lower() == "charset" else k, v]
    return flat


def _disposition(part: Part):
    raw = part.field("Content-Disposition")
    if raw is None:
        return None
    kind = rfc2045.disposition(raw) or raw.split(";")[0].strip().lower()
    params = rfc2045.params(raw)
    return (kind, _param_list([(k, _param_value(v)) for k, v in params[1:]]))


def _language(part: Part):
    raw = part.field("Content-Language")
    if raw is None:
        return None
    langs = [x.strip() for x in raw.split(",") if x.strip()]
    return langs or None


def _lines(body: bytes) -> int:
    if not body:
        return 0
    return body.count(b"\n") + (0 if body.endswith(b"\n") else 1)


def bodystructure(part: Part, extended: bool = True) -> tuple:
    """BODYSTRUCTURE (extended=True) or BODY (extended=False) of an entity."""
    if part.is_multipart:
        items: list = [bodystructure(c, extended) for c in part.children]
        items.append(part.csubtype.upper())
        if extended:
            items += [
                _param_list(part.params),
                _disposition(part),
                _language(part),
                _nstr(part.field("Content-Location")),
            ]
        return tuple(items)
    items = [
        part.ctype.upper(),
        part.csubtype.upper(),
        _param_list(part.params),
        _nstr(part.field("Content-ID")),
        _nstr(part.field("Content-Description")),
        _cte(part).upper(),
        len(part.body),
    ]
    if part.message is not None:
        items += [envelope(part.message), bodystructure(part.message, extended), _lines(part.body)]
    elif part.ctype == "text":
        items.append(_lines(part.body))
    if extended:
        items += [
            _nstr(part.field("Content-MD5")),
            _disposition(part),
            _language(part),
            _nstr(part.field("Content-Location")),
        ]
    return tuple(items)
