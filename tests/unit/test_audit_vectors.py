"""The audit package against the vector files in tests/vectors/audit/ (written by its generate.py from the
RFC 9162 oracle and the C2SP texts, without the code under test): every valid tree, proof and note is made and
accepted, every tampered one is refused with the kind the file names."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from audit import (
    Frontier,
    NoteError,
    ProofError,
    Verifier,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    open_checkpoint,
    open_note,
    parse_verifier_key,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from tests.vectors.audit import generate

VECTORS = Path(generate.__file__).resolve().parent


@cache
def load(name: str) -> dict[str, Any]:
    return dict(json.loads((VECTORS / name).read_text("utf-8")))


def cases(name: str) -> list[Any]:
    return [
        pytest.param(case, id=case.get("description", str(number))) for number, case in enumerate(load(name)["cases"])
    ]


def hashes(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(value) for value in values]


@cache
def store() -> dict[tuple[int, int], bytes]:
    frontier = Frontier.empty()
    nodes: dict[tuple[int, int], bytes] = {}
    for index, data in enumerate(load("tree.json")["leaf_inputs"]):
        leaf = leaf_hash(bytes.fromhex(data))
        nodes[(0, index)] = leaf
        for level, idx, node in frontier.append_collect(leaf):
            nodes[(level, idx)] = node
    return nodes


def test_the_committed_vectors_are_what_the_generator_writes() -> None:
    for name, text in generate.build().items():
        assert (VECTORS / name).read_text("utf-8") == text, f"{name}: run python -m tests.vectors.audit.generate"


def test_the_tree_has_the_root_given_at_every_size() -> None:
    leaves = [leaf_hash(bytes.fromhex(data)) for data in load("tree.json")["leaf_inputs"]]
    expected = {case["tree_size"]: bytes.fromhex(case["root"]) for case in load("tree.json")["cases"]}
    frontier = Frontier.empty()
    assert frontier.root() == expected[0]
    for leaf in leaves:
        frontier.append(leaf)
        assert frontier.root() == expected[frontier.size], frontier.size
    for size in (1, 2, 3, 100, 513, len(leaves)):
        assert root_hash(leaves[:size]) == expected[size]


@pytest.mark.parametrize("case", cases("inclusion.json"))
def test_inclusion_vectors_are_made_and_verified(case: dict[str, Any]) -> None:
    index, size, proof = case["leaf_index"], case["tree_size"], hashes(case["proof"])
    assert inclusion_proof(index, size, store()) == proof
    assert store()[(0, index)].hex() == case["leaf_hash"]
    verify_inclusion(bytes.fromhex(case["leaf_hash"]), index, size, proof, bytes.fromhex(case["root"]))


@pytest.mark.parametrize("case", cases("consistency.json"))
def test_consistency_vectors_are_made_and_verified(case: dict[str, Any]) -> None:
    first, second, proof = case["first"], case["second"], hashes(case["proof"])
    assert consistency_proof(first, second, store()) == proof
    verify_consistency(first, second, bytes.fromhex(case["first_root"]), bytes.fromhex(case["second_root"]), proof)


@pytest.mark.parametrize("case", cases("inclusion_tampered.json"))
def test_tampered_inclusion_vectors_are_refused_with_their_kind(case: dict[str, Any]) -> None:
    with pytest.raises(ProofError) as raised:
        verify_inclusion(
            bytes.fromhex(case["leaf_hash"]),
            case["leaf_index"],
            case["tree_size"],
            hashes(case["proof"]),
            bytes.fromhex(case["root"]),
        )
    assert raised.value.kind == case["kind"]


@pytest.mark.parametrize("case", cases("consistency_tampered.json"))
def test_tampered_consistency_vectors_are_refused_with_their_kind(case: dict[str, Any]) -> None:
    with pytest.raises(ProofError) as raised:
        verify_consistency(
            case["first"],
            case["second"],
            bytes.fromhex(case["first_root"]),
            bytes.fromhex(case["second_root"]),
            hashes(case["proof"]),
        )
    assert raised.value.kind == case["kind"]


def verifiers(case: dict[str, Any]) -> list[Verifier]:
    keys = [parse_verifier_key(text) for text in case["verifiers"]]
    keys += [
        Verifier(name, bytes.fromhex(key_id), bytes.fromhex(key))
        for name, key_id, key in case.get("verifier_parts", [])
    ]
    return keys


@pytest.mark.parametrize("case", cases("notes.json"))
def test_note_vectors_open_or_are_refused_with_their_kind(case: dict[str, Any]) -> None:
    keys = verifiers(case)
    if "kind" in case:
        with pytest.raises(NoteError) as raised:
            open_checkpoint(case["note"], keys, origin=case["origin"])
        assert raised.value.kind == case["kind"]
        return
    assert open_note(case["note"], keys) == (case["text"], tuple(case["signers"]))
    checkpoint = open_checkpoint(case["note"], keys, origin=case["origin"])
    expected = case["checkpoint"]
    assert (checkpoint.origin, checkpoint.size, checkpoint.root.hex()) == (
        expected["origin"],
        expected["size"],
        expected["root"],
    )


def test_the_note_vectors_keys_are_well_formed() -> None:
    for key, name in load("notes.json")["keys"].items():
        assert parse_verifier_key(key).name == name
