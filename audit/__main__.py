"""Verify the audit log offline, without the application or its database.

- `python -m audit verify DIR [--strict] [--key KEY]` — an export directory (audit/export.py): every checkpoint
  signature, and the entries against every signed root. Prints "ok: N entries, M checkpoints, root <hex>".
- `python -m audit verify-entry FILE --key KEY` — one entry's proof bundle, JSON:
  `{"entry": "<canonical entry>", "index": i, "tree_size": n, "inclusion_proof": ["<base64>", …],
  "checkpoint": "<signed note>"}`: the checkpoint's signature, then the entry's RFC 9162 inclusion proof
  against the signed root.
- `python -m audit verify-jsonl FILE` — a file of canonical entries, one per line: prints the tree size and
  root; exit 1 names the first bad entry.

KEY is a verifier key (`<name>+<key id>+<base64 key>`) or a file of them, one per line. Exit status: 0 when
verified, 1 when verification fails ("FAIL at index I: <kind>: <message>"), 2 for a usage error or an input that
cannot be read.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from audit.canonical import canonical_json
from audit.errors import AuditVerificationError, CanonicalisationError
from audit.export import verify_export
from audit.merkle import leaf_hash
from audit.note import NoteError, Verifier, open_checkpoint, parse_verifier_key
from audit.proofs import ProofError, verify_inclusion
from audit.verify import verify_log


class _UsageError(Exception):
    """Bad arguments or unreadable input: exit status 2."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m audit", description="Verify the audit log offline.")
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("verify", help="verify an export directory (entries, checkpoints, keys)")
    export.add_argument("directory", type=Path)
    export.add_argument("--strict", action="store_true", help="also check every entry's canonical form and index")
    export.add_argument(
        "--key", help="a verifier key you trust, or a file of them (default: the export's own verifier.key)"
    )
    entry = commands.add_parser("verify-entry", help="verify one entry's inclusion proof against a checkpoint")
    entry.add_argument("file", type=Path)
    entry.add_argument("--key", required=True, help="a verifier key, or a file of them, one per line")
    jsonl = commands.add_parser("verify-jsonl", help="verify a JSONL file of canonical entries")
    jsonl.add_argument("file", type=Path)
    args = parser.parse_args(argv)

    try:
        if args.command == "verify":
            return _verify(args.directory, args.strict, args.key)
        if args.command == "verify-entry":
            return _verify_entry(args.file, args.key)
        return _verify_jsonl(args.file)
    except _UsageError as error:
        print(error, file=sys.stderr)
        return 2


def _fail(index: int, kind: str, message: str) -> int:
    print(f"FAIL at index {index}: {kind}: {message}", file=sys.stderr)
    return 1


def _keys(argument: str) -> list[Verifier]:
    try:
        return [parse_verifier_key(argument)]
    except NoteError:
        pass
    path = Path(argument)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        raise _UsageError(f"--key: {argument} is neither a verifier key nor a readable file of them") from None
    try:
        keys = [parse_verifier_key(line) for line in lines if line]
    except NoteError as error:
        raise _UsageError(f"--key: {path.name}: {error.message}") from None
    if not keys:
        raise _UsageError(f"--key: {path.name} holds no verifier key")
    return keys


def _verify(directory: Path, strict: bool, key: str | None) -> int:
    verifiers = _keys(key) if key is not None else None
    try:
        result = verify_export(directory, strict=strict, verifiers=verifiers)
    except OSError as error:
        raise _UsageError(f"cannot read {error.filename or directory}: {error.strerror or error}") from None
    except AuditVerificationError as error:
        return _fail(error.index, error.kind, error.message)
    print(f"ok: {result.entries} entries, {result.checkpoints} checkpoints, root {result.root.hex()}")
    if verifiers is None:
        # The export's own keys show it is internally consistent, not that the broker's key signed it.
        print("checked against the export's own verifier.key; use --key to name a key you trust", file=sys.stderr)
    return 0


def _verify_entry(path: Path, key: str) -> int:
    verifiers = _keys(key)
    bundle = _bundle(path)
    index, size = bundle["index"], bundle["tree_size"]
    try:
        checkpoint = open_checkpoint(bundle["checkpoint"], verifiers)
    except NoteError as error:
        return _fail(index, error.kind, f"checkpoint: {error.message}")
    if checkpoint.size != size:
        return _fail(
            index, "size_mismatch", f"the proof is for tree size {size}, the checkpoint signs {checkpoint.size}"
        )
    data = bundle["entry"].encode("utf-8")
    try:
        entry = json.loads(data)
        canonical = canonical_json(entry) == data
    except (ValueError, RecursionError, CanonicalisationError):
        entry, canonical = None, False
    if not isinstance(entry, dict) or not canonical:
        return _fail(index, "entry_unparsable", "the entry is not a canonical JSON object (RFC 8785)")
    inner = entry.get("index")
    if isinstance(inner, bool) or inner != index:
        return _fail(index, "index_mismatch", "the entry's own index differs from the index the proof is for")
    try:
        verify_inclusion(leaf_hash(data), index, size, bundle["inclusion_proof"], checkpoint.root)
    except ProofError as error:
        return _fail(index, error.kind, error.message)
    print(f"ok: entry {index} is in {checkpoint.origin} at tree size {size}, root {checkpoint.root.hex()}")
    return 0


def _bundle(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_bytes())
    except OSError as error:
        raise _UsageError(f"cannot read {path}: {error.strerror}") from None
    except ValueError:
        raise _UsageError(f"{path.name} is not JSON") from None
    members = ("entry", "index", "tree_size", "inclusion_proof", "checkpoint")
    if not isinstance(document, dict) or set(document) != set(members):
        raise _UsageError(f"{path.name}: a proof bundle has exactly the members {', '.join(members)}")
    for name in ("entry", "checkpoint"):
        if not isinstance(document[name], str):
            raise _UsageError(f"{path.name}: {name} must be a string")
    for name in ("index", "tree_size"):
        value = document[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _UsageError(f"{path.name}: {name} must be a non-negative integer")
    if not isinstance(document["inclusion_proof"], list):
        raise _UsageError(f"{path.name}: inclusion_proof must be a list")
    proof = [_unbase64(element) for element in document["inclusion_proof"]]
    if not all(proof):
        raise _UsageError(f"{path.name}: inclusion_proof must hold base64 hashes")
    return {**document, "inclusion_proof": proof}


def _unbase64(text: object) -> bytes:
    """Standard base64 (RFC 4648 §4) decoded, or b"" for anything else."""
    if not isinstance(text, str):
        return b""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return b""


def _verify_jsonl(path: Path) -> int:
    try:
        with path.open("rb") as lines:
            result = verify_log(_rows(lines))
    except OSError as error:
        print(f"cannot read {path}: {error.strerror}", file=sys.stderr)
        return 2
    except AuditVerificationError as error:
        print(f"FAILED at entry {error.index}: {error.kind}: {error.message}", file=sys.stderr)
        return 1
    print(f"size {result.size}")
    print(f"root {result.root.hex()}")
    return 0


def _rows(lines: Iterable[bytes]) -> Iterator[tuple[int, bytes, bytes]]:
    # The file holds no stored hashes, so each row's leaf hash is computed here; what is checked is that every
    # line is canonical and carries its own line number as index, and the root the lines hash to.
    for number, line in enumerate(lines):
        data = line.removesuffix(b"\n")
        yield number, data, leaf_hash(data)


if __name__ == "__main__":
    sys.exit(main())
