"""Stored secrets under envelope encryption: a data key per secret, wrapped by the keyring's
current key; rotation re-wraps; the key file is re-read when it changes."""

from __future__ import annotations

import base64
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from taskspace.core.errors import TaskspaceError
from taskspace.services.runtime import open_vault
from taskspace.services.vault import Keyring, Sealed, Vault, fingerprint, new_key_line
from taskspace.settings import load_settings

TOKEN = "ghp_R4nd0mL00k1ngT0k3nV4lu3F0rT3st1ng123"
CONTEXT = "git-token:7:ci"


@pytest.fixture
def vault() -> Vault:
    return Vault(text=new_key_line())


def altered(vault: Vault, sealed: Sealed, *, context: str = CONTEXT) -> TaskspaceError:
    with pytest.raises(TaskspaceError) as caught:
        vault.open(sealed, context=context)
    assert "could not be decrypted (it was altered)" in caught.value.message
    assert caught.value.hint == "Remove the token and add it again."
    return caught.value


@pytest.mark.parametrize("plaintext", [TOKEN, "", "x", "pässwörd ✓ 🔑", "a" * 4096, "line\nbreak\x00nul"])
def test_round_trip(vault: Vault, plaintext: str) -> None:
    assert vault.open(vault.seal(plaintext, context=CONTEXT), context=CONTEXT) == plaintext


def test_nothing_stored_contains_the_plaintext(vault: Vault) -> None:
    sealed = vault.seal(TOKEN, context=CONTEXT)
    stored = sealed.ciphertext + sealed.wrapped_key + sealed.key_id.encode()
    for needle in (TOKEN.encode(), TOKEN[4:20].encode(), base64.b64encode(TOKEN.encode())[:16]):
        assert needle not in stored
    assert len(sealed.ciphertext) == 12 + len(TOKEN.encode()) + 16  # nonce, ciphertext, tag
    assert len(sealed.wrapped_key) == 12 + 32 + 16


def test_every_secret_gets_its_own_data_key_and_nonces(vault: Vault) -> None:
    sealed = [vault.seal(TOKEN, context=CONTEXT) for _ in range(20)]
    assert len({s.ciphertext for s in sealed}) == 20
    assert len({s.wrapped_key for s in sealed}) == 20


@pytest.mark.parametrize("part", ["ciphertext", "wrapped_key"])
def test_a_flipped_bit_is_detected(vault: Vault, part: str) -> None:
    sealed = vault.seal(TOKEN, context=CONTEXT)
    blob = bytearray(getattr(sealed, part))
    blob[-1] ^= 1
    altered(vault, replace(sealed, **{part: bytes(blob)}))


@pytest.mark.parametrize("length", [0, 5, 11])
def test_a_truncated_value_is_reported_as_altered(vault: Vault, length: int) -> None:
    sealed = vault.seal(TOKEN, context=CONTEXT)
    altered(vault, replace(sealed, ciphertext=sealed.ciphertext[:length]))


def test_a_secret_is_bound_to_its_context(vault: Vault) -> None:
    """A sealed token copied onto another user's row does not open there."""
    altered(vault, vault.seal(TOKEN, context=CONTEXT), context="git-token:8:ci")


def test_a_key_the_keyring_lacks_is_named_with_a_hint(vault: Vault) -> None:
    sealed = Vault(text=new_key_line()).seal(TOKEN, context=CONTEXT)
    with pytest.raises(TaskspaceError) as caught:
        vault.open(sealed, context=CONTEXT)
    assert sealed.key_id in caught.value.message and "Restore that key" in (caught.value.hint or "")


def test_rotation_rewraps_the_data_key_and_keeps_the_ciphertext(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    old = new_key_line()
    key_file.write_text(old + "\n")
    vault = Vault(key_file=key_file)
    sealed = vault.seal(TOKEN, context=CONTEXT)

    new = new_key_line()
    key_file.write_text(f"{new}\n{old}\n")
    os.utime(key_file, ns=(1, 1))  # a change the vault must notice even within one clock tick
    assert vault.key_id == new.split()[0], "the file is re-read when it changes"
    assert vault.open(sealed, context=CONTEXT) == TOKEN, "older keys still open what they sealed"

    rewrapped = vault.rewrap(sealed, context=CONTEXT)
    assert rewrapped.key_id == new.split()[0] and rewrapped.ciphertext == sealed.ciphertext
    key_file.write_text(new + "\n")
    assert Vault(key_file=key_file).open(rewrapped, context=CONTEXT) == TOKEN
    with pytest.raises(TaskspaceError):
        Vault(key_file=key_file).open(sealed, context=CONTEXT)


def test_a_passphrase_and_comma_separated_keys_are_keyrings() -> None:
    ring = Keyring.parse("correct-horse-battery-staple")
    assert len(ring.keys[ring.current]) == 32
    first, second = new_key_line(), new_key_line()
    ring = Keyring.parse(f"{first},{second}")
    assert ring.current == first.split()[0] and len(ring.keys) == 2


@pytest.mark.parametrize("text", ["", "# only a comment", "abc ZZZZ", "abc " + base64.b64encode(b"short").decode()])
def test_a_bad_keyring_is_refused(text: str) -> None:
    with pytest.raises((TaskspaceError, ValueError)):
        Keyring.parse(text)


def test_the_key_file_is_made_once_and_private(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    first = open_vault(settings)
    key_file = tmp_path / "data" / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert open_vault(settings).key_id == first.key_id


def test_the_fingerprint_identifies_without_revealing() -> None:
    assert fingerprint(TOKEN) == fingerprint(TOKEN) != fingerprint(TOKEN + "x")
    assert fingerprint(TOKEN).startswith("sha256:") and TOKEN[:6] not in fingerprint(TOKEN)
