"""The export directory (audit/export.py) and `python -m audit verify` / `verify-entry`: an export written by
ExportWriter verifies, whole or as a slice; every kind of tampering is found at the first entry it affects, with
the kind that names it; the two-process verifier reports exactly what the one-process verifier does."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import (
    AuditError,
    AuditVerificationError,
    Checkpoint,
    ExportWriter,
    Frontier,
    encode_entry,
    inclusion_nodes,
    inclusion_proof,
    leaf_hash,
    parse_verifier_key,
    range_nodes,
    range_plan,
    sign_checkpoint,
    sign_note,
    verifier_key,
    verify_export,
)
from audit import export as export_module
from audit.__main__ import main
from audit.export import checkpoint_file_name

ROOT_DIR = Path(__file__).resolve().parents[2]
ORIGIN = "broker.example/audit"
T0 = datetime(2025, 5, 1, 8, 0, tzinfo=UTC)
SIZE = 300


def private_key(label: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(label.encode()).digest())


KEY, NEW_KEY, STRANGER = private_key("log key"), private_key("next log key"), private_key("stranger")
VERIFIER = verifier_key(ORIGIN, KEY.public_key())
NEW_VERIFIER = verifier_key(ORIGIN, NEW_KEY.public_key())


def entry(index: int, **changes: Any) -> bytes:
    arguments: dict[str, Any] = {
        "index": index,
        "logged_at": T0 + timedelta(seconds=index),
        "event": "disclosure:permit",
        "request_id": f"req-{index}",
        "partner": "kisalli",
        "organisation": "kisalli",
        "actor_role": "individual_coach",
        "actor_commitment": None,
        "person_id": f"p-{index % 7}",
        "category": "employment_plan",
        "purpose": "service_planning",
        "effect": "permit",
        "basis": {"kind": "statute", "statute": "703/2023 17 §"},
        "policy_version": "2025.1",
        "record_ids": [f"r-{index}"],
    }
    return encode_entry(**(arguments | changes))


ENTRIES = [entry(i) for i in range(SIZE)]


def tree(entries: list[bytes]) -> tuple[dict[int, bytes], dict[tuple[int, int], bytes]]:
    """The root at every size and the subtree store of a log of `entries`."""
    frontier = Frontier.empty()
    roots = {0: frontier.root()}
    nodes: dict[tuple[int, int], bytes] = {}
    for index, data in enumerate(entries):
        leaf = leaf_hash(data)
        nodes[(0, index)] = leaf
        for level, idx, node in frontier.append_collect(leaf):
            nodes[(level, idx)] = node
        roots[frontier.size] = frontier.root()
    return roots, nodes


ROOTS, NODES = tree(ENTRIES)
CHECKPOINTS = (16, 32, 64, 100, 128, 200, 256, 300)


def note(size: int, *, root: bytes | None = None, origin: str = ORIGIN, key: Ed25519PrivateKey = KEY) -> str:
    return sign_checkpoint(Checkpoint(origin, size, ROOTS[size] if root is None else root), ORIGIN, key)


def write(
    directory: Path,
    *,
    entries: Iterable[bytes] = ENTRIES,
    sizes: Iterable[int] = CHECKPOINTS,
    keys: Iterable[str] = (VERIFIER,),
    first: int = 0,
    notes: Callable[[int], str] = note,
    log: tuple[dict[int, bytes], dict[tuple[int, int], bytes]] | None = None,
) -> Path:
    """An export as `broker audit export` writes it: entries from `first`, checkpoints, keys, and range.json when
    the export is a slice."""
    entries = list(entries)
    sizes = sorted(sizes)
    _, nodes = log or (ROOTS, NODES)
    with ExportWriter(directory, first=first) as writer:
        for data in entries:
            writer.write_entry(data)
        for size in sizes:
            writer.write_checkpoint(notes(size))
        writer.write_verifier_keys(list(keys))
        end = first + len(entries)
        if first or any(size > end for size in sizes):
            plan = range_plan(first, end, sizes)
            writer.write_range(
                [nodes[node] for node in plan.left],
                {size: [nodes[node] for node in wanted] for size, wanted in plan.right.items()},
            )
    return directory


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(tmp_path_factory.mktemp("export") / "full")


def failure(directory: Path, **options: Any) -> tuple[int, str]:
    with pytest.raises(AuditVerificationError) as raised:
        verify_export(directory, **options)
    return raised.value.index, raised.value.kind


def entries_file(directory: Path) -> Path:
    return directory / "entries.jsonl"


# -- a good export ----------------------------------------------------------------------------------------------


def test_the_export_holds_the_entries_as_lines_the_checkpoints_by_size_and_the_keys(export: Path) -> None:
    assert entries_file(export).read_bytes() == b"".join(data + b"\n" for data in ENTRIES)
    names = sorted(os.listdir(export / "checkpoints"))
    assert names == [f"{size:020d}.note" for size in CHECKPOINTS]
    assert (export / "checkpoints" / names[0]).read_text("utf-8") == note(16)
    assert (export / "verifier.key").read_text("utf-8") == VERIFIER + "\n"
    assert not (export / "range.json").exists()


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("strict", [False, True])
def test_a_whole_export_verifies(export: Path, workers: int, strict: bool) -> None:
    result = verify_export(export, strict=strict, workers=workers)
    assert (result.origin, result.first, result.entries, result.checkpoints) == (ORIGIN, 0, SIZE, len(CHECKPOINTS))
    assert (result.size, result.root, result.signers) == (SIZE, ROOTS[SIZE], (ORIGIN,))


def test_an_export_verifies_against_keys_the_caller_trusts(export: Path) -> None:
    assert verify_export(export, verifiers=[parse_verifier_key(VERIFIER)]).size == SIZE
    stranger = parse_verifier_key(verifier_key(ORIGIN, STRANGER.public_key()))
    assert failure(export, verifiers=[stranger]) == (0, "signature")


def test_checkpoints_signed_across_a_key_rotation_verify_with_both_keys_listed(tmp_path: Path) -> None:
    def rotated(size: int) -> str:
        return note(size, key=KEY if size <= 100 else NEW_KEY)

    directory = write(tmp_path / "e", notes=rotated, keys=[VERIFIER, NEW_VERIFIER])
    assert verify_export(directory).signers == (ORIGIN,)
    (directory / "verifier.key").write_text(NEW_VERIFIER + "\n")
    assert failure(directory) == (0, "signature")


def test_an_empty_log_with_a_checkpoint_of_size_zero_verifies(tmp_path: Path) -> None:
    directory = write(tmp_path / "e", entries=[], sizes=[0])
    result = verify_export(directory, strict=True)
    assert (result.entries, result.size, result.root) == (0, 0, hashlib.sha256(b"").digest())


# -- tampering with the entries -----------------------------------------------------------------------------------


def rewrite_lines(directory: Path, change: Callable[[list[bytes]], list[bytes]], end: bytes = b"\n") -> None:
    lines = entries_file(directory).read_bytes().split(b"\n")[:-1]
    entries_file(directory).write_bytes(b"\n".join(change(lines)) + end)


def edit(position: int, new: bytes) -> Callable[[list[bytes]], list[bytes]]:
    def change(lines: list[bytes]) -> list[bytes]:
        return [*lines[:position], new, *lines[position + 1 :]]

    return change


TAMPERING: list[tuple[str, Callable[[list[bytes]], list[bytes]], bytes, tuple[int, str], tuple[int, str]]] = [
    # (what, change to the lines, line end, failure in default mode, failure in strict mode)
    (
        "an edited entry",
        edit(40, ENTRIES[40].replace(b"kisalli", b"kisallx")),
        b"\n",
        (32, "root_mismatch"),
        (32, "root_mismatch"),
    ),
    (
        "an entry moved",
        lambda ls: [*ls[:40], ls[41], ls[40], *ls[42:]],
        b"\n",
        (32, "root_mismatch"),
        (40, "index_mismatch"),
    ),
    ("a deleted entry", lambda ls: ls[:40] + ls[41:], b"\n", (32, "root_mismatch"), (40, "index_mismatch")),
    (
        "an entry re-spelt",
        edit(40, ENTRIES[40].replace(b",", b", ", 1)),
        b"\n",
        (32, "root_mismatch"),
        (40, "entry_unparsable"),
    ),
    (
        "an edit in the second half",
        edit(250, entry(250, effect="deny")),
        b"\n",
        (200, "root_mismatch"),
        (200, "root_mismatch"),
    ),
    ("a blank line", lambda ls: [*ls[:250], b"", *ls[250:]], b"\n", (200, "root_mismatch"), (250, "entry_unparsable")),
    ("the tail cut off", lambda ls: ls[:280], b"\n", (280, "size_mismatch"), (280, "size_mismatch")),
    ("everything cut off", lambda ls: [], b"", (0, "size_mismatch"), (0, "size_mismatch")),
    (
        "an entry appended",
        lambda ls: [*ls, entry(300)],
        b"\n",
        (300, "unverified_entries"),
        (300, "unverified_entries"),
    ),
    ("no final newline", lambda ls: ls, b"", (299, "missing_newline"), (299, "missing_newline")),
    ("CRLF line ends", lambda ls: [line + b"\r" for line in ls], b"\n", (0, "root_mismatch"), (0, "entry_unparsable")),
]


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    ("change", "end", "default", "strict"),
    [case[1:] for case in TAMPERING],
    ids=[case[0] for case in TAMPERING],
)
def test_tampered_entries_are_found_at_the_first_entry_they_affect(
    tmp_path: Path,
    change: Callable[[list[bytes]], list[bytes]],
    end: bytes,
    default: tuple[int, str],
    strict: tuple[int, str],
    workers: int,
) -> None:
    directory = write(tmp_path / "e")
    rewrite_lines(directory, change, end)
    assert failure(directory, workers=workers) == default
    assert failure(directory, workers=workers, strict=True) == strict


def test_only_strict_mode_finds_a_signed_entry_that_is_not_canonical(tmp_path: Path) -> None:
    # The log itself holds the bad entry (it was signed so): its bytes verify, its content does not.
    entries = [*ENTRIES[:10], entry(11), *ENTRIES[11:20]]
    log = tree(entries)
    directory = write(tmp_path / "e", entries=entries, sizes=[20], notes=lambda s: note(s, root=log[0][s]), log=log)
    assert verify_export(directory).entries == 20
    assert failure(directory, strict=True) == (10, "index_mismatch")


# -- tampering with checkpoints, keys and files ------------------------------------------------------------------------


def replace_checkpoint(directory: Path, size: int, text: str, name: int | None = None) -> None:
    (directory / "checkpoints" / checkpoint_file_name(size)).unlink()
    (directory / "checkpoints" / checkpoint_file_name(size if name is None else name)).write_text(text, "utf-8")


def flipped_signature(text: str) -> str:
    body, line = text.split("\n\n")
    prefix, encoded = line.rstrip("\n").rsplit(" ", 1)
    data = bytearray(base64.b64decode(encoded))
    data[-1] ^= 0x80
    return f"{body}\n\n{prefix} {base64.b64encode(bytes(data)).decode()}\n"


CHECKPOINT_TAMPERING: list[tuple[str, Callable[[Path], None], str]] = [
    ("a flipped signature bit", lambda d: replace_checkpoint(d, 64, flipped_signature(note(64))), "signature"),
    (
        "a root changed after signing",
        lambda d: replace_checkpoint(d, 64, note(64).replace("\n64\n", "\n65\n")),
        "signature",
    ),
    ("signed by an unknown key", lambda d: replace_checkpoint(d, 64, note(64, key=STRANGER)), "signature"),
    ("garbage after the note", lambda d: replace_checkpoint(d, 64, note(64) + "garbage\n"), "signature"),
    ("a wrong but signed root", lambda d: replace_checkpoint(d, 64, note(64, root=ROOTS[63])), "root_mismatch"),
    (
        "another log's checkpoint",
        lambda d: replace_checkpoint(d, 64, note(64, origin="other.example/log")),
        "origin_mismatch",
    ),
    ("filed under another size", lambda d: replace_checkpoint(d, 64, note(64), name=65), "checkpoint_name"),
    ("a stray file", lambda d: (d / "checkpoints" / "latest.note").write_text(note(64)), "checkpoint_name"),
    (
        "a signed text that is no checkpoint",
        lambda d: replace_checkpoint(d, 64, sign_note(f"{ORIGIN}\n064\nAAAA\n", ORIGIN, KEY)),
        "checkpoint_malformed",
    ),
    ("a checkpoint for more entries than exported", lambda d: replace_checkpoint(d, 300, note(300), name=300), "ok"),
    ("no checkpoints", lambda d: [p.unlink() for p in (d / "checkpoints").iterdir()], "no_checkpoint"),
    ("no checkpoints folder", lambda d: os.rename(d / "checkpoints", d / "moved"), "no_checkpoint"),
    ("a malformed key file", lambda d: (d / "verifier.key").write_text(VERIFIER), "verifier_key"),
    ("a bad key", lambda d: (d / "verifier.key").write_text(VERIFIER[:-2] + "\n"), "verifier_key"),
    ("a blank line in the key file", lambda d: (d / "verifier.key").write_text(f"{VERIFIER}\n\n"), "verifier_key"),
]


@pytest.mark.parametrize(
    ("change", "kind"), [case[1:] for case in CHECKPOINT_TAMPERING], ids=[case[0] for case in CHECKPOINT_TAMPERING]
)
@pytest.mark.parametrize("workers", [1, 2])
def test_tampered_checkpoints_and_keys_are_refused_with_a_kind(
    tmp_path: Path, change: Callable[[Path], None], kind: str, workers: int
) -> None:
    directory = write(tmp_path / "e")
    change(directory)
    if kind == "ok":
        verify_export(directory, workers=workers)
        return
    index, found = failure(directory, workers=workers)
    assert found == kind
    assert index == (32 if kind == "root_mismatch" else 0)


def test_the_smallest_bad_checkpoint_is_the_one_reported(tmp_path: Path) -> None:
    directory = write(tmp_path / "e")
    replace_checkpoint(directory, 256, flipped_signature(note(256)))
    replace_checkpoint(directory, 32, note(32, origin="other.example/log"))
    for workers in (1, 2):
        with pytest.raises(AuditVerificationError, match="checkpoint 32"):
            verify_export(directory, workers=workers)


def test_a_checkpoint_larger_than_the_export_without_range_json_is_a_cut_log(tmp_path: Path) -> None:
    directory = write(tmp_path / "e", entries=ENTRIES[:250], sizes=[200])
    (directory / "checkpoints" / checkpoint_file_name(256)).write_text(note(256))
    assert failure(directory) == (250, "size_mismatch")


def test_missing_files_are_errors_of_reading_not_of_verification(tmp_path: Path, export: Path) -> None:
    with pytest.raises(OSError):
        verify_export(tmp_path / "nowhere")
    directory = write(tmp_path / "e")
    entries_file(directory).unlink()
    with pytest.raises(OSError):
        verify_export(directory)
    directory = write(tmp_path / "f")
    (directory / "verifier.key").unlink()
    with pytest.raises(OSError):
        verify_export(directory)
    with pytest.raises(ValueError):
        verify_export(export, workers=3)


# -- slices ---------------------------------------------------------------------------------------------------------


def slice_of(directory: Path, first: int, end: int, sizes: Iterable[int] = CHECKPOINTS) -> Path:
    kept = [size for size in sizes if size >= first]
    return write(directory, entries=ENTRIES[first:end], sizes=kept, first=first)


@pytest.mark.parametrize(
    ("first", "end"), [(100, 200), (100, 150), (0, 150), (37, 37), (1, 299), (257, 300), (300, 300)]
)
@pytest.mark.parametrize("workers", [1, 2])
def test_a_slice_verifies_against_every_checkpoint_from_its_start(
    tmp_path: Path, first: int, end: int, workers: int
) -> None:
    directory = slice_of(tmp_path / "e", first, end)
    result = verify_export(directory, strict=True, workers=workers)
    assert (result.first, result.entries, result.size, result.root) == (first, end - first, SIZE, ROOTS[SIZE])
    assert result.checkpoints == len([size for size in CHECKPOINTS if size >= first])
    document = json.loads((directory / "range.json").read_bytes())
    assert (document["from"], document["to"]) == (first, end)
    assert len(document["left"]) == first.bit_count()
    assert sorted(int(size) for size in document["right"]) == [size for size in CHECKPOINTS if size > end]


def edit_range(directory: Path, change: Callable[[dict[str, Any]], None]) -> None:
    document = json.loads((directory / "range.json").read_bytes())
    change(document)
    (directory / "range.json").write_text(json.dumps(document))


OTHER_HASH = base64.b64encode(hashlib.sha256(b"other").digest()).decode()


def set_left(document: dict[str, Any]) -> None:
    document["left"][0] = OTHER_HASH


def set_right(size: str) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        document["right"][size][-1] = OTHER_HASH

    return change


SLICE_TAMPERING: list[tuple[str, Callable[[dict[str, Any]], None], tuple[int, str]]] = [
    ("a wrong left hash", set_left, (100, "root_mismatch")),
    ("a wrong right hash", set_right("256"), (200, "root_mismatch")),
    ("a wrong right hash for a later checkpoint", set_right("300"), (256, "root_mismatch")),
    ("a right range missing", lambda d: d["right"].pop("300"), (100, "range_invalid")),
    ("a right range too many", lambda d: d["right"].update({"400": []}), (100, "range_invalid")),
    ("a short right range", lambda d: d["right"]["300"].pop(), (100, "range_invalid")),
    ("a left hash missing", lambda d: d["left"].pop(), (0, "range_invalid")),
    ("a hash not in base64", lambda d: d["left"].__setitem__(0, "not base64!"), (0, "range_invalid")),
    ("a short hash", lambda d: d["left"].__setitem__(0, "AAAA"), (0, "range_invalid")),
    ("a number for a hash", lambda d: d["left"].__setitem__(0, 5), (0, "range_invalid")),
    ("left not a list", lambda d: d.update({"left": {}}), (0, "range_invalid")),
    ("a right range not a list", lambda d: d["right"].update({"256": "AAAA"}), (0, "range_invalid")),
    ("a size in hex", lambda d: d["right"].update({"0x100": d["right"].pop("256")}), (0, "range_invalid")),
    ("from after to", lambda d: d.update({"from": 250}), (0, "range_invalid")),
    ("a negative from", lambda d: d.update({"from": -1}), (0, "range_invalid")),
    ("a fractional to", lambda d: d.update({"to": 200.5}), (0, "range_invalid")),
    ("a member more", lambda d: d.update({"note": "x"}), (0, "range_invalid")),
    ("to moved", lambda d: d.update({"to": 201}), (100, "range_invalid")),
]


@pytest.mark.parametrize(
    ("change", "expected"), [case[1:] for case in SLICE_TAMPERING], ids=[case[0] for case in SLICE_TAMPERING]
)
def test_a_tampered_slice_is_refused(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], expected: tuple[int, str]
) -> None:
    directory = slice_of(tmp_path / "e", 100, 200)
    edit_range(directory, change)
    assert failure(directory) == expected


@pytest.mark.parametrize(
    ("change", "expected"),
    [(lambda ls: [*ls, entry(200)], (200, "size_mismatch")), (lambda ls: ls[:-1], (199, "size_mismatch"))],
    ids=["an entry more than range.json says", "an entry less"],
)
def test_a_slice_holds_exactly_the_entries_range_json_names(
    tmp_path: Path, change: Callable[[list[bytes]], list[bytes]], expected: tuple[int, str]
) -> None:
    directory = slice_of(tmp_path / "e", 100, 200, sizes=[128, 256])
    rewrite_lines(directory, change)
    assert failure(directory) == expected


def test_range_json_that_is_not_json_is_refused(tmp_path: Path) -> None:
    directory = slice_of(tmp_path / "e", 100, 200)
    (directory / "range.json").write_text("{")
    assert failure(directory) == (0, "range_invalid")
    (directory / "range.json").write_text("[]")
    assert failure(directory) == (0, "range_invalid")


def test_a_slice_cannot_hold_a_checkpoint_from_before_it(tmp_path: Path) -> None:
    directory = slice_of(tmp_path / "e", 100, 200)
    (directory / "checkpoints" / checkpoint_file_name(64)).write_text(note(64))
    assert failure(directory) == (100, "checkpoint_outside_range")


def test_a_forked_log_after_the_slice_is_caught_between_consecutive_checkpoints(tmp_path: Path) -> None:
    # A second history that agrees with the first up to 230 and differs after it, with a validly signed
    # checkpoint at 300: inconsistent with the checkpoint at 256 of the first history.
    forked = [*ENTRIES[:230], *(entry(i, effect="deny") for i in range(230, 300))]
    fork_roots, fork_nodes = tree(forked)
    # Ranges that each started from the slice's end would let both checkpoints verify on their own:
    frontier = Frontier.empty()
    for data in ENTRIES[:200]:
        frontier.append(leaf_hash(data))
    for level, idx in range_nodes(200, 300):
        frontier.append_subtree(level, fork_nodes[(level, idx)])
    assert frontier.root() == fork_roots[300]
    # Chained from the checkpoint at 256, the forked 300 has to be built on the first history's tree at 256.
    directory = slice_of(tmp_path / "e", 100, 200)
    replace_checkpoint(directory, 300, note(300, root=fork_roots[300]))

    def forked_right(document: dict[str, Any]) -> None:
        plan = range_plan(100, 200, [256, 300])
        document["right"]["300"] = [base64.b64encode(fork_nodes[node]).decode() for node in plan.right[300]]

    edit_range(directory, forked_right)
    assert failure(directory) == (256, "root_mismatch")


def test_range_plan_chains_the_right_ranges_from_checkpoint_to_checkpoint() -> None:
    plan = range_plan(5, 10, [8, 10, 16, 12])
    assert plan.left == [(2, 0), (0, 4)]
    assert plan.right == {12: [(1, 5)], 16: [(2, 3)]}
    with pytest.raises(AuditError):
        range_plan(10, 5, [])
    with pytest.raises(AuditError):
        range_plan(5, 10, [4])


# -- the writer -------------------------------------------------------------------------------------------------------


def test_the_writer_refuses_what_would_make_a_broken_export(tmp_path: Path) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "old.txt").write_text("x")
    with pytest.raises(AuditError, match="empty"):
        ExportWriter(tmp_path / "used")
    with pytest.raises(AuditError):
        ExportWriter(tmp_path / "negative", first=-1)
    with ExportWriter(tmp_path / "e", first=10) as writer:
        with pytest.raises(AuditError, match="newline"):
            writer.write_entry(b'{"a":1}\n{"b":2}')
        writer.write_entry(ENTRIES[10])
        with pytest.raises(AuditError, match="before"):
            writer.write_checkpoint(note(8))
        assert writer.write_checkpoint(note(16)) == 16
        assert writer.write_checkpoint(note(16)) == 16  # the same note again is harmless
        with pytest.raises(AuditError, match="two different"):
            writer.write_checkpoint(note(16, key=NEW_KEY))
        with pytest.raises(AuditError, match="not a checkpoint"):
            writer.write_checkpoint("nonsense")
        with pytest.raises(AuditError):
            writer.write_verifier_keys([])
        with pytest.raises(AuditError):
            writer.write_verifier_keys(["not a key"])
        with pytest.raises(AuditError, match="range_plan"):
            writer.write_range([], {16: []})
        plan = range_plan(10, 11, [16])
        with pytest.raises(AuditError, match="exactly the checkpoints"):
            writer.write_range([NODES[n] for n in plan.left], {11: []})
        with pytest.raises(AuditError, match="exactly the checkpoints"):
            writer.write_range([NODES[n] for n in plan.left], {})
        with pytest.raises(AuditError, match="bytes"):
            writer.write_range([b"short"] * len(plan.left), {16: [NODES[n] for n in plan.right[16]]})
        writer.write_range([NODES[n] for n in plan.left], {16: [NODES[n] for n in plan.right[16]]})
        with pytest.raises(AuditError, match="last"):
            writer.write_entry(ENTRIES[11])
        with pytest.raises(AuditError, match="last"):
            writer.write_checkpoint(note(32))
        writer.write_verifier_keys([parse_verifier_key(VERIFIER)])
    assert verify_export(tmp_path / "e").entries == 1


def test_closing_a_slice_without_range_json_is_refused(tmp_path: Path) -> None:
    writer = ExportWriter(tmp_path / "slice", first=3)
    writer.write_entry(ENTRIES[3])
    with pytest.raises(AuditError, match=r"range\.json"):
        writer.close()
    writer = ExportWriter(tmp_path / "prefix")
    writer.write_entry(ENTRIES[0])
    writer.write_checkpoint(note(16))
    with pytest.raises(AuditError, match=r"range\.json"):
        writer.close()
    # An exception inside the with block is not hidden behind this one.
    with pytest.raises(KeyError), ExportWriter(tmp_path / "failed", first=3):
        raise KeyError("the database went away")


# -- the command line -----------------------------------------------------------------------------------------------


def run(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "audit", *arguments], cwd=ROOT_DIR, capture_output=True, text=True, check=False
    )


def test_python_dash_m_audit_verify_prints_a_summary(export: Path) -> None:
    done = run("verify", str(export))
    assert (done.returncode, done.stdout) == (
        0,
        f"ok: {SIZE} entries, {len(CHECKPOINTS)} checkpoints, root {ROOTS[SIZE].hex()}\n",
    )
    assert "--key" in done.stderr


def test_python_dash_m_audit_verify_names_the_first_failure(tmp_path: Path) -> None:
    directory = write(tmp_path / "e")
    rewrite_lines(directory, edit(40, ENTRIES[41]))
    done = run("verify", str(directory), "--strict")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith("FAIL at index 40: index_mismatch: ")


def test_verify_with_a_trusted_key_given_as_a_string_or_a_file(
    tmp_path: Path, export: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", str(export), "--key", VERIFIER]) == 0
    assert capsys.readouterr().err == ""
    keys = tmp_path / "trusted.keys"
    keys.write_text(f"{NEW_VERIFIER}\n{VERIFIER}\n")
    assert main(["verify", str(export), "--key", str(keys)]) == 0
    assert main(["verify", str(export), "--key", NEW_VERIFIER]) == 1
    assert "FAIL at index 0: signature: checkpoint 16: no_known_signature" in capsys.readouterr().err


@pytest.mark.parametrize(
    "arguments",
    [["verify", "{missing}"], ["verify", "{export}", "--key", "not a key"], ["verify"], ["verify", "{export}", "-x"]],
)
def test_verify_usage_errors_exit_with_2(
    tmp_path: Path, export: Path, arguments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    filled = [a.format(missing=tmp_path / "missing", export=export) for a in arguments]
    with pytest.raises(SystemExit) if len(filled) < 2 or "-x" in filled else _no_exit():
        assert main(filled) == 2
    assert capsys.readouterr().err


class _no_exit:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


def bundle(index: int, size: int = 256, **changes: Any) -> dict[str, Any]:
    proof = inclusion_proof(index, size, {n: NODES[n] for n in inclusion_nodes(index, size)})
    document = {
        "entry": ENTRIES[index].decode("utf-8"),
        "index": index,
        "tree_size": size,
        "inclusion_proof": [base64.b64encode(h).decode() for h in proof],
        "checkpoint": note(size),
    }
    return document | changes


def write_bundle(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document, ensure_ascii=False))
    return path


def test_python_dash_m_audit_verify_entry_checks_a_proof_bundle(tmp_path: Path) -> None:
    path = write_bundle(tmp_path / "proof.json", bundle(77))
    done = run("verify-entry", str(path), "--key", VERIFIER)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"ok: entry 77 is in {ORIGIN} at tree size 256, root {ROOTS[256].hex()}\n"


def tampered_proof(document: dict[str, Any]) -> dict[str, Any]:
    proof = list(document["inclusion_proof"])
    proof[2] = OTHER_HASH
    return document | {"inclusion_proof": proof}


BUNDLE_TAMPERING: list[tuple[str, dict[str, Any], str]] = [
    ("a tampered proof element", tampered_proof(bundle(77)), "FAIL at index 77: root_mismatch"),
    (
        "a proof element missing",
        bundle(77) | {"inclusion_proof": bundle(77)["inclusion_proof"][:-1]},
        "FAIL at index 77: proof_size",
    ),
    ("another entry", bundle(77) | {"entry": ENTRIES[78].decode()}, "FAIL at index 77: index_mismatch"),
    (
        "an edited entry",
        bundle(77) | {"entry": ENTRIES[77].decode().replace("kisalli", "kisallx")},
        "FAIL at index 77: root_mismatch",
    ),
    ("an entry that is not JSON", bundle(77) | {"entry": "{"}, "FAIL at index 77: entry_unparsable"),
    (
        "a re-spelt entry",
        bundle(77) | {"entry": ENTRIES[77].decode().replace(",", ", ", 1)},
        "FAIL at index 77: entry_unparsable",
    ),
    (
        "the proof for another index",
        bundle(77) | {"inclusion_proof": bundle(76)["inclusion_proof"]},
        "FAIL at index 77: root_mismatch",
    ),
    ("another tree size", bundle(77) | {"tree_size": 255}, "FAIL at index 77: size_mismatch"),
    (
        "a checkpoint by another key",
        bundle(77) | {"checkpoint": note(256, key=STRANGER)},
        "FAIL at index 77: no_known_signature",
    ),
    (
        "a forged checkpoint",
        bundle(77) | {"checkpoint": flipped_signature(note(256))},
        "FAIL at index 77: bad_signature",
    ),
    (
        "an index beyond the tree",
        bundle(77) | {"index": 256, "entry": entry(256).decode()},
        "FAIL at index 256: index_out_of_range",
    ),
]


@pytest.mark.parametrize(
    ("document", "message"), [case[1:] for case in BUNDLE_TAMPERING], ids=[case[0] for case in BUNDLE_TAMPERING]
)
def test_verify_entry_names_what_failed(
    tmp_path: Path, document: dict[str, Any], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_bundle(tmp_path / "proof.json", document)
    assert main(["verify-entry", str(path), "--key", VERIFIER]) == 1
    assert capsys.readouterr().err.startswith(message)


@pytest.mark.parametrize(
    "document",
    [
        "not json",
        [],
        bundle(77) | {"extra": 1},
        {k: v for k, v in bundle(77).items() if k != "checkpoint"},
        bundle(77) | {"index": -1},
        bundle(77) | {"index": True},
        bundle(77) | {"entry": 5},
        bundle(77) | {"inclusion_proof": "AAAA"},
        bundle(77) | {"inclusion_proof": ["not base64!"]},
        bundle(77) | {"inclusion_proof": [7]},
    ],
)
def test_a_malformed_bundle_is_a_usage_error(
    tmp_path: Path, document: object, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "proof.json"
    if isinstance(document, str):
        path.write_text(document)
    else:
        write_bundle(path, document)
    assert main(["verify-entry", str(path), "--key", VERIFIER]) == 2
    assert capsys.readouterr().err


def test_verify_entry_needs_a_readable_bundle_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_bundle(tmp_path / "proof.json", bundle(3))
    assert main(["verify-entry", str(tmp_path / "missing.json"), "--key", VERIFIER]) == 2
    assert main(["verify-entry", str(path), "--key", str(tmp_path / "missing.keys")]) == 2
    (tmp_path / "empty.keys").write_text("\n")
    assert main(["verify-entry", str(path), "--key", str(tmp_path / "empty.keys")]) == 2
    (tmp_path / "bad.keys").write_text("nonsense\n")
    assert main(["verify-entry", str(path), "--key", str(tmp_path / "bad.keys")]) == 2
    (tmp_path / "good.keys").write_text(f"{VERIFIER}\n")
    assert main(["verify-entry", str(path), "--key", str(tmp_path / "good.keys")]) == 0
    capsys.readouterr()


# -- the second process ---------------------------------------------------------------------------------------------


def test_the_second_process_hashes_the_second_half(export: Path) -> None:
    notes = {size: note(size).encode() for size in CHECKPOINTS}
    keys = [parse_verifier_key(VERIFIER)]
    size = entries_file(export).stat().st_size
    worker = export_module._Worker.start(entries_file(export), size, 0, list(CHECKPOINTS), False, notes, keys)
    assert worker is not None
    try:
        items = sorted(notes.items())[1::2]
        signatures = worker.signatures(items, keys)
        assert [(size, message) for size, message, _ in signatures] == [(size, None) for size, _ in items]
        own = export_module._hash_part(entries_file(export), 0, worker.boundary, 0, list(CHECKPOINTS), False)
        # What the worker sends: the index it counted its part to start at, and the part.
        start, part = worker._receive()
        assert start == own.count
        assert own.count + part.count == SIZE
        joined = Frontier.empty()
        for _, nodes in own.pieces + part.pieces:
            for level, node in nodes:
                joined.append_subtree(level, node)
        assert joined.root() == ROOTS[SIZE]
    finally:
        worker.stop()


def crash(*_: object) -> None:
    raise SystemExit(3)


def test_if_the_second_process_dies_the_first_does_its_share(
    tmp_path: Path, export: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_module, "_worker_main", crash)
    assert verify_export(export, workers=2).root == ROOTS[SIZE]
    tampered = write(tmp_path / "tampered")
    rewrite_lines(tampered, edit(250, entry(250, effect="deny")))
    assert failure(tampered, workers=2) == (200, "root_mismatch")


def test_if_no_second_process_can_start_one_process_does_it_all(export: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class NoProcesses:
        def Pipe(self, duplex: bool) -> Any:
            raise OSError("no pipes today")

    monkeypatch.setattr(export_module.multiprocessing, "get_context", lambda method: NoProcesses())
    assert verify_export(export, workers=2).root == ROOTS[SIZE]


def test_a_second_process_is_forked_only_without_other_threads(export: Path) -> None:
    # A fork copies only the calling thread, so with another thread running the worker comes from forkserver.
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert verify_export(export, workers=2).root == ROOTS[SIZE]
    finally:
        stop.set()
        thread.join()


def test_a_one_line_export_is_not_split(tmp_path: Path) -> None:
    directory = write(tmp_path / "e", entries=ENTRIES[:1], sizes=[1])
    assert verify_export(directory, workers=2).entries == 1


def test_a_file_that_ends_early_is_hashed_as_far_as_it_goes(export: Path) -> None:
    size = entries_file(export).stat().st_size
    part = export_module._hash_part(entries_file(export), 0, size + 100, 0, [], False)
    assert part.count == SIZE
