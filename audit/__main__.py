"""`python -m audit verify-jsonl FILE`: check a file of canonical entries, one per line, and print the tree
size and root; exit 1 names the first bad entry. (`verify DIR`, for a full export, comes later.)"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from audit.errors import AuditVerificationError
from audit.merkle import leaf_hash
from audit.verify import verify_log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m audit", description="Verify the audit log offline.")
    commands = parser.add_subparsers(dest="command", required=True)
    jsonl = commands.add_parser("verify-jsonl", help="verify a JSONL file of canonical entries")
    jsonl.add_argument("file", type=Path)
    args = parser.parse_args(argv)

    try:
        with args.file.open("rb") as lines:
            result = verify_log(_rows(lines))
    except OSError as error:
        print(f"cannot read {args.file}: {error.strerror}", file=sys.stderr)
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
