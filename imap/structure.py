"""ENVELOPE, BODYSTRUCTURE and BODY of stored messages, derived once and kept by the core.

They depend only on the stored bytes, which never change for a (folder, UID), and deriving
them means reading the whole ciphertext and parsing its MIME structure: about 0.2 ms a
message, 2 s for `FETCH 1:* (FLAGS ENVELOPE)` on a 10,000-message folder. The first FETCH
that needs them derives them and asks the core to keep the wire form
(`MailboxHandle.keep_structures`); later FETCHes, from any session on any node, read the
few hundred bytes kept instead of the ciphertext. This is Dovecot's `dovecot.index.cache`
idea. A value that cannot be read back (an older format) is derived again.

The kept form: `MSS1`, then ENVELOPE, BODYSTRUCTURE and BODY, each as a 4-byte big-endian
length followed by its serialised IMAP value (RFC 9051 7.5.2).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence
from typing import NamedTuple

from imap import mime
from imap.protocol.response import Serialised, serialise
from mss.records import FolderInfo
from mss.services import MailboxHandle

__all__ = ["Structure", "derive", "structures"]

log = logging.getLogger("mss.imap")

_MAGIC = b"MSS1"
_LEN = struct.Struct(">I")
_HEAD = len(_MAGIC) + 3 * _LEN.size  # the shortest value: three empty parts
#: Stored messages read at once when structures must be derived.
_CHUNK = 50


class Structure(NamedTuple):
    """The three values in wire form (a tuple: 10,000 of them are read back per FETCH)."""

    envelope: bytes
    bodystructure: bytes
    body: bytes

    def encode(self) -> bytes:
        return b"".join((_MAGIC, *(_LEN.pack(len(v)) + v for v in self)))

    @staticmethod
    def decode(blob: bytes) -> Structure | None:
        """The structure kept in `blob`, or None if it is not in this format."""
        if len(blob) < _HEAD or blob[:4] != _MAGIC:
            return None
        try:
            na, nb, _ = _decode(blob)
        except ValueError:
            return None
        a = 8
        b = a + na + 4
        c = b + nb + 4
        return Structure(blob[a : a + na], blob[b : b + nb], blob[c:])


def _decode(blob: bytes) -> tuple[int, int, int]:
    """The three lengths of a kept value; ValueError if they do not add up to it exactly."""
    (na,) = _LEN.unpack_from(blob, 4)
    b = 8 + na + 4
    if b > len(blob):
        raise ValueError("short")
    (nb,) = _LEN.unpack_from(blob, b - 4)
    c = b + nb + 4
    if c > len(blob):
        raise ValueError("short")
    (nc,) = _LEN.unpack_from(blob, c - 4)
    if c + nc != len(blob):
        raise ValueError("length")
    return na, nb, nc


def derive(raw: bytes) -> Structure:
    """The structure of one stored message (parses it)."""
    part = mime.parse(raw)
    return Structure(
        Serialised(serialise(mime.envelope(part))),
        Serialised(serialise(mime.bodystructure(part, extended=True))),
        Serialised(serialise(mime.bodystructure(part, extended=False))),
    )


async def structures(box: MailboxHandle, info: FolderInfo, uids: Sequence[int]) -> dict[int, Structure]:
    """The structure of each message of `uids` that still exists: kept ones read back,
    the others derived from the stored bytes and handed to the core to keep."""
    out: dict[int, Structure] = {}
    for uid, blob in (await box.structures(info, uids)).items():
        kept = Structure.decode(blob)
        if kept is not None:
            out[uid] = kept
    missing = [u for u in uids if u not in out]
    derived: dict[int, Structure] = {}
    for i in range(0, len(missing), _CHUNK):
        contents = await box.content(info, missing[i : i + _CHUNK])
        derived.update((uid, derive(raw)) for uid, raw in contents.items())
    if derived:
        out.update(derived)
        try:  # one write for the whole FETCH
            await box.keep_structures(info, {uid: s.encode() for uid, s in derived.items()})
        except Exception as exc:  # noqa: BLE001 - an index: failing to keep it costs time, never an answer
            log.warning("imap: could not keep derived structures folder=%s: %s", info.id, exc)
    return out
