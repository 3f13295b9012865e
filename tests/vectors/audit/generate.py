"""Write the audit test vectors in this folder: `python -m tests.vectors.audit.generate`.

In the manner of transparency-dev/merkle's testdata (and its cmd/proofgen): valid trees and proofs for many
sizes, and systematically tampered copies, each naming the failure a verifier must report. Deterministic, so
that the committed files are exactly what this script writes (tests/unit/test_audit_vectors.py checks).

Made without the code under test: trees and proofs come from tests/oracle/rfc9162.py (RFC 9162 §2.1 as the RFC
states it), notes are put together here by hand from the C2SP signed-note text, with `cryptography`'s Ed25519
only. The expected kind of each tampered case follows from what was changed; a changed proof that the oracle
would still accept is an error in this script, and is refused here.

- tree.json — leaf inputs, and the RFC 9162 root of the first n of them for every n.
- inclusion.json, consistency.json — proofs for every size up to 16, several positions of every size up to 64
  and a few large irregular ones.
- inclusion_tampered.json, consistency_tampered.json — each element with a bit flipped, wrong index, size or
  roots, elements missing, extra or of the wrong length: with the ProofError kind expected.
- notes.json — signed checkpoints and what opening them against a key set must give: the text and signer names,
  or the NoteError kind (bad signature, unknown or wrong key, key rotation, trailing garbage, wrong origin, …).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.oracle import rfc9162 as oracle

HERE = Path(__file__).resolve().parent
LEAF_COUNT = 1030
LARGE_SIZES = (127, 128, 129, 255, 256, 257, 511, 513, 1000, 1023, 1024, 1025, 1030)
TAMPER_SIZES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 257, 1025)
Case = dict[str, Any]


def leaf_inputs() -> list[bytes]:
    # Lengths 0 to 32, the empty entry included.
    return [hashlib.sha256(f"leaf {i}".encode()).digest()[: i % 33] for i in range(LEAF_COUNT)]


LEAVES = leaf_inputs()


def leaf_hash(index: int) -> bytes:
    return hashlib.sha256(b"\x00" + LEAVES[index]).digest()


def hexes(hashes: list[bytes]) -> list[str]:
    return [h.hex() for h in hashes]


def document(description: str, cases: list[Case], **members: Any) -> str:
    """One case per line: readable, and a change shows as a change of the lines concerned."""
    head = json.dumps({"description": description, **members}, ensure_ascii=False, indent=1)[:-2]
    body = ",\n".join("  " + json.dumps(case, ensure_ascii=False) for case in cases)
    return f'{head},\n "cases": [\n{body}\n ]\n}}\n'


# -- trees and proofs ------------------------------------------------------------------------------------------------


def roots() -> list[bytes]:
    return [oracle.mth(LEAVES[:n]) for n in range(LEAF_COUNT + 1)]


ROOTS = roots()


def tree_json() -> str:
    cases = [{"tree_size": n, "root": ROOTS[n].hex()} for n in range(LEAF_COUNT + 1)]
    return document(
        "RFC 9162 §2.1.1 Merkle Tree Hash of the first tree_size leaf inputs (hex); leaf i is SHA-256(ASCII "
        '"leaf i") truncated to i mod 33 bytes',
        cases,
        leaf_inputs=[leaf.hex() for leaf in LEAVES],
    )


def positions(size: int) -> list[int]:
    if size <= 16:
        return list(range(size))
    return sorted({0, 1, size // 3, size // 2, size - 2, size - 1})


def inclusion_cases() -> Iterator[tuple[int, int]]:
    for size in [*range(1, 65), *LARGE_SIZES]:
        for index in positions(size):
            yield index, size


def consistency_cases() -> Iterator[tuple[int, int]]:
    for second in [*range(1, 65), *LARGE_SIZES]:
        if second <= 16:
            firsts = list(range(1, second + 1))
        else:
            power = 1 << (second - 1).bit_length() - 1
            firsts = sorted({1, 2, power, second // 2, second - 1, second})
        for first in firsts:
            yield first, second


def inclusion_json() -> str:
    cases = [
        {
            "leaf_index": index,
            "tree_size": size,
            "leaf_hash": leaf_hash(index).hex(),
            "root": ROOTS[size].hex(),
            "proof": hexes(oracle.path(index, LEAVES[:size])),
        }
        for index, size in inclusion_cases()
    ]
    return document("RFC 9162 §2.1.3.1 inclusion proofs PATH(leaf_index, D[tree_size]) over tree.json", cases)


def consistency_json() -> str:
    cases = [
        {
            "first": first,
            "second": second,
            "first_root": ROOTS[first].hex(),
            "second_root": ROOTS[second].hex(),
            "proof": hexes(oracle.proof(first, LEAVES[:second])),
        }
        for first, second in consistency_cases()
    ]
    # Sizes RFC 9162 §2.1.4's algorithm leaves out, settled by its definitions: an empty first tree (root
    # HASH() of §2.1.1) is a prefix of every tree, with nothing to prove.
    cases += [
        {"first": 0, "second": n, "first_root": ROOTS[0].hex(), "second_root": ROOTS[n].hex(), "proof": []}
        for n in (0, 1, 7)
    ]
    return document("RFC 9162 §2.1.4.1 consistency proofs PROOF(first, D[second]) over tree.json", cases)


def flip(data: bytes, bit: int) -> bytes:
    changed = bytearray(data)
    changed[(bit // 8) % len(changed)] ^= 1 << (bit % 8)
    return bytes(changed)


def inclusion_tampered_json() -> str:
    cases: list[Case] = []

    def add(description: str, index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes, kind: str) -> None:
        if kind in ("root_mismatch", "proof_size") and 0 <= index < size:
            # The oracle must refuse it too, or the case is no tampering at all.
            assert oracle.root_from_path(leaf, index, size, proof) != root, description
        cases.append(
            {
                "description": description,
                "leaf_index": index,
                "tree_size": size,
                "leaf_hash": leaf.hex(),
                "root": root.hex(),
                "proof": hexes(proof),
                "kind": kind,
            }
        )

    def fits(index: int, size: int, length: int) -> str:
        """The kind a proof of `length` elements earns for (index, size): wrong length, else wrong root."""
        return "root_mismatch" if len(oracle.path(index, LEAVES[:size])) == length else "proof_size"

    for size in TAMPER_SIZES:
        for index in sorted({0, size // 2, size - 1}):
            proof = oracle.path(index, LEAVES[:size])
            leaf, root = leaf_hash(index), ROOTS[size]
            where = f"leaf {index} of {size}"
            for position, element in enumerate(proof):
                bit = (37 * position + size) % 256
                changed = [*proof[:position], flip(element, bit), *proof[position + 1 :]]
                add(
                    f"{where}: bit {bit} of element {position} flipped",
                    index,
                    size,
                    leaf,
                    changed,
                    root,
                    "root_mismatch",
                )
            add(f"{where}: another leaf", index, size, flip(leaf, 3), proof, root, "root_mismatch")
            add(f"{where}: another root", index, size, leaf, proof, ROOTS[size - 1], "root_mismatch")
            for other in (index - 1, index + 1):
                if 0 <= other < size:
                    add(f"{where}: index {other}", other, size, leaf, proof, root, fits(other, size, len(proof)))
            for other in (size - 1, size + 1, size * 2):
                if index < other <= LEAF_COUNT:
                    add(
                        f"{where}: size {other}",
                        index,
                        other,
                        leaf,
                        proof,
                        ROOTS[other],
                        fits(index, other, len(proof)),
                    )
            add(f"{where}: index = size", size, size, leaf, proof, root, "index_out_of_range")
            if proof:
                add(f"{where}: last element missing", index, size, leaf, proof[:-1], root, "proof_size")
                add(f"{where}: first element missing", index, size, leaf, proof[1:], root, "proof_size")
                add(
                    f"{where}: element 0 of 31 bytes",
                    index,
                    size,
                    leaf,
                    [proof[0][:31], *proof[1:]],
                    root,
                    "bad_hash_length",
                )
                add(
                    f"{where}: element 0 of 33 bytes",
                    index,
                    size,
                    leaf,
                    [proof[0] + b"\x00", *proof[1:]],
                    root,
                    "bad_hash_length",
                )
            add(f"{where}: an element appended", index, size, leaf, [*proof, leaf], root, "proof_size")
            add(f"{where}: an element prepended", index, size, leaf, [root, *proof], root, "proof_size")
    return document("Inclusion proofs from inclusion.json, tampered; `kind` is the ProofError kind expected", cases)


def consistency_tampered_json() -> str:
    cases: list[Case] = []

    def add(
        description: str, first: int, second: int, roots: tuple[bytes, bytes], proof: list[bytes], kind: str
    ) -> None:
        if kind in ("root_mismatch", "proof_size") and 0 < first <= second:
            assert oracle.roots_from_proof(first, second, roots[0], proof) != roots, description
        cases.append(
            {
                "description": description,
                "first": first,
                "second": second,
                "first_root": roots[0].hex(),
                "second_root": roots[1].hex(),
                "proof": hexes(proof),
                "kind": kind,
            }
        )

    def fits(first: int, second: int, length: int) -> str:
        expected = len(oracle.proof(first, LEAVES[:second])) if first > 0 else 0
        return "root_mismatch" if expected == length else "proof_size"

    for second in TAMPER_SIZES:
        for first in sorted({1, second // 2, second - 1, second} - {0}):
            proof = oracle.proof(first, LEAVES[:second])
            roots = (ROOTS[first], ROOTS[second])
            where = f"{first} to {second}"
            for position, element in enumerate(proof):
                bit = (41 * position + second) % 256
                changed = [*proof[:position], flip(element, bit), *proof[position + 1 :]]
                add(f"{where}: bit {bit} of element {position} flipped", first, second, roots, changed, "root_mismatch")
            if first < second:
                add(f"{where}: roots swapped", first, second, (roots[1], roots[0]), proof, "root_mismatch")
                add(
                    f"{where}: another first root", first, second, (flip(roots[0], 1), roots[1]), proof, "root_mismatch"
                )
                add(
                    f"{where}: another second root",
                    first,
                    second,
                    (roots[0], flip(roots[1], 1)),
                    proof,
                    "root_mismatch",
                )
                add(f"{where}: empty proof", first, second, roots, [], "proof_size")
                add(f"{where}: last element missing", first, second, roots, proof[:-1], "proof_size")
                add(
                    f"{where}: element 0 of 31 bytes",
                    first,
                    second,
                    roots,
                    [proof[0][:31], *proof[1:]],
                    "bad_hash_length",
                )
            else:
                add(
                    f"{where}: equal sizes, different roots",
                    first,
                    second,
                    (roots[0], ROOTS[second - 1]),
                    proof,
                    "root_mismatch",
                )
            add(f"{where}: an element appended", first, second, roots, [*proof, roots[0]], "proof_size")
            add(f"{where}: sizes swapped", second + 1, second, roots, proof, "first_after_second")
            for other in (first - 1, first + 1):
                # From the empty tree an empty proof is right: no tampering there.
                if 0 <= other <= second and (other or proof):
                    add(
                        f"{where}: first {other}",
                        other,
                        second,
                        (ROOTS[other], roots[1]),
                        proof,
                        fits(other, second, len(proof)),
                    )
            for other in (second - 1, second + 1):
                if first <= other <= LEAF_COUNT:
                    add(
                        f"{where}: second {other}",
                        first,
                        other,
                        (roots[0], ROOTS[other]),
                        proof,
                        fits(first, other, len(proof)),
                    )
    return document("Consistency proofs from consistency.json, tampered; `kind` is the ProofError kind expected", cases)


# -- notes ---------------------------------------------------------------------------------------------------------

ORIGIN = "vectors.example/audit"
EM_DASH = "\u2014"


class Key:
    """An Ed25519 note key, put together from C2SP signed-note's definitions."""

    def __init__(self, name: str, label: str) -> None:
        self.name = name
        self.private = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(label.encode()).digest())
        self.public = self.private.public_key().public_bytes_raw()
        self.id = hashlib.sha256(name.encode() + b"\n\x01" + self.public).digest()[:4]

    @property
    def verifier(self) -> str:
        encoded = base64.b64encode(bytes([1]) + self.public).decode()
        return f"{self.name}+{self.id.hex()}+{encoded}"

    def line(self, text: str) -> str:
        signature = self.private.sign(text.encode())
        return f"{EM_DASH} {self.name} {base64.b64encode(self.id + signature).decode()}\n"


OLD = Key(ORIGIN, "vectors: old log key")
NEW = Key(ORIGIN, "vectors: new log key")
WITNESS = Key("witness.example/w1", "vectors: witness key")
IMPOSTOR = Key(ORIGIN, "vectors: impostor key")  # the log's name, another key


def checkpoint_text(size: int, origin: str = ORIGIN) -> str:
    return f"{origin}\n{size}\n{base64.b64encode(ROOTS[size]).decode()}\n"


def notes_json() -> str:
    text = checkpoint_text(1000)
    signed = text + "\n" + OLD.line(text)
    rotated = signed + NEW.line(text)
    cases: list[Case] = []

    def ok(description: str, note: str, keys: list[Key], signers: list[str], origin: str | None = ORIGIN) -> None:
        body = note[: note.rfind("\n\n") + 1]
        cases.append(
            {
                "description": description,
                "note": note,
                "verifiers": [key.verifier for key in keys],
                "origin": origin,
                "text": body,
                "signers": signers,
                "checkpoint": {
                    "origin": body.split("\n")[0],
                    "size": int(body.split("\n")[1]),
                    "root": base64.b64decode(body.split("\n")[2]).hex(),
                },
            }
        )

    def refused(description: str, note: str, keys: list[Key], kind: str, origin: str | None = ORIGIN) -> None:
        cases.append(
            {
                "description": description,
                "note": note,
                "verifiers": [key.verifier for key in keys],
                "origin": origin,
                "kind": kind,
            }
        )

    ok("signed by the log key", signed, [OLD], [ORIGIN])
    ok("signed during a rotation, old key known", rotated, [OLD], [ORIGIN])
    ok("signed during a rotation, new key known", rotated, [NEW], [ORIGIN])
    ok("signed during a rotation, both known", rotated, [NEW, OLD], [ORIGIN])
    ok("cosigned by a witness nobody asked about", signed + WITNESS.line(text), [OLD], [ORIGIN])
    ok("cosigned by a known witness", signed + WITNESS.line(text), [OLD, WITNESS], [ORIGIN, WITNESS.name])
    ok("with an extension line", (ext := checkpoint_text(5) + "ext\n") + "\n" + OLD.line(ext), [OLD], [ORIGIN])
    ok(
        "another log's checkpoint, no origin expected",
        (o := checkpoint_text(5, "other.example/log")) + "\n" + OLD.line(o),
        [OLD],
        [ORIGIN],
        origin=None,
    )
    refused("no known key: signed by the old key only, new key known", signed, [NEW], "no_known_signature")
    refused("the wrong key under the log's name", text + "\n" + IMPOSTOR.line(text), [OLD], "no_known_signature")
    # A verifier with the log's name and key ID but another public key: the key-ID collision an attacker can
    # compute (C2SP signed-note, "Signatures"), which earns only a failed signature. Its key string would name
    # the ID of its own key, so the case gives the verifier as (name, key ID, public key) parts.
    twin = Key(ORIGIN, "vectors: colliding key")
    cases.append(
        {
            "description": "the log's name and key ID, another public key",
            "note": text + "\n" + OLD.line(text),
            "verifiers": [],
            "verifier_parts": [[ORIGIN, OLD.id.hex(), twin.public.hex()]],
            "origin": ORIGIN,
            "kind": "bad_signature",
        }
    )
    refused("no verifiers", signed, [], "no_known_signature")
    for position in (0, 20, 40, 67):
        line = OLD.line(text)
        encoded = line.split(" ")[2].strip()
        data = base64.b64decode(encoded)
        byte = 4 + position % 64
        forged = base64.b64encode(data[:byte] + bytes([data[byte] ^ 0x10]) + data[byte + 1 :]).decode()
        refused(f"signature byte {byte} changed", text + "\n" + line.replace(encoded, forged), [OLD], "bad_signature")
    refused("size changed after signing", signed.replace("\n1000\n", "\n1001\n"), [OLD], "bad_signature")
    refused(
        "root changed after signing",
        signed.replace(base64.b64encode(ROOTS[1000]).decode(), base64.b64encode(ROOTS[999]).decode()),
        [OLD],
        "bad_signature",
    )
    refused(
        "a good and a bad known signature",
        rotated.replace(NEW.line(text), NEW.line(text + "x")),
        [OLD, NEW],
        "bad_signature",
    )
    refused("garbage after the note", signed + "garbage", [OLD], "trailing_garbage")
    refused("a garbage line after the signatures", signed + "garbage\n", [OLD], "trailing_garbage")
    refused("no final newline", signed[:-1], [OLD], "trailing_garbage")
    refused("a blank line after the signatures", signed + "\n", [OLD], "malformed")
    refused("no blank line before the signatures", text + OLD.line(text), [OLD], "malformed")
    refused("the text alone", text, [OLD], "malformed")
    refused("CRLF line ends", signed.replace("\n", "\r\n"), [OLD], "malformed")
    refused("a hyphen for the em dash", signed.replace(EM_DASH, "-"), [OLD], "bad_signature_line")
    refused("signature not in base64", text + f"\n{EM_DASH} {ORIGIN} !!!!\n", [OLD], "bad_signature_line")
    refused("101 signatures", text + "\n" + OLD.line(text) * 101, [OLD], "too_many_signatures")
    refused(
        "another log's checkpoint",
        (o := checkpoint_text(5, "other.example/log")) + "\n" + OLD.line(o),
        [OLD],
        "origin_mismatch",
    )
    root = base64.b64encode(ROOTS[1000]).decode()
    for description, bad in [
        ("size with a leading zero", f"{ORIGIN}\n01000\n{root}\n"),
        ("a 31-byte root", f"{ORIGIN}\n1000\n{base64.b64encode(ROOTS[1000][:31]).decode()}\n"),
        ("no root line", f"{ORIGIN}\n1000\n"),
        # The note's last blank line is still the separator; the one inside the text is an empty extension line.
        ("an empty extension line", f"{ORIGIN}\n1000\n{root}\n\nx\n"),
    ]:
        refused(f"signed, but {description}", bad + "\n" + OLD.line(bad), [OLD], "checkpoint_malformed")
    return document(
        "C2SP signed-note checkpoints opened against a verifier key set (open_checkpoint with the origin, when "
        "given): the text, signer names and checkpoint expected, or the NoteError kind",
        cases,
        keys={key.verifier: key.name for key in (OLD, NEW, WITNESS, IMPOSTOR)},
    )


FILES: dict[str, Callable[[], str]] = {
    "tree.json": tree_json,
    "inclusion.json": inclusion_json,
    "consistency.json": consistency_json,
    "inclusion_tampered.json": inclusion_tampered_json,
    "consistency_tampered.json": consistency_tampered_json,
    "notes.json": notes_json,
}


def build() -> dict[str, str]:
    return {name: make() for name, make in FILES.items()}


def main() -> None:
    for name, text in build().items():
        (HERE / name).write_text(text, encoding="utf-8")
        print(f"wrote {name}")


if __name__ == "__main__":
    main()
