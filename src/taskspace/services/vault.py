"""Encryption of stored secrets (git tokens) with AES-256-GCM under a key derived from the
server's secret key. Each ciphertext records the id of the key that sealed it."""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from taskspace.core.errors import TaskspaceError

_NONCE = 12


def fingerprint(secret: str) -> str:
    """Identifies a secret without revealing it."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:16]


class Vault:
    def __init__(self, secret_key: str):
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=b"taskspace token vault v1").derive(secret_key.encode())
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(key).hexdigest()[:12]

    def seal(self, plaintext: str, *, context: str) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, plaintext.encode(), context.encode())

    def open(self, blob: bytes, *, key_id: str, context: str) -> str:
        if key_id != self.key_id:
            raise TaskspaceError("A stored token was encrypted with another server key.",
                                 hint="Restore the previous TASKSPACE_SECRET_KEY (or DATA_DIR/secret.key), "
                                      "or remove the token and add it again.")
        try:
            return self._aead.decrypt(blob[:_NONCE], blob[_NONCE:], context.encode()).decode()
        except (InvalidTag, ValueError):  # ValueError: a blob too short to hold a nonce
            raise TaskspaceError("A stored token could not be decrypted (it was altered).",
                                 hint="Remove the token and add it again.") from None
