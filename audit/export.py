"""The export directory (DESIGN.md, "Audit export format"): written by `broker audit export`, verified offline
by `python -m audit verify DIR` without the application or its database.

Layout
------

- `entries.jsonl` — line i holds the canonical bytes (RFC 8785) of entry i, exactly the bytes hashed into leaf i
  (`SHA-256(0x00 || bytes)`, RFC 9162 §2.1.1), each line ended by a newline.
- `checkpoints/<tree size, 20 digits>.note` — signed checkpoints: C2SP tlog-checkpoint texts in C2SP signed
  notes (audit.note). The zero-padded names sort by tree size.
- `verifier.key` — the note verifier keys, one per line: the key set, several during a rotation.
- `range.json` — only in an export of a slice of the log (below).

What verification proves
------------------------

Every checkpoint must carry a valid signature by a key of the set, and all must name one origin. The entries
are hashed in order into the tree; at each checkpoint's size the computed root must equal the signed root. So
each signed root is shown to be the root of exactly these entries, and any two checkpoints are consistent
(RFC 9162 §2.1.4's property, shown directly: the smaller tree is a prefix of the larger). The newest checkpoint
must cover every entry: an entry after it is signed by nothing, and is reported (`unverified_entries`).

Verifying against the export's own verifier.key shows that the export is internally consistent; that it is the
log the broker published needs a key obtained some other way (`verify_export(..., verifiers=...)`, or
`--key` on the command line).

A slice: range.json
-------------------

An export of entries [from, to) only carries, beside them, the hashes that tie them to the whole tree:

    {"from": F, "left": [base64, ...], "right": {"<size>": [base64, ...], ...}, "to": T}

- `left` — the perfect subtrees covering [0, F), largest first (audit.compact.range_nodes(0, F), as many as
  1-bits in F): the frontier of the tree of F leaves. The entries are appended to it.
- `right` — for each checkpoint larger than T, in increasing size s1 < s2 < …: the perfect subtrees covering
  [T, s1) under "s1", [s1, s2) under "s2", and so on, each list left to right (range_nodes of that range).
  Appending them in turn to the frontier after the entries gives the tree at s1, then at s2, …

Checkpoints of sizes F..T are checked as in a full export; checkpoints larger than T through `right`, so a slice
verifies against checkpoints signed long after it ends. Each `right` list continues from the previous
checkpoint, not from T again: with a list from T to every checkpoint, two checkpoints that disagree about the
leaves between them (a fork after T) would each verify on its own; chained, the larger tree is built from the
smaller, so consecutive checkpoints are shown consistent as in a full export. A checkpoint smaller than F
cannot be checked against a slice and is not allowed in one. A root match with wrong `left` or `right` hashes
would need a SHA-256 collision, so these hashes need no signature of their own: like an RFC 9162 inclusion
proof, they are checked by the signed root they lead to.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import multiprocessing
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast

from audit.canonical import canonical_json
from audit.compact import CompactRange, Node, range_nodes
from audit.errors import AuditError, AuditVerificationError, CanonicalisationError
from audit.merkle import HASH_SIZE, Frontier
from audit.note import (
    Checkpoint,
    NoteError,
    Verifier,
    open_note,
    parse_verifier_key,
    read_checkpoint_unverified,
)

ENTRIES = "entries.jsonl"
CHECKPOINTS = "checkpoints"
VERIFIER_KEY = "verifier.key"
RANGE = "range.json"

ExportFailure = Literal[
    "no_checkpoint",
    "checkpoint_name",
    "signature",
    "checkpoint_malformed",
    "origin_mismatch",
    "verifier_key",
    "range_invalid",
    "checkpoint_outside_range",
    "missing_newline",
    "entry_unparsable",
    "index_mismatch",
    "root_mismatch",
    "size_mismatch",
    "unverified_entries",
]

_CHECKPOINT_NAME = re.compile(r"[0-9]{20}\.note")
# Lines per batch: enough that per-batch work vanishes, few enough to stay in cache. The file buffer is larger
# than io's default, which costs readlines a quarter of its time.
_BATCH_BYTES = 1 << 20
_BUFFER_BYTES = 1 << 16
# Below these sizes of entries.jsonl a second process costs more than it saves.
_PARALLEL_BYTES = 64 << 20
_PARALLEL_BYTES_STRICT = 4 << 20


def checkpoint_file_name(size: int) -> str:
    return f"{size:020d}.note"


def _fail(index: int, kind: ExportFailure, message: str) -> AuditVerificationError:
    # ExportFailure is the part of audit.errors.VerificationFailure that an export can fail with.
    return AuditVerificationError(index, kind, message)


# -- Writing ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RangePlan:
    """Which stored perfect subtrees (level, index) a slice export needs in range.json: `left` for [0, from),
    and `right[s]` for each checkpoint size s > to, from the previous such size (or `to`)."""

    left: list[Node]
    right: dict[int, list[Node]]


def range_plan(first: int, end: int, checkpoint_sizes: Iterable[int]) -> RangePlan:
    """The subtrees to fetch (in one batch) for a slice export of entries [first, end) that is to verify
    against the checkpoints of `checkpoint_sizes` (those ≤ end are checked from the entries themselves)."""
    if not 0 <= first <= end:
        raise AuditError("a range needs 0 <= from <= to")
    right: dict[int, list[Node]] = {}
    previous = end
    for size in sorted(set(checkpoint_sizes)):
        if size < first:
            raise AuditError(f"the checkpoint of size {size} ends before the range begins")
        if size > end:
            right[size] = range_nodes(previous, size)
            previous = size
    return RangePlan(range_nodes(0, first), right)


class ExportWriter:
    """Writes an export directory (which must be new or empty): entries in order with `write_entry`, signed
    checkpoints with `write_checkpoint`, the key set with `write_verifier_keys`, and last, for a slice (entries
    not from 0, or checkpoints beyond the last entry), `write_range`. `first` is the index of the first entry
    written (0 for the whole log). Closing checks that a slice got its range.json."""

    def __init__(self, directory: str | os.PathLike[str], *, first: int = 0) -> None:
        if isinstance(first, bool) or not isinstance(first, int) or first < 0:
            raise AuditError("first must be a non-negative integer")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        if any(self.directory.iterdir()):
            # Files of an earlier export would mix into this one and be verified as part of it.
            raise AuditError("the export directory must be empty")
        (self.directory / CHECKPOINTS).mkdir()
        self.first = first
        self.count = 0
        self._sizes: set[int] = set()
        self._range_written = False
        self._entries = (self.directory / ENTRIES).open("xb")

    def __enter__(self) -> ExportWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self._entries.close()

    def close(self) -> None:
        """Close entries.jsonl; raise AuditError if the export is a slice without range.json, which would not
        verify."""
        self._entries.close()
        end = self.first + self.count
        if not self._range_written and (self.first or any(size > end for size in self._sizes)):
            raise AuditError("an export of a slice of the log needs range.json (write_range)")

    def write_entry(self, data: bytes) -> None:
        """Append the next entry's canonical bytes (the leaf preimage, as stored)."""
        if self._range_written:
            raise AuditError("range.json describes the entries and checkpoints already written; write it last")
        if not isinstance(data, bytes) or b"\n" in data:
            raise AuditError("an entry is bytes without a newline: each entry is one line of entries.jsonl")
        self._entries.write(data + b"\n")
        self.count += 1

    def write_checkpoint(self, note: str) -> int:
        """Store a signed checkpoint under its tree size, and return the size. The signature is not checked
        here (the verifier does that); the note only has to be well formed."""
        try:
            size = read_checkpoint_unverified(note).size
        except NoteError as error:
            raise AuditError(f"not a checkpoint note: {error.message}") from None
        if size < self.first:
            raise AuditError(f"a checkpoint of size {size} ends before the exported range begins")
        if self._range_written:
            raise AuditError("range.json describes the entries and checkpoints already written; write it last")
        path = self.directory / CHECKPOINTS / checkpoint_file_name(size)
        data = note.encode("utf-8")
        try:
            with path.open("xb") as out:
                out.write(data)
        except FileExistsError:
            if path.read_bytes() != data:
                # Two different signed trees of one size: a fork, which the export must not paper over.
                raise AuditError(f"two different checkpoints of size {size}") from None
        self._sizes.add(size)
        return size

    def write_verifier_keys(self, keys: Sequence[str | Verifier]) -> None:
        """Write verifier.key: the verifier keys (`<name>+<key id>+<key>`), one per line."""
        lines = [str(key) if isinstance(key, Verifier) else key for key in keys]
        if not lines:
            raise AuditError("at least one verifier key is needed")
        for line in lines:
            parse_verifier_key(line)
        with (self.directory / VERIFIER_KEY).open("x", encoding="utf-8", newline="\n") as out:
            out.write("".join(f"{line}\n" for line in lines))

    def write_range(self, left: Sequence[bytes], right: Mapping[int, Sequence[bytes]]) -> None:
        """Write range.json for the entries written, [first, first + count), and the checkpoints written:
        `left` and `right` hold the hashes of the subtrees `range_plan(first, first + count, sizes)` names, in
        the same order."""
        end = self.first + self.count
        if sorted(right) != sorted(size for size in self._sizes if size > end):
            raise AuditError("range.json's right part is for exactly the checkpoints after the last entry")
        plan = range_plan(self.first, end, right)
        if len(left) != len(plan.left) or any(len(right[s]) != len(plan.right[s]) for s in plan.right):
            raise AuditError("the range hashes do not match range_plan for these entries")
        for node in [*left, *(h for hashes in right.values() for h in hashes)]:
            if not isinstance(node, bytes) or len(node) != HASH_SIZE:
                raise AuditError(f"subtree hashes are {HASH_SIZE} bytes")
        document = {
            "from": self.first,
            "to": end,
            "left": [_b64(h) for h in left],
            "right": {str(size): [_b64(h) for h in right[size]] for size in sorted(right)},
        }
        with (self.directory / RANGE).open("xb") as out:
            out.write(canonical_json(document) + b"\n")
        self._range_written = True


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes | None:
    if not isinstance(text, str):
        return None
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None
    return data if len(data) == HASH_SIZE and _b64(data) == text else None


# -- Verifying ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What a verified export holds: entries [first, first + entries) of the log `origin`, proven by
    `checkpoints` signed checkpoints, the newest of tree size `size` and root `root`, signed by `signers`."""

    origin: str
    first: int
    entries: int
    checkpoints: int
    size: int
    root: bytes
    signers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Range:
    first: int
    end: int
    left: list[bytes]
    right: dict[int, list[bytes]]


Problem = tuple[int, ExportFailure, str]
"""(index, kind, message): the arguments of the AuditVerificationError to raise."""

# A checkpoint's signature check: the error message, or None and the names of the keys that signed it.
SignatureResult = tuple[int, str | None, tuple[str, ...]]


@dataclass(slots=True)
class _Part:
    """The result of hashing a run of lines: the compact ranges between consecutive checkpoint sizes, as
    (end index, [(level, hash), …]), the number of lines, and the first problem found in the lines."""

    count: int = 0
    pieces: list[tuple[int, list[tuple[int, bytes]]]] = field(default_factory=list)
    problem: Problem | None = None


def verify_export(
    directory: str | os.PathLike[str],
    *,
    strict: bool = False,
    verifiers: Sequence[Verifier] | None = None,
    workers: int | None = None,
) -> ExportResult:
    """Verify an export directory and return what it proves; raise AuditVerificationError at the first
    failure. Its `kind` is one of ExportFailure; its `index` is the first entry not proven (for problems with
    checkpoints, keys or range.json, the export's first entry). Raises OSError when the directory, entries.jsonl
    or verifier.key cannot be read.

    `verifiers` replaces the export's own verifier.key with keys the caller trusts. `strict` also checks that
    every entry is canonical JSON (RFC 8785) whose "index" member is its position, as verify_log does; the
    default checks what the signatures cover, the bytes. `workers` (1 or 2; default: 2 for a large export on a
    machine with two cores or more) splits the work between two processes.
    """
    base = Path(directory)
    if not base.is_dir():
        raise NotADirectoryError(f"{base} is not a directory")
    entries_path = base / ENTRIES
    file_size = entries_path.stat().st_size
    range_info = _read_range(base / RANGE)
    first = range_info.first if range_info else 0
    key_set = list(verifiers) if verifiers is not None else _read_verifier_keys(base / VERIFIER_KEY, first)
    notes = _read_checkpoints(base / CHECKPOINTS, first)
    sizes = sorted(notes)

    worker = None
    if _use_two_processes(workers, file_size, strict):
        worker = _Worker.start(entries_path, file_size, first, sizes, strict, notes, key_set)
    try:
        # With two processes each checks every other signature; the first problem is the same either way.
        items = sorted(notes.items())
        signatures = _check_signatures(items[::2] if worker else items, key_set)
        checkpoints = _parse_checkpoints(notes)
        if worker:
            signatures += worker.signatures(items[1::2], key_set)
        signers = _check_checkpoints(checkpoints, signatures, first)
        if range_info is not None:
            _check_range(range_info, sizes)
        parts = [_hash_part(entries_path, 0, worker.boundary if worker else file_size, first, sizes, strict)]
        if worker and parts[0].problem is None:
            parts.append(worker.part(first + parts[0].count, sizes, strict))
    finally:
        if worker:
            worker.stop()
    roots = {size: checkpoint.root for size, checkpoint in checkpoints.items() if isinstance(checkpoint, Checkpoint)}
    newest = checkpoints[sizes[-1]]
    assert isinstance(newest, Checkpoint)  # _check_checkpoints raised otherwise
    entries = _check_tree(parts, range_info, roots, first)
    return ExportResult(newest.origin, first, entries, len(sizes), newest.size, newest.root, signers)


def _use_two_processes(workers: int | None, file_size: int, strict: bool) -> bool:
    if workers is not None:
        if workers not in (1, 2):
            raise ValueError("workers must be 1 or 2")
        return workers == 2
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores >= 2 and file_size >= (_PARALLEL_BYTES_STRICT if strict else _PARALLEL_BYTES)


def _read_verifier_keys(path: Path, first: int) -> list[Verifier]:
    text = path.read_text(encoding="utf-8")
    lines = text[:-1].split("\n") if text.endswith("\n") else None
    if not lines or not all(lines):
        raise _fail(first, "verifier_key", "verifier.key must hold one key per line, each ending in a newline")
    keys: list[Verifier] = []
    for number, line in enumerate(lines, start=1):
        try:
            keys.append(parse_verifier_key(line))
        except NoteError as error:
            raise _fail(first, "verifier_key", f"line {number} of verifier.key: {error.message}") from None
    return keys


def _read_range(path: Path) -> _Range | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None

    def invalid(message: str) -> AuditVerificationError:
        return _fail(0, "range_invalid", f"range.json: {message}")

    try:
        document = json.loads(data)
    except ValueError:
        raise invalid("not JSON") from None
    if not isinstance(document, dict) or set(document) != {"from", "to", "left", "right"}:
        raise invalid('expected exactly the members "from", "to", "left" and "right"')
    first, end, left, right = document["from"], document["to"], document["left"], document["right"]
    for value in (first, end):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise invalid('"from" and "to" must be non-negative integers')
    if first > end:
        raise invalid('"from" is after "to"')
    if not isinstance(left, list) or not isinstance(right, dict):
        raise invalid('"left" must be a list and "right" an object')
    left_hashes = _hashes(left)
    if left_hashes is None or len(left_hashes) != first.bit_count():
        raise invalid(f'"left" must hold the {first.bit_count()} base64 subtree hashes covering [0, from)')
    right_hashes: dict[int, list[bytes]] = {}
    for key, values in right.items():
        hashes = _hashes(values)
        if not re.fullmatch(r"[1-9][0-9]*", key) or hashes is None:
            raise invalid('"right" maps tree sizes in decimal to lists of base64 subtree hashes')
        right_hashes[int(key)] = hashes
    return _Range(first, end, left_hashes, right_hashes)


def _hashes(values: object) -> list[bytes] | None:
    if not isinstance(values, list):
        return None
    decoded = [_unb64(value) for value in values]
    return [h for h in decoded if h is not None] if all(h is not None for h in decoded) else None


def _check_range(info: _Range, sizes: list[int]) -> None:
    if sizes[0] < info.first:
        raise _fail(
            info.first,
            "checkpoint_outside_range",
            f"checkpoint {sizes[0]} ends before the exported range begins, so it cannot be checked",
        )
    later = [size for size in sizes if size > info.end]
    if sorted(info.right) != later:
        raise _fail(info.first, "range_invalid", 'range.json: "right" must list exactly the checkpoints after "to"')
    previous = info.end
    for size in later:
        needed = len(range_nodes(previous, size))
        if len(info.right[size]) != needed:
            raise _fail(
                info.first, "range_invalid", f"range.json: size {size} needs {needed} subtrees for [{previous}, {size})"
            )
        previous = size


def _read_checkpoints(directory: Path, first: int) -> dict[int, bytes]:
    """The checkpoint notes by tree size, as stored (not yet parsed or verified)."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        names = []
    if not names:
        raise _fail(first, "no_checkpoint", "the export holds no signed checkpoint")
    notes: dict[int, bytes] = {}
    for name in names:
        if not _CHECKPOINT_NAME.fullmatch(name):
            raise _fail(first, "checkpoint_name", f"checkpoints/{name} is not named <tree size, 20 digits>.note")
        notes[int(name[:20])] = (directory / name).read_bytes()
    return notes


def _check_signatures(notes: Iterable[tuple[int, bytes]], verifiers: Sequence[Verifier]) -> list[SignatureResult]:
    """Verify each note against the key set: the costly part of reading checkpoints (Ed25519 verification)."""
    results: list[SignatureResult] = []
    for size, note in notes:
        try:
            _, names = open_note(note, verifiers)
        except NoteError as error:
            results.append((size, f"{error.kind}: {error.message}", ()))
        else:
            results.append((size, None, names))
    return results


def _parse_checkpoints(notes: Mapping[int, bytes]) -> dict[int, Checkpoint | NoteError]:
    # Read without verifying, for the roots; nothing read here is acted on unless its signature verified
    # (`_check_checkpoints` looks at the signature first).
    parsed: dict[int, Checkpoint | NoteError] = {}
    for size, note in notes.items():
        try:
            parsed[size] = read_checkpoint_unverified(note)
        except NoteError as error:
            parsed[size] = error
    return parsed


def _check_checkpoints(
    checkpoints: Mapping[int, Checkpoint | NoteError], signatures: list[SignatureResult], first: int
) -> tuple[str, ...]:
    """Raise the first checkpoint problem, in tree size order (for each: its signature, its text, its file name,
    its origin); return the names of the keys that signed, in order of first appearance."""
    by_size = {size: (message, names) for size, message, names in signatures}
    signers: list[str] = []
    origin: str | None = None
    for size in sorted(checkpoints):
        message, names = by_size[size]
        if message is not None:
            raise _fail(first, "signature", f"checkpoint {size}: {message}")
        signers.extend(name for name in names if name not in signers)
        checkpoint = checkpoints[size]
        if isinstance(checkpoint, NoteError):
            raise _fail(first, "checkpoint_malformed", f"checkpoint {size}: {checkpoint.message}")
        if checkpoint.size != size:
            name = checkpoint_file_name(size)
            raise _fail(first, "checkpoint_name", f"checkpoints/{name} holds tree size {checkpoint.size}")
        if origin is None:
            origin = checkpoint.origin
        elif checkpoint.origin != origin:
            raise _fail(first, "origin_mismatch", f"checkpoint {size} is of another log than the smaller ones")
    return tuple(signers)


def _hash_part(path: Path, start: int, end: int, index: int, stops: Sequence[int], strict: bool) -> _Part:
    """Hash the lines in bytes [start, end) of entries.jsonl (`start` at a line's start), the first being entry
    `index`, into compact ranges that end at each of `stops` (tree sizes) it passes, and at the end.

    The verifier's hot path. Lines are read a megabyte at a time, leaf hashes computed in one comprehension,
    and the tree above them level by level (audit.compact.range_hashes); per entry that leaves little more than
    the two SHA-256 calls every verifier must make.
    """
    part = _Part()
    stop_iter = iter([stop for stop in stops if stop > index])
    next_stop = next(stop_iter, -1)
    current = CompactRange(index)
    position = index
    hash_ = sha256
    with path.open("rb", buffering=_BUFFER_BYTES) as lines_in:
        lines_in.seek(start)
        while (left := end - lines_in.tell()) > 0:
            lines = lines_in.readlines(min(_BATCH_BYTES, left))
            if not lines:
                break
            # The last batch of a part may run past its end: drop the lines beyond it (the end is a line start,
            # so they are whole lines).
            beyond = lines_in.tell() - end
            while beyond > 0:
                beyond -= len(lines.pop())
            if not lines[-1].endswith(b"\n"):
                lines.pop()
                part.problem = (
                    position + len(lines),
                    "missing_newline",
                    "the last line of entries.jsonl does not end with a newline",
                )
            if strict:
                problem = _strict_problem(lines, position)
                if problem is not None:
                    del lines[problem[0] - position :]
                    part.problem = problem
            # RFC 9162 §2.1.1: the leaf hash is SHA-256(0x00 || entry), the entry being the line without "\n".
            leaves = [hash_(b"\x00" + line[:-1]).digest() for line in lines]
            done = 0
            while done < len(leaves):
                take = len(leaves) - done if next_stop < 0 else min(len(leaves) - done, next_stop - position)
                current.extend(leaves[done : done + take])
                done += take
                position += take
                if position == next_stop:
                    part.pieces.append((position, current.nodes))
                    current = CompactRange(position)
                    next_stop = next(stop_iter, -1)
            if part.problem is not None:
                break
    if current.end > current.begin:
        part.pieces.append((position, current.nodes))
    part.count = position - index
    return part


def _strict_problem(lines: list[bytes], position: int) -> Problem | None:
    """The first line that is not the canonical JSON (RFC 8785) of an object whose "index" is its position."""
    loads, canonical = json.loads, canonical_json
    for offset, line in enumerate(lines):
        data = line[:-1]
        # Re-canonicalising must give the very bytes stored: that rejects whitespace, member order, escapes,
        # duplicate names, floats and any other second spelling of the same entry (RFC 8785 §3.2).
        try:
            entry = loads(data)
            same = canonical(entry) == data
        except (ValueError, RecursionError, CanonicalisationError):
            entry, same = None, False
        if not isinstance(entry, dict) or not same:
            return position + offset, "entry_unparsable", "the line is not a canonical JSON object (RFC 8785)"
        inner = entry.get("index")
        if isinstance(inner, bool) or inner != position + offset:
            return position + offset, "index_mismatch", "the entry's own index differs from its line's position"
    return None


def _check_tree(parts: list[_Part], info: _Range | None, roots: Mapping[int, bytes], first: int) -> int:
    """Build the tree from the parts' compact ranges (and range.json's) and compare the root at every checkpoint
    size; raise the first problem in entry order. Returns the number of entries."""
    frontier = Frontier.from_bytes(first, b"".join(info.left)) if info else Frontier.empty()
    proven = first

    def check(size: int) -> None:
        nonlocal proven
        if not hmac.compare_digest(frontier.root(), roots[size]):
            what = "the subtrees range.json gives" if size <= first else f"entries {proven}..{size - 1}"
            raise _fail(proven, "root_mismatch", f"{what} do not hash to the root signed at tree size {size}")
        proven = size

    if first in roots:
        check(first)
    count = 0
    for part in parts:
        for end, nodes in part.pieces:
            for level, node in nodes:
                frontier.append_subtree(level, node)
            if end in roots:
                check(end)
        count += part.count
        if part.problem is not None:
            raise _fail(*part.problem)
    end = first + count
    later = sorted(size for size in roots if size > end)
    if info is not None:
        if end != info.end:
            message = f"entries.jsonl holds {count} entries, range.json says {info.end - first}"
            raise _fail(min(end, info.end), "size_mismatch", message)
        for size in later:
            for (level, _), node in zip(range_nodes(frontier.size, size), info.right[size], strict=True):
                frontier.append_subtree(level, node)
            check(size)
    elif later:
        raise _fail(end, "size_mismatch", f"checkpoint {later[0]} signs more entries than the {end} exported")
    newest = max(roots)
    if newest < end:
        raise _fail(newest, "unverified_entries", f"entries from {newest} on are after the newest checkpoint")
    return count


class _Worker:
    """The second process: it checks every other checkpoint signature, then hashes the second half of
    entries.jsonl, from a line boundary near the middle. The halves' compact ranges join in the first process.

    Started with fork where that is safe (no other threads, which a fork would not copy), else forkserver or
    spawn. If the process cannot start or dies, the first process does its share itself.
    """

    def __init__(self, path: Path, boundary: int, end: int) -> None:
        self.path = path
        self.boundary = boundary
        self.end = end
        self._process: Any = None
        self._connection: Any = None

    @classmethod
    def start(
        cls,
        path: Path,
        file_size: int,
        first: int,
        sizes: list[int],
        strict: bool,
        notes: Mapping[int, bytes],
        verifiers: Sequence[Verifier],
    ) -> _Worker | None:
        boundary = _line_start_after(path, file_size // 2)
        if not 0 < boundary < file_size:
            return None
        worker = cls(path, boundary, file_size)
        methods = multiprocessing.get_all_start_methods()
        if "fork" in methods and threading.active_count() == 1:
            method = "fork"
        else:
            method = "forkserver" if "forkserver" in methods else "spawn"
        # typeshed types a context chosen by name as BaseContext, which lacks Process.
        context: Any = multiprocessing.get_context(method)
        try:
            receiving, sending = context.Pipe(duplex=False)
            items = sorted(notes.items())[1::2]
            keys = [str(key) for key in verifiers]
            process = context.Process(
                target=_worker_main,
                args=(sending, str(path), boundary, file_size, first, sizes, strict, items, keys),
                daemon=True,
            )
            process.start()
            sending.close()
        except OSError:
            return None
        worker._process, worker._connection = process, receiving
        return worker

    def _receive(self) -> Any:
        if self._connection is None:
            return None
        try:
            return self._connection.recv()
        except (EOFError, OSError):
            self.stop()
            return None

    def signatures(self, items: list[tuple[int, bytes]], verifiers: Sequence[Verifier]) -> list[SignatureResult]:
        received = self._receive()
        return cast(list[SignatureResult], received) if received is not None else _check_signatures(items, verifiers)

    def part(self, index: int, sizes: list[int], strict: bool) -> _Part:
        received = self._receive()
        # The worker counted the lines of the first half itself; a disagreement would be a bug, not tampering
        # (both read the same bytes), and the first process then hashes the second half again.
        if isinstance(received, tuple) and received[0] == index:
            return cast(_Part, received[1])
        return _hash_part(self.path, self.boundary, self.end, index, sizes, strict)

    def stop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._process is not None:
            if self._process.is_alive():
                self._process.terminate()
            self._process.join()
            self._process = None


def _line_start_after(path: Path, offset: int) -> int:
    with path.open("rb") as data:
        data.seek(offset)
        data.readline()
        return data.tell()


def _worker_main(
    connection: Any,
    path: str,
    boundary: int,
    end: int,
    first: int,
    sizes: list[int],
    strict: bool,
    notes: list[tuple[int, bytes]],
    keys: list[str],
) -> None:
    with connection:
        connection.send(_check_signatures(notes, [parse_verifier_key(key) for key in keys]))
        # The part starts at the entry after every line of the first half. One buffer, reused: a fresh block
        # per read would cost the kernel a page fault per page.
        index = first
        buffer = bytearray(_BATCH_BYTES)
        with open(path, "rb", buffering=0) as data:
            remaining = boundary
            while remaining > 0:
                read = data.readinto(memoryview(buffer)[: min(remaining, len(buffer))])
                if not read:
                    break
                index += buffer.count(b"\n", 0, read)
                remaining -= read
        connection.send((index, _hash_part(Path(path), boundary, end, index, sizes, strict)))
