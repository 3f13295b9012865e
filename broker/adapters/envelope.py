"""Envelope encryption of records and identity codes at rest (DESIGN.md invariants 6 and 7).

Each value gets its own 256-bit data key; the content is sealed with AES-256-GCM (NIST SP 800-38D) and the
data key is wrapped with the current key-encryption key by AES key wrap (RFC 3394). Rotating the KEK re-wraps
the 40-byte wrapped key and leaves the ciphertext alone.

What is bound where:
- the caller's associated data (record id, person, category) and the envelope version are GCM associated data,
  so a ciphertext moved to another row, person or category, or relabelled with another version, fails to open;
- the KEK id is *not* in the associated data (re-wrapping changes it); it is protected by the key wrap's own
  integrity check instead: a wrong KEK fails to unwrap (RFC 3394 §2.2.3).

Every failure to open is the same opaque DecryptionError, as Fernet's InvalidToken: no oracle telling a wrong
key from a tampered ciphertext, and no message that could carry personal data.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, replace

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from broker.adapters.keystore import CryptoError, KeyNotFoundError, KeyStore
from broker.domain.hetu import normalise_hetu

__all__ = [
    "VERSION",
    "DecryptionError",
    "Sealed",
    "hetu_index",
    "idempotency_aad",
    "open_hetu",
    "open_sealed",
    "record_aad",
    "rewrap",
    "seal",
    "seal_hetu",
]

VERSION = 1
# 96 bits, the GCM nonce length of NIST SP 800-38D §8.2; a random nonce is safe with one key per value.
_NONCE_BYTES = 12


class DecryptionError(CryptoError):
    code = "decryption_failed"

    def __init__(self) -> None:
        super().__init__("the sealed value could not be opened")


@dataclass(frozen=True, slots=True)
class Sealed:
    """An encrypted value as stored: `ciphertext` ends with the 16-byte GCM tag."""

    ciphertext: bytes
    nonce: bytes
    wrapped_key: bytes
    kek_id: str
    version: int = VERSION


def _aad(label: bytes, *fields: str) -> bytes:
    """Unambiguous associated data: a label with a version, then each field as a 4-byte big-endian length and
    its UTF-8 bytes, so that no two different field lists encode alike (("ab", "c") vs ("a", "bc"))."""
    out = bytearray(b"consent-broker/" + label + b"/v1\x00")
    for field in fields:
        data = field.encode("utf-8")
        out += len(data).to_bytes(4, "big") + data
    return bytes(out)


def record_aad(record_id: str, person_id: str, category: str) -> bytes:
    """Associated data that binds a record's ciphertext to its id, its person and its category."""
    return _aad(b"record", record_id, person_id, category)


def idempotency_aad(client_id: str, key: str) -> bytes:
    """Associated data that binds a stored response's body to the partner and the Idempotency-Key it answers."""
    return _aad(b"idempotent-response", client_id, key)


def _gcm_aad(version: int, aad: bytes) -> bytes:
    # The version is authenticated too, so a future format can never be confused with this one.
    return version.to_bytes(2, "big") + aad


def seal(plaintext: bytes, aad: bytes, keystore: KeyStore) -> Sealed:
    """Encrypt `plaintext` under a fresh data key wrapped with the current KEK."""
    kek_id, kek = keystore.current_kek()
    data_key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(_NONCE_BYTES)
    ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, _gcm_aad(VERSION, aad))
    return Sealed(ciphertext, nonce, aes_key_wrap(kek, data_key), kek_id)


def _unwrap(sealed: Sealed, keystore: KeyStore) -> bytes:
    if sealed.version != VERSION or len(sealed.nonce) != _NONCE_BYTES:
        raise DecryptionError
    try:
        data_key = aes_key_unwrap(keystore.kek(sealed.kek_id), sealed.wrapped_key)
    except (KeyNotFoundError, InvalidUnwrap):
        raise DecryptionError from None
    if len(data_key) != 32:
        raise DecryptionError
    return data_key


def open_sealed(sealed: Sealed, aad: bytes, keystore: KeyStore) -> bytes:
    """Decrypt a sealed value; any failure at all raises DecryptionError."""
    data_key = _unwrap(sealed, keystore)
    try:
        return AESGCM(data_key).decrypt(sealed.nonce, sealed.ciphertext, _gcm_aad(sealed.version, aad))
    except InvalidTag:
        raise DecryptionError from None


def rewrap(sealed: Sealed, keystore: KeyStore) -> Sealed:
    """Re-wrap the data key under the current KEK (for `broker keys rotate`); the ciphertext is unchanged.
    Idempotent, so an interrupted rotation can simply run again."""
    kek_id, kek = keystore.current_kek()
    if sealed.kek_id == kek_id:
        return sealed
    return replace(sealed, wrapped_key=aes_key_wrap(kek, _unwrap(sealed, keystore)), kek_id=kek_id)


def hetu_index(hetu: str, keystore: KeyStore) -> str:
    """The look-up index of an identity code: hex HMAC-SHA256 (RFC 2104) of its normalised form under the
    index key. Deterministic, so it can be a unique column; keyed, so enumerating codes cannot reverse it."""
    code = normalise_hetu(hetu)  # raises InvalidHetuError, whose message never repeats the code
    return hmac.new(keystore.hetu_index_key(), code.encode("ascii"), hashlib.sha256).hexdigest()


def seal_hetu(hetu: str, person_id: str, keystore: KeyStore) -> Sealed:
    """Encrypt a normalised identity code, bound to the person it belongs to."""
    return seal(normalise_hetu(hetu).encode("ascii"), _aad(b"hetu", person_id), keystore)


def open_hetu(sealed: Sealed, person_id: str, keystore: KeyStore) -> str:
    return open_sealed(sealed, _aad(b"hetu", person_id), keystore).decode("ascii")
