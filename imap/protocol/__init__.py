"""Sans-IO IMAP protocol: bytes in, command objects out; response objects in, bytes out.

Nothing here touches a socket or the core, so the parser and serialiser can be driven
byte by byte in tests (DESIGN.md, "sans-IO").
"""

from imap.protocol.commands import (
    Command,
    FetchAtt,
    SearchKey,
    Section,
    SequenceSet,
)
from imap.protocol.parser import (
    ContinuationNeeded,
    Limits,
    ParseError,
    Parser,
    RawLine,
    parse_command,
)
from imap.protocol.response import (
    Atom,
    Continue,
    Data,
    Literal,
    Response,
    Status,
    serialise,
)

__all__ = [
    "Atom",
    "Command",
    "ContinuationNeeded",
    "Continue",
    "Data",
    "FetchAtt",
    "Limits",
    "Literal",
    "ParseError",
    "Parser",
    "RawLine",
    "Response",
    "SearchKey",
    "Section",
    "SequenceSet",
    "Status",
    "parse_command",
    "serialise",
]
