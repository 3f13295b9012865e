"""Signed notes (C2SP signed-note) and checkpoints (C2SP tlog-checkpoint) in audit/note.py: byte for byte as the
reference implementation writes them, verified against key sets, and refused with a specific kind whenever a
note, checkpoint or key is malformed or a signature does not verify."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import (
    Checkpoint,
    NoteError,
    Verifier,
    add_signature,
    format_checkpoint,
    key_hash,
    open_checkpoint,
    open_note,
    parse_checkpoint,
    parse_signer_key,
    parse_verifier_key,
    sign_checkpoint,
    sign_note,
    signer_key,
    verifier_key,
)
from audit.note import MAX_SIGNATURES, read_checkpoint_unverified

# The example of golang.org/x/mod/sumdb/note, the reference implementation of C2SP signed-note (its package
# documentation and note_test.go): keys, text and the exact signed note.
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_SIGNATURE = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
GO_NOTE = GO_TEXT + "\n" + GO_SIGNATURE

ORIGIN = "broker.example/audit"
ROOT = hashlib.sha256(b"root").digest()


def key(label: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(label.encode()).digest())


OLD, NEW, OTHER = key("old"), key("new"), key("other")
OLD_V = parse_verifier_key(verifier_key(ORIGIN, OLD.public_key()))
NEW_V = parse_verifier_key(verifier_key(ORIGIN, NEW.public_key()))
OTHER_V = parse_verifier_key(verifier_key("someone.else/log", OTHER.public_key()))
CHECKPOINT_TEXT = format_checkpoint(ORIGIN, 42, ROOT)
NOTE = sign_note(CHECKPOINT_TEXT, ORIGIN, OLD)


def kind_of(call: object) -> str:
    with pytest.raises(NoteError) as raised:
        call()  # type: ignore[operator]
    assert raised.value.code == "note_invalid"
    assert raised.value.kind in str(raised.value)
    return raised.value.kind


# -- the reference implementation's example ------------------------------------------------------------------------


def test_keys_and_signatures_match_the_reference_implementation_byte_for_byte() -> None:
    signer = parse_signer_key(GO_SKEY)
    assert (signer.name, signer.key_hash.hex()) == ("PeterNeumann", "c74f20a3")
    assert signer_key(signer.name, signer.private_key) == GO_SKEY
    assert verifier_key(signer.name, signer.private_key.public_key()) == GO_VKEY
    assert str(signer.verifier()) == GO_VKEY == str(parse_verifier_key(GO_VKEY))
    # Ed25519 is deterministic (RFC 8032), so the same key and text give the very same note.
    assert sign_note(GO_TEXT, "PeterNeumann", signer.private_key) == GO_NOTE
    assert open_note(GO_NOTE, [parse_verifier_key(GO_VKEY)]) == (GO_TEXT, ("PeterNeumann",))
    assert open_note(GO_NOTE.encode(), [signer.verifier()]) == (GO_TEXT, ("PeterNeumann",))


def test_the_key_id_is_the_first_four_bytes_of_sha256_of_name_newline_type_and_key() -> None:
    public = OLD.public_key().public_bytes_raw()
    assert key_hash(ORIGIN, public) == hashlib.sha256(ORIGIN.encode() + b"\n\x01" + public).digest()[:4]
    assert key_hash(ORIGIN, OLD.public_key()) == OLD_V.key_hash


# -- checkpoints -------------------------------------------------------------------------------------------------------


def test_a_checkpoint_is_origin_size_and_base64_root_one_per_line() -> None:
    assert f"{ORIGIN}\n42\n{base64.b64encode(ROOT).decode()}\n" == CHECKPOINT_TEXT
    assert parse_checkpoint(CHECKPOINT_TEXT) == Checkpoint(ORIGIN, 42, ROOT)
    with_extensions = format_checkpoint(ORIGIN, 0, ROOT, ["ext one", "two"])
    assert parse_checkpoint(with_extensions) == Checkpoint(ORIGIN, 0, ROOT, ("ext one", "two"))


def test_a_signed_checkpoint_opens_to_its_checkpoint() -> None:
    note = sign_checkpoint(Checkpoint(ORIGIN, 42, ROOT), ORIGIN, OLD)
    assert note == NOTE
    assert open_checkpoint(note, [OLD_V], origin=ORIGIN) == Checkpoint(ORIGIN, 42, ROOT)
    assert read_checkpoint_unverified(note).size == 42


def test_a_checkpoint_of_another_log_is_refused_when_the_origin_is_given() -> None:
    note = sign_checkpoint(Checkpoint("other.example/log", 42, ROOT), ORIGIN, OLD)
    assert open_checkpoint(note, [OLD_V]).origin == "other.example/log"
    assert kind_of(lambda: open_checkpoint(note, [OLD_V], origin=ORIGIN)) == "origin_mismatch"
    # The signature comes first: an unsigned text is never read, not even for its origin.
    assert kind_of(lambda: open_checkpoint(note, [NEW_V], origin=ORIGIN)) == "no_known_signature"


B64_ROOT = base64.b64encode(ROOT).decode()
URL_SAFE = base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode()


@pytest.mark.parametrize(
    "text",
    [
        f"{ORIGIN}\n042\n{B64_ROOT}\n",
        f"{ORIGIN}\n+42\n{B64_ROOT}\n",
        f"{ORIGIN}\n 42\n{B64_ROOT}\n",
        f"{ORIGIN}\n４２\n{B64_ROOT}\n",
        f"{ORIGIN}\n-1\n{B64_ROOT}\n",
        f"{ORIGIN}\n18446744073709551616\n{B64_ROOT}\n",
        f"{ORIGIN}\n\n{B64_ROOT}\n",
        f"{ORIGIN}\n42\n{base64.b64encode(ROOT[:31]).decode()}\n",
        f"{ORIGIN}\n42\n{B64_ROOT.rstrip('=')}\n",
        f"{ORIGIN}\n42\n{B64_ROOT[:-2]}B=\n",  # the same bytes with non-zero padding bits
        f"{ORIGIN}\n42\n{URL_SAFE}\n",
        f"{ORIGIN}\n42\n{B64_ROOT}",
        f"{ORIGIN}\n42\n{B64_ROOT}\n\n",
        f"{ORIGIN}\n42\n{B64_ROOT}\next\n\n",
        f"\n42\n{B64_ROOT}\n",
        f"{ORIGIN}\n42\n",
        f"{ORIGIN}\r\n42\n{B64_ROOT}\n",
        "",
    ],
    ids=[
        "leading zero",
        "plus sign",
        "space",
        "fullwidth digits",
        "negative",
        "2^64",
        "empty size",
        "31-byte root",
        "unpadded root",
        "non-canonical base64",
        "url-safe base64",
        "no final newline",
        "blank line at the end",
        "empty extension line",
        "empty origin",
        "no root line",
        "CRLF",
        "empty",
    ],
)
def test_checkpoint_texts_are_parsed_strictly(text: str) -> None:
    assert kind_of(lambda: parse_checkpoint(text)) == "checkpoint_malformed"


def test_the_largest_tree_size_is_two_to_the_64_minus_one() -> None:
    assert parse_checkpoint(format_checkpoint(ORIGIN, 2**64 - 1, ROOT)).size == 2**64 - 1


@pytest.mark.parametrize(
    ("origin", "size", "root", "extensions"),
    [
        ("", 1, ROOT, ()),
        ("a\nb", 1, ROOT, ()),
        (ORIGIN, -1, ROOT, ()),
        (ORIGIN, True, ROOT, ()),
        (ORIGIN, 2**64, ROOT, ()),
        (ORIGIN, 1, ROOT[:31], ()),
        (ORIGIN, 1, ROOT, ("",)),
        (ORIGIN, 1, ROOT, ("a\nb",)),
        (ORIGIN, 1, ROOT, ("tab\there",)),
    ],
)
def test_a_checkpoint_that_could_not_be_parsed_back_is_not_formatted(
    origin: str, size: int, root: bytes, extensions: tuple[str, ...]
) -> None:
    assert kind_of(lambda: format_checkpoint(origin, size, root, extensions)) == "checkpoint_malformed"


# -- key sets and rotation ------------------------------------------------------------------------------------------


def test_a_note_signed_during_a_rotation_opens_with_either_key() -> None:
    both = add_signature(NOTE, ORIGIN, NEW)
    assert open_note(both, [NEW_V]) == (CHECKPOINT_TEXT, (ORIGIN,))
    assert open_note(both, [OLD_V]) == (CHECKPOINT_TEXT, (ORIGIN,))
    assert open_note(both, [OLD_V, NEW_V]) == (CHECKPOINT_TEXT, (ORIGIN,))
    cosigned = add_signature(NOTE, "someone.else/log", OTHER)
    assert open_note(cosigned, [OLD_V, OTHER_V]) == (CHECKPOINT_TEXT, (ORIGIN, "someone.else/log"))


def test_signatures_by_unknown_keys_are_ignored() -> None:
    cosigned = add_signature(NOTE, "someone.else/log", OTHER)
    assert open_note(cosigned, [OLD_V]) == (CHECKPOINT_TEXT, (ORIGIN,))
    # Same name as a known key but another key ID, and a known key ID under another name: both unknown keys.
    bogus = base64.b64encode(OLD_V.key_hash + b"\x00" * 64).decode()
    ignored = NOTE + f"— {ORIGIN}x {bogus}\n"
    assert open_note(ignored, [OLD_V]) == (CHECKPOINT_TEXT, (ORIGIN,))
    same_name = sign_note(CHECKPOINT_TEXT, ORIGIN, OTHER)
    assert kind_of(lambda: open_note(same_name, [OLD_V])) == "no_known_signature"


def test_a_note_no_known_key_signed_is_refused() -> None:
    assert kind_of(lambda: open_note(NOTE, [NEW_V])) == "no_known_signature"
    assert kind_of(lambda: open_note(NOTE, [])) == "no_known_signature"


def test_a_bad_signature_by_a_known_key_rejects_the_whole_note() -> None:
    text, line = NOTE.split("\n\n")
    encoded = line.split(" ")[2].strip()
    data = bytearray(base64.b64decode(encoded))
    data[10] ^= 1
    forged = f"{text}\n\n— {ORIGIN} {base64.b64encode(bytes(data)).decode()}\n"
    assert kind_of(lambda: open_note(forged, [OLD_V])) == "bad_signature"
    # Even beside a good signature by another known key.
    assert kind_of(lambda: open_note(add_signature(forged, ORIGIN, NEW), [OLD_V, NEW_V])) == "bad_signature"
    short = f"{text}\n\n— {ORIGIN} {base64.b64encode(bytes(data[:-1])).decode()}\n"
    assert kind_of(lambda: open_note(short, [OLD_V])) == "bad_signature"


def test_a_changed_text_does_not_verify() -> None:
    changed = NOTE.replace("\n42\n", "\n43\n")
    assert kind_of(lambda: open_note(changed, [OLD_V])) == "bad_signature"


def test_a_key_set_with_two_keys_under_one_name_and_id_is_refused() -> None:
    twin = Verifier(OLD_V.name, OLD_V.key_hash, NEW_V.public_key)
    assert kind_of(lambda: open_note(NOTE, [OLD_V, twin])) == "bad_key"
    assert open_note(NOTE, [OLD_V, OLD_V]) == (CHECKPOINT_TEXT, (ORIGIN,))
    assert kind_of(lambda: open_note(NOTE, [str(OLD_V)])) == "bad_key"  # type: ignore[list-item]


def test_at_least_sixteen_signatures_are_accepted_and_at_most_a_hundred() -> None:
    many = NOTE
    for number in range(15):
        many = add_signature(many, f"witness{number}.example", key(f"w{number}"))
    assert open_note(many, [OLD_V])[1] == (ORIGIN,)
    line = NOTE.split("\n\n")[1]
    assert open_note(CHECKPOINT_TEXT + "\n" + line * MAX_SIGNATURES, [OLD_V])[1] == (ORIGIN,)
    too_many = CHECKPOINT_TEXT + "\n" + line * (MAX_SIGNATURES + 1)
    assert kind_of(lambda: open_note(too_many, [OLD_V])) == "too_many_signatures"


# -- malformed notes ------------------------------------------------------------------------------------------------

SIGNATURE_LINE = NOTE.split("\n\n")[1]


@pytest.mark.parametrize(
    ("note", "kind"),
    [
        (NOTE + "garbage", "trailing_garbage"),
        (NOTE + "garbage\n", "trailing_garbage"),
        (NOTE[:-1], "trailing_garbage"),
        (NOTE + "\n", "malformed"),
        (NOTE.replace("\n\n", "\n"), "malformed"),
        (CHECKPOINT_TEXT, "malformed"),
        (NOTE.replace("\n", "\r\n"), "malformed"),
        (NOTE.replace("42", "4\x002"), "malformed"),
        (NOTE.replace("42", "4\t2"), "malformed"),
        (NOTE.replace("—", "-"), "bad_signature_line"),
        (NOTE.replace("— ", "—  "), "bad_signature_line"),
        (NOTE.replace(f"— {ORIGIN} ", f"— {ORIGIN}\u00a0"), "bad_signature_line"),
        (NOTE.replace(f"— {ORIGIN}", "— a+b"), "bad_signature_line"),
        (NOTE.replace(f"— {ORIGIN}", "—"), "bad_signature_line"),
        (CHECKPOINT_TEXT + "\n— name AAAA\n", "bad_signature_line"),
        (CHECKPOINT_TEXT + "\n— name AAAAAA==\n", "bad_signature_line"),
        (CHECKPOINT_TEXT + "\n— name AAAAAAA\n", "bad_signature_line"),
        (CHECKPOINT_TEXT + "\ngarbage\n" + SIGNATURE_LINE, "bad_signature_line"),
        (NOTE + SIGNATURE_LINE.replace("—", "--"), "trailing_garbage"),
        (b"\xff" + NOTE.encode(), "malformed"),
        ("\ud800" + NOTE, "malformed"),
        (42, "malformed"),
    ],
    ids=[
        "garbage after the note",
        "a garbage line after the signatures",
        "no final newline",
        "blank line at the end",
        "no blank line",
        "no signatures",
        "CRLF",
        "NUL",
        "tab",
        "hyphen for em dash",
        "two spaces",
        "no-break space after the name",
        "plus in the name",
        "no name",
        "signature too short",
        "a key ID and no signature",
        "unpadded base64",
        "garbage line before the signatures",
        "a broken signature line after a good one",
        "not UTF-8",
        "lone surrogate",
        "not text",
    ],
)
def test_malformed_notes_are_refused_with_a_kind(note: str | bytes, kind: str) -> None:
    assert kind_of(lambda: open_note(note, [OLD_V])) == kind


def test_a_five_byte_signature_by_an_unknown_key_is_well_formed() -> None:
    # Four bytes of key ID and one of signature is the shortest well-formed signature (unknown key: ignored).
    note = NOTE + f"— unknown.example {base64.b64encode(b'12345').decode()}\n"
    assert open_note(note, [OLD_V])[1] == (ORIGIN,)


def test_a_note_text_may_hold_blank_lines_before_the_last_one() -> None:
    text = "first paragraph\n\nsecond paragraph\n"
    note = sign_note(text, ORIGIN, OLD)
    assert open_note(note, [OLD_V]) == (text, (ORIGIN,))


@pytest.mark.parametrize("text", ["no newline", "", "a\x01b\n", "\ud800\n", b"bytes\n"])
def test_texts_that_cannot_be_signed_are_refused(text: str) -> None:
    assert kind_of(lambda: sign_note(text, ORIGIN, OLD)) == "bad_text"


@pytest.mark.parametrize("name", ["", "a b", "a+b", "tab\there", "nbsp\u00a0", "line\u2028sep"])
def test_key_names_without_spaces_or_plus_signs(name: str) -> None:
    assert kind_of(lambda: sign_note(CHECKPOINT_TEXT, name, OLD)) == "bad_key"
    assert kind_of(lambda: verifier_key(name, OLD.public_key())) == "bad_key"


# -- key strings ----------------------------------------------------------------------------------------------------


def b64_key(data: bytes) -> str:
    return base64.b64encode(data).decode()


PUBLIC = OLD.public_key().public_bytes_raw()
HASH = key_hash(ORIGIN, PUBLIC).hex()
KEY = b64_key(b"\x01" + PUBLIC)
OTHER_ALGORITHM = b64_key(b"\x02" + PUBLIC)
SHORT_KEY = b64_key(b"\x01" + PUBLIC[:31])


@pytest.mark.parametrize(
    "text",
    [
        f"{ORIGIN}+{HASH}",
        f"{ORIGIN}+{HASH}+{KEY}=",
        f"{ORIGIN}+{HASH.upper()}+{KEY}",
        f"{ORIGIN}+{HASH[:-1]}+{KEY}",
        f"{ORIGIN}+00000000+{KEY}",
        f"{ORIGIN}x+{HASH}+{KEY}",
        f"{ORIGIN}+{HASH}+{OTHER_ALGORITHM}",
        f"{ORIGIN}+{HASH}+{SHORT_KEY}",
        f"{ORIGIN}+{HASH}+{KEY}+more",
        f"a b+{HASH}+{KEY}",
        f"+{HASH}+{KEY}",
        "",
    ],
    ids=[
        "no key",
        "trailing padding",
        "uppercase hex",
        "short hash",
        "wrong hash",
        "other name",
        "other algorithm",
        "short key",
        "extra part",
        "space in the name",
        "empty name",
        "empty",
    ],
)
def test_verifier_keys_are_parsed_strictly(text: str) -> None:
    assert kind_of(lambda: parse_verifier_key(text)) == "bad_key"


@pytest.mark.parametrize(
    "text",
    [
        GO_SKEY.replace("PRIVATE+KEY", "PUBLIC+KEY"),
        GO_SKEY.replace("c74f20a3", "c74f20a4"),
        GO_SKEY[:-4],
        GO_SKEY.replace("+AYEK", "+AoEK"),
        GO_VKEY,
    ],
    ids=["not private", "wrong hash", "truncated", "other algorithm", "a verifier key"],
)
def test_signer_keys_are_parsed_strictly(text: str) -> None:
    assert kind_of(lambda: parse_signer_key(text)) == "bad_key"


def test_public_keys_must_be_32_bytes() -> None:
    assert kind_of(lambda: key_hash(ORIGIN, b"\x00" * 31)) == "bad_key"
    assert kind_of(lambda: verifier_key(ORIGIN, "not a key")) == "bad_key"  # type: ignore[arg-type]
