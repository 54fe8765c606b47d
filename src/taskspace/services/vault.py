"""Stored secrets (git tokens) under envelope encryption.

Each secret is encrypted with AES-256-GCM under its own data key; the data key is wrapped
(AES-256-GCM) under a key-encryption key (KEK) of the keyring. Rotating the KEK re-wraps the
data keys only. The keyring comes from ``TASKSPACE_SECRET_KEY`` or the key file
(``DATA_DIR/secret.key``): one key a line, ``<id> <base64 of 32 bytes>``, the first line being
the current key; older keys only open what they sealed. A line with no id (an older format, or
a passphrase) is turned into a key with HKDF. The key file is re-read when it changes, so a
rotation needs no restart.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from taskspace.core.errors import TaskspaceError

_NONCE = 12


def fingerprint(secret: str) -> str:
    """Identifies a secret without revealing it."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:16]


def new_key_line() -> str:
    key = AESGCM.generate_key(bit_length=256)
    return f"{secrets.token_hex(4)} {base64.b64encode(key).decode()}"


@dataclass(frozen=True)
class Keyring:
    keys: dict[str, bytes]
    current: str

    @classmethod
    def parse(cls, text: str) -> Keyring:
        keys: dict[str, bytes] = {}
        order: list[str] = []
        for line in (raw.strip() for raw in text.replace(",", "\n").splitlines()):
            if not line or line.startswith("#"):
                continue
            key_id, _, value = line.partition(" ")
            if value:
                try:
                    key = base64.b64decode(value.strip(), validate=True)
                except ValueError:
                    key = b""
                if len(key) != 32:
                    raise TaskspaceError(f"Key {key_id} of the keyring is not the base64 of 32 bytes.",
                                         hint="Each line is '<id> <base64 of 32 random bytes>', or a passphrase "
                                              "without spaces.")
            else:  # a passphrase
                key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                           info=b"taskspace token vault v1").derive(line.encode())
                key_id = hashlib.sha256(key).hexdigest()[:12]
            keys[key_id] = key
            order.append(key_id)
        if not order:
            raise TaskspaceError("The keyring is empty.", hint="Set TASKSPACE_SECRET_KEY or fix the key file.")
        return cls(keys=keys, current=order[0])


@dataclass(frozen=True)
class Sealed:
    ciphertext: bytes
    wrapped_key: bytes
    key_id: str


class Vault:
    def __init__(self, *, text: str | None = None, key_file: Path | None = None):
        """Keys from ``text`` (fixed), or from ``key_file`` (re-read when it changes)."""
        if text is None and key_file is None:
            raise ValueError("a vault needs key text or a key file")
        self._text, self._file = text, key_file
        self._mtime: float | None = None
        self._keyring = self._read()

    @property
    def key_file(self) -> Path | None:
        return self._file

    @property
    def keyring(self) -> Keyring:
        self._refresh()
        return self._keyring

    @property
    def key_id(self) -> str:
        return self.keyring.current

    def _read(self) -> Keyring:
        if self._file is None:
            assert self._text is not None
            return Keyring.parse(self._text)
        self._mtime = os.stat(self._file).st_mtime_ns
        return Keyring.parse(self._file.read_text())

    def _refresh(self, force: bool = False) -> None:
        if self._file is not None and (force or os.stat(self._file).st_mtime_ns != self._mtime):
            self._keyring = self._read()

    def seal(self, plaintext: str, *, context: str) -> Sealed:
        ring = self.keyring
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(_NONCE)
        ciphertext = nonce + AESGCM(data_key).encrypt(nonce, plaintext.encode(), context.encode())
        return Sealed(ciphertext, self._wrap(data_key, ring.current, context), ring.current)

    def _wrap(self, data_key: bytes, key_id: str, context: str) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + AESGCM(self._keyring.keys[key_id]).encrypt(nonce, data_key, b"data-key:" + context.encode())

    def _unwrap(self, sealed: Sealed, context: str) -> bytes:
        if sealed.key_id not in self._keyring.keys:
            self._refresh(force=True)
        key = self._keyring.keys.get(sealed.key_id)
        if key is None:
            raise TaskspaceError(f"A stored token was sealed with key {sealed.key_id}, which the keyring lacks.",
                                 hint="Restore that key to TASKSPACE_SECRET_KEY or the key file, or remove the "
                                      "token and add it again.")
        try:
            blob = sealed.wrapped_key
            return AESGCM(key).decrypt(blob[:_NONCE], blob[_NONCE:], b"data-key:" + context.encode())
        except (InvalidTag, ValueError):
            raise TaskspaceError("A stored token could not be decrypted (it was altered).",
                                 hint="Remove the token and add it again.") from None

    def open(self, sealed: Sealed, *, context: str) -> str:
        data_key = self._unwrap(sealed, context)
        try:
            blob = sealed.ciphertext
            return AESGCM(data_key).decrypt(blob[:_NONCE], blob[_NONCE:], context.encode()).decode()
        except (InvalidTag, ValueError):
            raise TaskspaceError("A stored token could not be decrypted (it was altered).",
                                 hint="Remove the token and add it again.") from None

    def rewrap(self, sealed: Sealed, *, context: str) -> Sealed:
        """The same secret with its data key wrapped under the current key."""
        data_key = self._unwrap(sealed, context)
        current = self.keyring.current
        return Sealed(sealed.ciphertext, self._wrap(data_key, current, context), current)
