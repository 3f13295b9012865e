"""Signed notes (C2SP signed-note, https://c2sp.org/signed-note) with Ed25519 keys, and the log checkpoints
carried in them (C2SP tlog-checkpoint, https://c2sp.org/tlog-checkpoint).

A note is a text ending in a newline, a blank line, and signature lines `— <key name> base64(key ID ||
signature)`. Verification takes a set of keys, so that keys rotate as a normal operation: during a rotation the
log signs with both keys, and verifiers holding either accept the note (STYLE.md, "Version what you sign").
As the spec requires, signatures by keys not in the set are ignored, a signature by a key in the set must
verify, and a note no key in the set has signed is rejected.

The same text is accepted by Go's golang.org/x/mod/sumdb/note and by transparency-dev tooling: key IDs are the
spec's recommended SHA-256(name || 0x0A || 0x01 || public key)[:4], key strings are `<name>+<key ID in hex>+
base64(0x01 || public key)`, and private keys `PRIVATE+KEY+<name>+<key ID>+base64(0x01 || seed)`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit.errors import AuditError
from audit.merkle import HASH_SIZE

NoteFailure = Literal[
    "malformed",
    "bad_signature_line",
    "trailing_garbage",
    "too_many_signatures",
    "no_known_signature",
    "bad_signature",
    "bad_key",
    "bad_text",
    "checkpoint_malformed",
    "origin_mismatch",
]

# C2SP signed-note, "Signature types": 0x01 is Ed25519.
ED25519 = 0x01
# C2SP signed-note: verifiers "MUST accept at least up to 16 signatures" and SHOULD set a limit; 100 is the
# limit of Go's note package, the reference implementation.
MAX_SIGNATURES = 100
# C2SP tlog-checkpoint builds on RFC 6962/9162, whose tree sizes are uint64.
MAX_TREE_SIZE = 2**64 - 1
SIGNATURE_PREFIX = "\u2014 "  # em dash, space

_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")  # C2SP signed-note: no ASCII controls except newline
_DECIMAL = re.compile(r"0|[1-9][0-9]*")  # C2SP tlog-checkpoint: no leading zeroes; ASCII digits only
_KEY_HASH = re.compile(r"[0-9a-f]{8}")


class NoteError(AuditError):
    """A note, checkpoint or key is malformed, or a note did not verify. `kind` says which check failed."""

    code: ClassVar[str] = "note_invalid"

    def __init__(self, kind: NoteFailure, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind: NoteFailure = kind
        self.message = message


@dataclass(frozen=True, slots=True)
class Verifier:
    """A public key that verifies notes: its name, 4-byte key ID and 32-byte Ed25519 key."""

    name: str
    key_hash: bytes
    public_key: bytes

    def __str__(self) -> str:
        return verifier_key(self.name, self.public_key)


@dataclass(frozen=True, slots=True)
class Signer:
    """A private key that signs notes under a name."""

    name: str
    key_hash: bytes
    private_key: Ed25519PrivateKey

    def verifier(self) -> Verifier:
        public = self.private_key.public_key().public_bytes_raw()
        return Verifier(self.name, self.key_hash, public)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The note text of a C2SP tlog-checkpoint: the log's origin, its tree size and RFC 9162 root hash, and any
    extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()


def _check_name(name: str, kind: NoteFailure) -> None:
    # C2SP signed-note: "Key names MUST be non-empty and MUST NOT contain any Unicode spaces or plus (U+002B)
    # characters." Control characters are out too, as everywhere in a note.
    if not isinstance(name, str) or not name or "+" in name or any(c.isspace() for c in name) or _CONTROL.search(name):
        raise NoteError(kind, "a key name must be non-empty, without spaces, '+' or control characters")


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode(text: str) -> bytes | None:
    """Standard base64 (RFC 4648 §4) in its one canonical spelling, or None. Accepting other spellings (missing
    padding, non-zero padding bits, embedded newlines) would let one signed value be written several ways."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None
    return data if _b64encode(data) == text else None


def _raw_public(public_key: Ed25519PublicKey | bytes) -> bytes:
    if isinstance(public_key, Ed25519PublicKey):
        return public_key.public_bytes_raw()
    if not isinstance(public_key, bytes) or len(public_key) != 32:
        raise NoteError("bad_key", "an Ed25519 public key is 32 bytes")
    return public_key


def key_hash(name: str, public_key: Ed25519PublicKey | bytes) -> bytes:
    """The key ID: SHA-256(key name || 0x0A || 0x01 || 32-byte Ed25519 public key)[:4] (C2SP signed-note,
    "Ed25519 signatures")."""
    _check_name(name, "bad_key")
    raw = _raw_public(public_key)
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ED25519]) + raw).digest()[:4]


def verifier_key(name: str, public_key: Ed25519PublicKey | bytes) -> str:
    """`<name>+<key ID, 8 lowercase hex digits>+base64(0x01 || public key)`: the form verifier.key holds."""
    raw = _raw_public(public_key)
    return f"{name}+{key_hash(name, raw).hex()}+{_b64encode(bytes([ED25519]) + raw)}"


def parse_verifier_key(text: str) -> Verifier:
    """Parse a `verifier_key` string; the key ID must be the one the name and key give."""
    # The name and key ID cannot hold a "+", but standard base64 can: split at the first two only.
    parts = text.split("+", 2) if isinstance(text, str) else []
    if len(parts) != 3:
        raise NoteError("bad_key", "a verifier key is <name>+<key id>+<base64 key>")
    name, hash_hex, encoded = parts
    _check_name(name, "bad_key")
    key = _b64decode(encoded)
    if not _KEY_HASH.fullmatch(hash_hex) or key is None or len(key) != 33 or key[0] != ED25519:
        raise NoteError("bad_key", "a verifier key holds 8 hex digits and base64 of 0x01 and a 32-byte Ed25519 key")
    if key_hash(name, key[1:]).hex() != hash_hex:
        raise NoteError("bad_key", "the key ID does not belong to this name and key")
    return Verifier(name, bytes.fromhex(hash_hex), key[1:])


def signer_key(name: str, private_key: Ed25519PrivateKey) -> str:
    """`PRIVATE+KEY+<name>+<key ID>+base64(0x01 || 32-byte seed)`, the private counterpart of `verifier_key`."""
    seed = private_key.private_bytes_raw()
    public = private_key.public_key()
    return f"PRIVATE+KEY+{name}+{key_hash(name, public).hex()}+{_b64encode(bytes([ED25519]) + seed)}"


def parse_signer_key(text: str) -> Signer:
    """Parse a `signer_key` string; the key ID must be the one the name and the derived public key give."""
    parts = text.split("+", 4) if isinstance(text, str) else []
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
        raise NoteError("bad_key", "a signer key is PRIVATE+KEY+<name>+<key id>+<base64 key>")
    name, hash_hex, encoded = parts[2:]
    _check_name(name, "bad_key")
    seed = _b64decode(encoded)
    if not _KEY_HASH.fullmatch(hash_hex) or seed is None or len(seed) != 33 or seed[0] != ED25519:
        raise NoteError("bad_key", "a signer key holds 8 hex digits and base64 of 0x01 and a 32-byte seed")
    private_key = Ed25519PrivateKey.from_private_bytes(seed[1:])
    if key_hash(name, private_key.public_key()).hex() != hash_hex:
        raise NoteError("bad_key", "the key ID does not belong to this name and key")
    return Signer(name, bytes.fromhex(hash_hex), private_key)


def _check_text(text: str) -> None:
    # C2SP signed-note: valid UTF-8, no ASCII control characters but newline, and the text ends in a newline.
    if not isinstance(text, str) or not text.endswith("\n"):
        raise NoteError("bad_text", "a note text must be a string ending in a newline")
    if _CONTROL.search(text):
        raise NoteError("bad_text", "a note text must not contain control characters other than newline")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise NoteError("bad_text", "a note text must be valid Unicode") from None


def _signature_line(text: str, name: str, private_key: Ed25519PrivateKey) -> str:
    signature = private_key.sign(text.encode("utf-8"))
    return f"{SIGNATURE_PREFIX}{name} {_b64encode(key_hash(name, private_key.public_key()) + signature)}\n"


def sign_note(text: str, name: str, private_key: Ed25519PrivateKey) -> str:
    """The signed note: `text`, a blank line, and one signature line by `private_key` under `name`."""
    _check_text(text)
    _check_name(name, "bad_key")
    return f"{text}\n{_signature_line(text, name, private_key)}"


def add_signature(note: str, name: str, private_key: Ed25519PrivateKey) -> str:
    """`note` with one more signature line, for a key rotation (sign with the old and the new key until every
    verifier has the new one) or a cosigner. The signatures already there are kept and not checked."""
    text, _ = _split(note)
    _check_name(name, "bad_key")
    return note + _signature_line(text, name, private_key)


@dataclass(frozen=True, slots=True)
class _Signature:
    name: str
    key_hash: bytes
    signature: bytes


def _split(note: str | bytes) -> tuple[str, list[_Signature]]:
    """The note's text and its signature lines, checked for form only."""
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("malformed", "a note must be valid UTF-8") from None
    elif not isinstance(note, str):
        raise NoteError("malformed", "a note must be text")
    if _CONTROL.search(note):
        raise NoteError("malformed", "a note must not contain control characters other than newline")
    try:
        note.encode("utf-8")
    except UnicodeEncodeError:
        raise NoteError("malformed", "a note must be valid Unicode") from None
    # C2SP signed-note: "the text is separated from the signatures by the last empty line in the note".
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("malformed", "no blank line separates the text from the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block:
        raise NoteError("malformed", "no signature lines follow the last blank line")
    if not block.endswith("\n"):
        raise NoteError("trailing_garbage", "the note does not end with a complete signature line")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError("too_many_signatures", f"a note may carry at most {MAX_SIGNATURES} signatures")
    signatures: list[_Signature] = []
    for line in lines:
        signature = _parse_signature_line(line)
        if signature is None:
            # After a well-formed signature a stray line is something appended to a signed note; before any,
            # the signature block itself is broken.
            kind: NoteFailure = "trailing_garbage" if signatures else "bad_signature_line"
            raise NoteError(kind, f"line {len(signatures) + 1} after the blank line is not a signature line")
        signatures.append(signature)
    return text, signatures


def _parse_signature_line(line: str) -> _Signature | None:
    if not line.startswith(SIGNATURE_PREFIX):
        return None
    name, space, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
    data = _b64decode(encoded) if space else None
    # Four bytes of key ID and at least one of signature.
    if data is None or len(data) < 5:
        return None
    try:
        _check_name(name, "bad_signature_line")
    except NoteError:
        return None
    return _Signature(name, data[:4], data[4:])


def open_note(note: str | bytes, verifiers: Iterable[Verifier]) -> tuple[str, tuple[str, ...]]:
    """Verify `note` against a set of keys and return its text and the names of the keys whose signatures
    verified (in the order they appear).

    Raises NoteError: `malformed`, `bad_signature_line`, `trailing_garbage` or `too_many_signatures` for a note
    that is not a well-formed signed note; `bad_signature` when a signature by a key in the set does not verify
    (C2SP signed-note: such a note SHOULD be rejected whole, and here it is); `no_known_signature` when no key
    in the set signed it. Signatures by other keys are ignored, even if they share a name or a key ID (but not
    both) with a key in the set.
    """
    known: dict[tuple[str, bytes], Verifier] = {}
    for verifier in verifiers:
        if not isinstance(verifier, Verifier):
            raise NoteError("bad_key", "verifiers must be Verifier objects (parse_verifier_key)")
        identity = (verifier.name, verifier.key_hash)
        if identity in known and known[identity] != verifier:
            raise NoteError("bad_key", "two verifier keys share a name and a key ID")
        known[identity] = verifier
    text, signatures = _split(note)
    message = text.encode("utf-8")
    verified: list[str] = []
    for signature in signatures:
        key = known.get((signature.name, signature.key_hash))
        if key is None:
            continue
        try:
            if len(signature.signature) != 64:
                raise InvalidSignature
            Ed25519PublicKey.from_public_bytes(key.public_key).verify(signature.signature, message)
        except InvalidSignature:
            raise NoteError("bad_signature", f"the signature by {key.name} does not verify") from None
        if key.name not in verified:
            verified.append(key.name)
    if not verified:
        raise NoteError("no_known_signature", "no known key signed this note")
    return text, tuple(verified)


def format_checkpoint(origin: str, size: int, root: bytes, extensions: Sequence[str] = ()) -> str:
    """The C2SP tlog-checkpoint note text: origin, decimal tree size, base64 root hash, extension lines."""
    if not isinstance(origin, str) or not origin or "\n" in origin or _CONTROL.search(origin):
        raise NoteError("checkpoint_malformed", "the origin must be a non-empty line")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_TREE_SIZE:
        raise NoteError("checkpoint_malformed", "the tree size must be an integer in [0, 2^64)")
    if not isinstance(root, bytes) or len(root) != HASH_SIZE:
        raise NoteError("checkpoint_malformed", f"the root hash must be {HASH_SIZE} bytes")
    for line in extensions:
        if not isinstance(line, str) or not line or "\n" in line or _CONTROL.search(line):
            raise NoteError("checkpoint_malformed", "extension lines must be non-empty single lines")
    text = f"{origin}\n{size}\n{_b64encode(root)}\n" + "".join(f"{line}\n" for line in extensions)
    _check_text(text)
    return text


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint note text (C2SP tlog-checkpoint, "Note text"), strictly: at least three non-empty
    lines, each ending in a newline; the size in decimal without leading zeroes; the root 32 bytes in
    canonical standard base64."""
    if not isinstance(text, str) or not text.endswith("\n"):
        raise NoteError("checkpoint_malformed", "a checkpoint is lines of text, each ending in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or not all(lines) or _CONTROL.search(text):
        raise NoteError("checkpoint_malformed", "a checkpoint has at least three non-empty lines")
    origin, size_line, root_line = lines[:3]
    if not _DECIMAL.fullmatch(size_line) or int(size_line) > MAX_TREE_SIZE:
        raise NoteError("checkpoint_malformed", "the tree size must be decimal, without leading zeroes, below 2^64")
    root = _b64decode(root_line)
    if root is None or len(root) != HASH_SIZE:
        raise NoteError("checkpoint_malformed", f"the root hash must be {HASH_SIZE} bytes in standard base64")
    return Checkpoint(origin, int(size_line), root, tuple(lines[3:]))


def sign_checkpoint(checkpoint: Checkpoint, name: str, private_key: Ed25519PrivateKey) -> str:
    """The checkpoint as a note signed by `private_key`. C2SP tlog-checkpoint: the key name SHOULD be the
    origin."""
    text = format_checkpoint(checkpoint.origin, checkpoint.size, checkpoint.root, checkpoint.extensions)
    return sign_note(text, name, private_key)


def open_checkpoint(note: str | bytes, verifiers: Iterable[Verifier], *, origin: str | None = None) -> Checkpoint:
    """Verify a signed checkpoint (`open_note`) and parse it; with `origin`, the checkpoint must be that log's
    (`origin_mismatch` otherwise), since a valid checkpoint of another log proves nothing about this one."""
    text, _ = open_note(note, verifiers)
    checkpoint = parse_checkpoint(text)
    if origin is not None and checkpoint.origin != origin:
        raise NoteError("origin_mismatch", "the checkpoint is for another log (its origin line differs)")
    return checkpoint


def read_checkpoint_unverified(note: str | bytes) -> Checkpoint:
    """The checkpoint a note carries, without checking any signature: only for deciding where to file a note
    (its tree size) before it is verified. Never act on what it says otherwise."""
    text, _ = _split(note)
    return parse_checkpoint(text)
