"""The DSN parameters of MAIL and RCPT (RFC 3461 4), sans-IO: a parameter string in, the
parsed `MailDsn`/`RcptDsn` and the parameters left for aiosmtpd out.

aiosmtpd upper-cases every MAIL/RCPT parameter and refuses those it does not know (555), so
`smtp.server.SubmissionSMTP` takes RET, ENVID (MAIL) and NOTIFY, ORCPT (RCPT) out of the
command first, with their case kept: ENVID and ORCPT are the client's own strings and come
back to it in a delivery status notification (RFC 3464 2.2.1, 2.3.1). Whatever is wrong in
them is a `501 5.5.4` (RFC 3463 3.6: invalid command arguments), as Postfix answers.

- RFC 3461 4: xtext = *( xchar / hexchar ); xchar is any printable ASCII but "+" and "=",
  hexchar is "+" and two hexadecimal digits (upper case in the RFC; lower case is accepted,
  RFC 1123 1.2.2). The decoded octets must be UTF-8 (RFC 6533 3 allows UTF-8 in ORCPT) and
  hold no control character: they end up in the header fields of a report.
- 4.1 NOTIFY=NEVER, or a comma list of SUCCESS, FAILURE, DELAY (each once, NEVER alone).
- 4.2 ORCPT=addr-type;xtext, at most 500 characters.
- 4.3 RET=FULL|HDRS.  4.4 ENVID=xtext, at most 100 characters.
- A parameter given twice is a syntax error (RFC 5321 4.1.1.11 leaves it to the server;
  RFC 3461 4.1-4.4 each name it once).
"""

from __future__ import annotations

import re
import unicodedata

from mss.records import MailDsn, RcptDsn

__all__ = [
    "DsnSyntaxError",
    "decode_xtext",
    "encode_xtext",
    "parse_mail_params",
    "parse_rcpt_params",
]

#: RFC 3461 4.4: "the ENVID ... MUST consist of printable ... characters ... no more than 100".
MAX_ENVID = 100
#: RFC 3461 4.2: "the maximum length of the ORCPT parameter value is 500 characters".
MAX_ORCPT = 500
NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})

_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-Fa-f]{2})*\Z")
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+\Z")  # RFC 3461 4.2 addr-type is an atom


class DsnSyntaxError(ValueError):
    """A DSN parameter the client got wrong; `reply` is the whole `501 5.5.4` reply."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.reply = f"501 5.5.4 {text}"


def decode_xtext(value: str, *, what: str) -> str:
    """RFC 3461 4 xtext decoded; `what` names the parameter in the error text."""
    if not _XTEXT.match(value):
        raise DsnSyntaxError(f"{what} is not valid xtext (RFC 3461 4)")
    octets = bytearray()
    i = 0
    while i < len(value):
        if value[i] == "+":
            octets.append(int(value[i + 1 : i + 3], 16))
            i += 3
        else:
            octets.append(ord(value[i]))
            i += 1
    try:
        text = octets.decode("utf-8")
    except UnicodeDecodeError:
        raise DsnSyntaxError(f"{what} does not decode to UTF-8 text (RFC 6533 3)") from None
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in text):
        raise DsnSyntaxError(f"{what} holds a control character")
    return text


def encode_xtext(text: str) -> str:
    """The xtext of `text` (RFC 3461 4): "+", "=", controls, space and non-ASCII as +XX."""
    return "".join(chr(b) if 0x21 <= b <= 0x7E and b not in (0x2B, 0x3D) else f"+{b:02X}" for b in text.encode("utf-8"))


def _split(params: str) -> list[tuple[str, str | None, str]]:
    """(KEYWORD upper-cased, value or None, the token as sent) for each parameter."""
    out = []
    for token in params.split():
        keyword, eq, value = token.partition("=")
        out.append((keyword.upper(), value if eq else None, token))
    return out


def _once(seen: set[str], keyword: str) -> None:
    if keyword in seen:
        raise DsnSyntaxError(f"{keyword} given more than once")
    seen.add(keyword)


def parse_mail_params(params: str) -> tuple[MailDsn | None, str]:
    """RET and ENVID out of MAIL's parameters (RFC 3461 4.3, 4.4): (the MailDsn, or None
    when neither was given; the other parameters as sent)."""
    ret: str | None = None
    envid: str | None = None
    seen: set[str] = set()
    rest: list[str] = []
    for keyword, value, token in _split(params):
        if keyword == "RET":
            _once(seen, keyword)
            if value is None or value.upper() not in ("FULL", "HDRS"):
                raise DsnSyntaxError("RET must be FULL or HDRS (RFC 3461 4.3)")
            ret = value.upper()
        elif keyword == "ENVID":
            _once(seen, keyword)
            if not value:
                raise DsnSyntaxError("ENVID needs a value (RFC 3461 4.4)")
            if len(value) > MAX_ENVID:
                raise DsnSyntaxError(f"ENVID longer than {MAX_ENVID} characters (RFC 3461 4.4)")
            envid = decode_xtext(value, what="ENVID")
        else:
            rest.append(token)
    dsn = MailDsn(ret=ret, envid=envid) if seen else None  # type: ignore[arg-type]
    return dsn, " ".join(rest)


def parse_rcpt_params(params: str) -> tuple[RcptDsn | None, str]:
    """NOTIFY and ORCPT out of RCPT's parameters (RFC 3461 4.1, 4.2): (the RcptDsn, or
    None when neither was given; the other parameters as sent)."""
    notify: frozenset[str] | None = None
    orcpt: str | None = None
    seen: set[str] = set()
    rest: list[str] = []
    for keyword, value, token in _split(params):
        if keyword == "NOTIFY":
            _once(seen, keyword)
            notify = _notify(value)
        elif keyword == "ORCPT":
            _once(seen, keyword)
            orcpt = _orcpt(value)
        else:
            rest.append(token)
    dsn = RcptDsn(notify=notify, orcpt=orcpt) if seen else None
    return dsn, " ".join(rest)


def _notify(value: str | None) -> frozenset[str]:
    """RFC 3461 4.1: NEVER (the empty set) or each of SUCCESS, FAILURE, DELAY at most once."""
    if not value:
        raise DsnSyntaxError("NOTIFY needs NEVER or a list of SUCCESS, FAILURE, DELAY (RFC 3461 4.1)")
    items = [v.upper() for v in value.split(",")]
    if items == ["NEVER"]:
        return frozenset()
    if "NEVER" in items:
        raise DsnSyntaxError("NOTIFY=NEVER cannot be combined with other values (RFC 3461 4.1)")
    if any(v not in NOTIFY_VALUES for v in items):
        raise DsnSyntaxError("NOTIFY takes NEVER or SUCCESS, FAILURE, DELAY (RFC 3461 4.1)")
    if len(set(items)) != len(items):
        raise DsnSyntaxError("NOTIFY lists a value twice (RFC 3461 4.1)")
    return frozenset(items)


def _orcpt(value: str | None) -> str:
    """RFC 3461 4.2: addr-type ";" xtext, returned as ``addr-type;decoded address``."""
    if not value:
        raise DsnSyntaxError("ORCPT needs addr-type;address (RFC 3461 4.2)")
    if len(value) > MAX_ORCPT:
        raise DsnSyntaxError(f"ORCPT longer than {MAX_ORCPT} characters (RFC 3461 4.2)")
    addr_type, sep, encoded = value.partition(";")
    if not sep or not _ATOM.match(addr_type) or not encoded:
        raise DsnSyntaxError("ORCPT must be addr-type;address (RFC 3461 4.2)")
    return f"{addr_type};{decode_xtext(encoded, what='ORCPT')}"
