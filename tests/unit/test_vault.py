"""Stored secrets: sealed with AES-GCM under the server key, bound to a context."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from taskspace.core.errors import TaskspaceError
from taskspace.services.vault import Vault, fingerprint

TOKEN = "ghp_R4nd0mL00k1ngT0k3nV4lu3F0rT3st1ng123"
CONTEXT = "git-token:7:ci"


@pytest.fixture(scope="module")
def vault() -> Vault:
    return Vault("server-secret-key-for-tests")


def altered(vault: Vault, blob: bytes, *, context: str = CONTEXT) -> TaskspaceError:
    with pytest.raises(TaskspaceError) as caught:
        vault.open(blob, key_id=vault.key_id, context=context)
    assert "could not be decrypted (it was altered)" in caught.value.message
    assert caught.value.hint == "Remove the token and add it again."
    return caught.value


@pytest.mark.parametrize("plaintext", [TOKEN, "", "x", "pässwörd ✓ 🔑", "a" * 4096, "line\nbreak\x00nul"])
def test_round_trip(vault, plaintext):
    blob = vault.seal(plaintext, context=CONTEXT)

    assert vault.open(blob, key_id=vault.key_id, context=CONTEXT) == plaintext


def test_a_new_vault_with_the_same_key_opens_what_another_sealed(vault):
    blob = vault.seal(TOKEN, context=CONTEXT)
    again = Vault("server-secret-key-for-tests")

    assert again.key_id == vault.key_id
    assert again.open(blob, key_id=again.key_id, context=CONTEXT) == TOKEN


def test_the_ciphertext_never_contains_the_plaintext(vault):
    blob = vault.seal(TOKEN, context=CONTEXT)
    needles = [TOKEN.encode(), TOKEN[4:20].encode(), base64.b64encode(TOKEN.encode())[:16],
               TOKEN.encode().hex().encode()[:16]]

    for needle in needles:
        assert needle not in blob
    assert len(blob) == 12 + len(TOKEN.encode()) + 16  # nonce, ciphertext, tag


def test_sealing_twice_uses_different_nonces(vault):
    blobs = [vault.seal(TOKEN, context=CONTEXT) for _ in range(20)]

    assert len({blob[:12] for blob in blobs}) == 20
    assert len(set(blobs)) == 20
    assert all(vault.open(blob, key_id=vault.key_id, context=CONTEXT) == TOKEN for blob in blobs)


@pytest.mark.parametrize("where", ["nonce", "ciphertext", "tag"])
def test_a_flipped_bit_anywhere_is_reported_as_altered(vault, where):
    blob = bytearray(vault.seal(TOKEN, context=CONTEXT))
    index = {"nonce": 0, "ciphertext": 12 + 5, "tag": len(blob) - 1}[where]
    blob[index] ^= 0x01

    altered(vault, bytes(blob))


@pytest.mark.parametrize(
    "change",
    [
        lambda b: b[:-1],
        lambda b: b + b"\x00",
        lambda b: b[:12],
        lambda b: b[:20],
        lambda b: b[:3],  # too short to hold a nonce
        lambda b: b"",
        lambda b: b[12:] + b[:12],
    ],
    ids=["one-byte-short", "one-byte-long", "nonce-only", "no-tag", "shorter-than-a-nonce", "empty", "rotated"],
)
def test_a_truncated_or_reshaped_blob_is_reported_as_altered(vault, change):
    altered(vault, change(vault.seal(TOKEN, context=CONTEXT)))


@pytest.mark.parametrize("context", ["git-token:7:other", "git-token:8:ci", "", CONTEXT + " "])
def test_a_blob_opened_in_another_context_is_refused(vault, context):
    blob = vault.seal(TOKEN, context=CONTEXT)

    altered(vault, blob, context=context)


def test_a_blob_of_another_server_key_is_refused_with_a_hint(vault):
    other = Vault("a-different-server-key")
    blob = other.seal(TOKEN, context=CONTEXT)

    assert other.key_id != vault.key_id
    with pytest.raises(TaskspaceError) as caught:
        vault.open(blob, key_id=other.key_id, context=CONTEXT)
    assert "encrypted with another server key" in caught.value.message
    assert "TASKSPACE_SECRET_KEY" in caught.value.hint
    assert "add it again" in caught.value.hint


def test_a_blob_of_another_key_under_a_forged_key_id_is_still_refused(vault):
    blob = Vault("a-different-server-key").seal(TOKEN, context=CONTEXT)

    altered(vault, blob)


def test_the_key_id_identifies_the_key_without_revealing_it():
    secret = "server-secret-key-for-tests"
    key_id = Vault(secret).key_id

    assert re.fullmatch(r"[0-9a-f]{12}", key_id)
    assert key_id == Vault(secret).key_id
    assert key_id != Vault(secret + "x").key_id
    assert key_id not in hashlib.sha256(secret.encode()).hexdigest()  # derived, not a hash of the secret


def test_fingerprint_is_stable_short_and_not_revealing():
    fp = fingerprint(TOKEN)

    assert fp == fingerprint(TOKEN)
    assert re.fullmatch(r"sha256:[0-9a-f]{16}", fp)
    assert fp == "sha256:" + hashlib.sha256(TOKEN.encode()).hexdigest()[:16]
    assert fp != fingerprint(TOKEN + "1")
    assert fp != fingerprint(TOKEN[:-1])
    for part in (TOKEN, TOKEN[:8], TOKEN[-8:]):
        assert part not in fp
