"""MIME field values: Content-Type and Content-Disposition parameters in linear time.

RFC 2045 §5.1 (``type "/" subtype *(";" parameter)``), RFC 2183 (Content-Disposition) and
RFC 2231 (parameter continuations and charsets). The answers are exactly those of
`email.message.Message` (policy compat32) — `get_content_type`, `get_content_disposition`,
`get_params` — because IMAP BODYSTRUCTURE and the "already encrypted?" decision were built on
them and must not change; only the cost does.

Why not call `email.message` itself: its `_parseparam` cuts the value one parameter at a
time with ``s = s[end:]`` and re-counts the quotes of the whole prefix for every ``;``, both
quadratic. A Content-Type of 40,000 short parameters (160 KB) already takes half a second,
one of a few megabytes minutes. Here the value is cut once, by one regular expression that
never backtracks, and email's RFC 2231 decoding (`email.utils.decode_params`, linear) runs on
the pieces.
"""

from __future__ import annotations

import re
from email.utils import decode_params, quote, unquote

__all__ = ["ParamValue", "content_type", "disposition", "header_text", "params"]

#: A parameter value: text, or the (charset, language, text) triple of an RFC 2231 value.
ParamValue = str | tuple[str | None, str | None, str]

# One parameter of email's `_parseparam`: up to the first ";" outside a quoted run. A quote
# preceded by a backslash neither opens nor closes a run (email counts '"' minus '\"'); an
# unclosed run goes to the end. Every alternative consumes at least one character and they
# are mutually exclusive, so the match is a single left-to-right pass.
_PARAM = re.compile(r'(?:[^;"]+|(?<=\\)"|"(?:[^"]|(?<=\\)")*(?:"|\Z))*')


def _split(value: str) -> list[str]:
    """`email.message._parseparam`: the value cut at each ``;`` outside quotes, each piece
    stripped, the name before ``=`` stripped and lowercased."""
    return [_normalise(piece) for piece in (value.split(";") if '"' not in value else _pieces(value))]


def _pieces(value: str) -> list[str]:
    out: list[str] = []
    pos, size = 0, len(value)
    while True:
        m = _PARAM.match(value, pos)
        assert m is not None  # the pattern matches the empty string
        end = m.end()
        out.append(value[pos:end])
        if end >= size:
            return out
        pos = end + 1  # past the ";"


def _normalise(piece: str) -> str:
    if "=" in piece:
        name, _, rest = piece.partition("=")
        piece = name.strip().lower() + "=" + rest.strip()
    return piece.strip()


def params(value: str) -> list[tuple[str, ParamValue]]:
    """`Message.get_params()` of a field whose value is ``value``: the first item is the
    ``type/subtype`` (or disposition type) with an empty value, then each parameter unquoted,
    RFC 2231 continuations joined and charset triples kept as email returns them.

    email raises on a few RFC 2231 shapes (a continuation number too long for `int`, a
    numbered and an unnumbered piece of the same name); here those values are kept as
    written instead of failing the whole message.
    """
    pairs: list[tuple[str, str]] = []
    for piece in _split(value):
        name, sep, val = piece.partition("=")
        pairs.append((name.strip(), val.strip()) if sep else (piece.strip(), ""))
    try:
        decoded: list[tuple[str, ParamValue]] = decode_params(pairs)
    except (ValueError, TypeError):
        decoded = [pairs[0]] + [(k, f'"{quote(unquote(v))}"') for k, v in pairs[1:]]
    return [(k, (v[0], v[1], unquote(v[2])) if isinstance(v, tuple) else unquote(v)) for k, v in decoded]


def header_text(value: bytes) -> str:
    """A field value as text the way `email.parser` (compat32) hands it to these functions:
    US-ASCII, every other octet one U+FFFD. Reading it as UTF-8 instead could turn an octet
    sequence into white space that ``strip`` removes (U+00A0, U+0085) and change a type."""
    return value.decode("ascii", errors="replace").rstrip("\r\n")


def content_type(value: str | None, default: str = "text/plain") -> str:
    """`Message.get_content_type()`: ``type/subtype`` lowercased; ``default`` when there is no
    Content-Type field (RFC 2045 §5.2), text/plain when its value is not ``type/subtype``."""
    if value is None:
        return default
    ctype = value.partition(";")[0].strip().lower()
    return ctype if ctype.count("/") == 1 else "text/plain"


def disposition(value: str | None) -> str | None:
    """`Message.get_content_disposition()`: the disposition type lowercased (RFC 2183 §2)."""
    if value is None:
        return None
    return value.partition(";")[0].strip().lower()
