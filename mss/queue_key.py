"""At-rest encryption of the relay queue's clear messages (AES-256-GCM).

A message for another operator whose recipients' certificates this operator does not know
leaves in clear over mutual TLS, for the peer to encrypt at its ingest (mss.outbound). While
it waits in the queue it must not be readable in the database or its dumps and backups, so
`mss.queue` stores it sealed with a key that lives only in a file beside the PKI
(`[relay] queue_key`, 32 random bytes, mode 0600, made on first use).

A sealed blob is ``version (1 byte) | key id (1 byte) | nonce (12 bytes) | ciphertext+tag``.
The key id names the key that sealed it, so a later rotation can add a new key file and
still open the entries sealed under the old one; today there is one key, id 1. The
associated data binds the header bytes and a context label, so a blob of another purpose
sealed by the same key is refused (NIST SP 800-38D: 96-bit random nonces, well below 2^32
messages per key for a queue).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crypto.files import write_private

__all__ = ["KEY_ID", "QueueKey", "QueueKeyError"]

#: Format of the sealed blob.
VERSION = 1
#: Id of the (only, for now) key file.
KEY_ID = 1
_NONCE = 12
_HEADER = 2
_CONTEXT = b"mss relay queue content v1"
_KEY_LEN = 32


class QueueKeyError(Exception):
    """The key file is unusable, or a blob cannot be opened with it (tampered, other key)."""


class QueueKey:
    """The queue's AES-256-GCM key (see the module doc)."""

    def __init__(self, key: bytes, key_id: int = KEY_ID) -> None:
        if len(key) != _KEY_LEN:
            raise QueueKeyError(f"the queue key must be {_KEY_LEN} bytes, not {len(key)}")
        if not 0 < key_id < 256:
            raise QueueKeyError("key id out of range")
        self._aead = AESGCM(key)
        self.key_id = key_id

    @classmethod
    def load_or_create(cls, path: Path) -> QueueKey:
        """The key in `path`, made (32 random bytes, 0600) when the file does not exist.

        Two processes starting at once must end up with the same key: the new key is
        written to a private temporary file, then linked into place, which fails when the
        other process won the race (its complete file is then read)."""
        path = Path(path)
        if not path.exists():
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
            write_private(tmp, secrets.token_bytes(_KEY_LEN), exclusive=True)
            try:
                _fsync(tmp)  # on disk before any row sealed with it can be committed
                os.link(tmp, path)
                _fsync(path.parent)
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise QueueKeyError(f"cannot read the queue key {path}: {exc}") from exc
        if len(data) != _KEY_LEN:
            raise QueueKeyError(f"the queue key {path} must hold {_KEY_LEN} bytes, it holds {len(data)}")
        return cls(data)

    def seal(self, clear: bytes) -> bytes:
        """`clear` encrypted and authenticated under this key, with its header."""
        header = bytes((VERSION, self.key_id))
        nonce = secrets.token_bytes(_NONCE)
        return header + nonce + self._aead.encrypt(nonce, clear, header + _CONTEXT)

    def open(self, blob: bytes) -> bytes:
        """The clear bytes of a `seal` result; `QueueKeyError` when it was altered or was
        sealed by another key or format."""
        if len(blob) < _HEADER + _NONCE + 16:
            raise QueueKeyError("sealed queue content too short")
        version, key_id = blob[0], blob[1]
        if version != VERSION:
            raise QueueKeyError(f"unknown sealed queue content format {version}")
        if key_id != self.key_id:
            raise QueueKeyError(f"queue content sealed by key {key_id}, this key is {self.key_id}")
        header, nonce, body = blob[:_HEADER], blob[_HEADER : _HEADER + _NONCE], blob[_HEADER + _NONCE :]
        try:
            return self._aead.decrypt(nonce, body, header + _CONTEXT)
        except Exception as exc:  # cryptography's InvalidTag
            raise QueueKeyError("sealed queue content does not authenticate (altered, or another key)") from exc


def _fsync(path: Path) -> None:
    """fsync a file or a folder (the folder: so the new name survives a power cut)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
