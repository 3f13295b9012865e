"""verify_log against systematic tampering: every change to a stored log is found at the first affected entry,
with the kind of failure that names it. Also the `python -m audit verify-jsonl` command."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from audit import (
    EMPTY_ROOT,
    AuditError,
    AuditVerificationError,
    build_entry,
    entry_bytes,
    leaf_hash,
    root_hash,
    verify_log,
)
from audit.__main__ import main

Row = tuple[int, bytes, bytes]
SIZE = 10
T0 = datetime(2025, 5, 1, 8, 0, tzinfo=UTC)


def entry(index: int, **changes: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "index": index,
        "logged_at": T0 + timedelta(minutes=index),
        "event": "disclosure:permit",
        "request_id": f"req-{index}",
        "partner": "kisalli",
        "organisation": "kisalli",
        "actor_role": "individual_coach",
        "actor_commitment": None,
        "person_id": "p-6f1c",
        "category": "employment_plan",
        "purpose": "service_planning",
        "effect": "permit",
        "basis": {"kind": "statute", "statute": "703/2023 17 §"},
        "policy_version": "2025.1",
        "record_ids": [f"r-{index}"],
        "detail": {"records": 1},
    }
    return build_entry(**(arguments | changes))


def row(index: int, data: bytes) -> Row:
    return index, data, leaf_hash(data)


LOG = [row(i, entry_bytes(entry(i))) for i in range(SIZE)]
ROOT = root_hash([leaf for _, _, leaf in LOG])


def rewritten(position: int, data: bytes, *, fix_hash: bool = True) -> list[Row]:
    """The log with entry `position` replaced by `data`, its stored hash recomputed or left alone."""
    rows = list(LOG)
    stored = rows[position]
    rows[position] = row(position, data) if fix_hash else (position, data, stored[2])
    return rows


def expect_failure(
    rows: list[Row], kind: str, index: int, *, size: int | None = SIZE, root: bytes | None = ROOT
) -> AuditVerificationError:
    with pytest.raises(AuditVerificationError) as caught:
        verify_log(rows, expected_size=size, expected_root=root)
    assert (caught.value.kind, caught.value.index) == (kind, index), caught.value
    return caught.value


def test_an_untouched_log_verifies_to_its_size_and_root() -> None:
    result = verify_log(LOG, expected_size=SIZE, expected_root=ROOT)
    assert (result.size, result.root) == (SIZE, ROOT)
    assert verify_log(iter(LOG)) == result


def test_an_empty_log_has_the_empty_root() -> None:
    result = verify_log([], expected_size=0, expected_root=EMPTY_ROOT)
    assert (result.size, result.root) == (0, EMPTY_ROOT)
    expect_failure([], "size_mismatch", 0, size=1, root=None)


EDITED = LOG[4][1].replace(b'"effect":"permit"', b'"effect":"permiT"')
TAMPERING: dict[str, tuple[Callable[[], list[Row]], str, int]] = {
    "edit a byte, stored hash left alone": (
        lambda: rewritten(4, EDITED, fix_hash=False),
        "leaf_hash_mismatch",
        4,
    ),
    "edit a byte, stored hash fixed": (lambda: rewritten(4, EDITED), "root_mismatch", SIZE),
    "flip a bit of the stored hash": (
        lambda: [*LOG[:4], (4, LOG[4][1], bytes([LOG[4][2][0] ^ 1]) + LOG[4][2][1:]), *LOG[5:]],
        "leaf_hash_mismatch",
        4,
    ),
    "truncate the stored hash": (
        lambda: [*LOG[:4], (4, LOG[4][1], LOG[4][2][:31]), *LOG[5:]],
        "leaf_hash_mismatch",
        4,
    ),
    "break the JSON": (lambda: rewritten(4, LOG[4][1][:-1]), "entry_unparsable", 4),
    "break the JSON, stored hash left alone": (
        lambda: rewritten(4, LOG[4][1][:-1], fix_hash=False),
        "entry_unparsable",
        4,
    ),
    "delete the first row": (lambda: LOG[1:], "index_gap", 0),
    "delete a middle row": (lambda: LOG[:5] + LOG[6:], "index_gap", 5),
    "delete the last row": (lambda: LOG[:-1], "size_mismatch", SIZE - 1),
    "delete the first row and renumber the rest": (
        lambda: [(i, data, leaf) for i, (_, data, leaf) in enumerate(LOG[1:])],
        "index_mismatch",
        0,
    ),
    "swap two entries under their stored indices": (
        lambda: [*LOG[:2], (2, LOG[6][1], LOG[6][2]), *LOG[3:6], (6, LOG[2][1], LOG[2][2]), *LOG[7:]],
        "index_mismatch",
        2,
    ),
    "swap two whole rows": (lambda: [*LOG[:2], LOG[6], *LOG[3:6], LOG[2], *LOG[7:]], "index_gap", 2),
    "duplicate a row": (lambda: [*LOG[:4], LOG[3], *LOG[4:]], "index_gap", 4),
    "duplicate the last row": (lambda: [*LOG, LOG[-1]], "size_mismatch", SIZE),
    "duplicate an entry over the next one": (
        lambda: [*LOG[:4], (4, LOG[3][1], LOG[3][2]), *LOG[5:]],
        "index_mismatch",
        4,
    ),
    "change the index inside an entry, hash fixed": (
        lambda: rewritten(4, entry_bytes(entry(5) | {"logged_at": entry(4)["logged_at"]})),
        "index_mismatch",
        4,
    ),
    "append an entry past the checkpoint": (
        lambda: [*LOG, row(SIZE, entry_bytes(entry(SIZE)))],
        "size_mismatch",
        SIZE,
    ),
}


@pytest.mark.parametrize(("tamper", "kind", "index"), TAMPERING.values(), ids=TAMPERING.keys())
def test_tampering_is_found_at_the_first_affected_entry(tamper: Callable[[], list[Row]], kind: str, index: int) -> None:
    expect_failure(tamper(), kind, index)


def test_a_deleted_tail_is_found_by_the_root_alone() -> None:
    expect_failure(LOG[:-1], "root_mismatch", SIZE - 1, size=None)


def test_a_consistent_rewrite_is_invisible_without_a_checkpoint() -> None:
    # This is why checkpoints are signed and kept outside: the rows alone prove only their own consistency.
    assert verify_log(rewritten(4, EDITED)).size == SIZE
    assert verify_log(LOG[:-1]).size == SIZE - 1


def test_a_wrong_expected_root_is_a_root_mismatch() -> None:
    expect_failure(LOG, "root_mismatch", SIZE, root=leaf_hash(b"other"))


@pytest.mark.parametrize(
    "spelling",
    [
        pytest.param(lambda d: d.replace(b'":', b'": ', 1), id="whitespace"),
        pytest.param(lambda d: d + b"\n", id="trailing newline"),
        pytest.param(lambda d: b" " + d, id="leading space"),
        pytest.param(lambda d: d + b"x", id="trailing garbage"),
        pytest.param(lambda d: d[:-1], id="truncated"),
        pytest.param(lambda d: b"", id="empty"),
        pytest.param(
            lambda d: json.dumps(dict(reversed(json.loads(d).items())), separators=(",", ":")).encode(),
            id="member order",
        ),
        pytest.param(lambda d: d.replace(b"permit", b"permi\\u0074", 1), id="needless escape"),
        pytest.param(lambda d: d.replace(b"/", b"\\/", 1), id="escaped solidus"),
        pytest.param(lambda d: d.replace("§".encode(), b"\\u00a7", 1), id="escaped non-ascii"),
        pytest.param(lambda d: b'{"v":1,' + d[1:], id="duplicate member"),
        pytest.param(lambda d: b"\xef\xbb\xbf" + d, id="byte order mark"),
        pytest.param(lambda d: d.decode().encode("utf-16"), id="utf-16"),
        pytest.param(lambda d: d.replace(b"kisalli", b"kis\xffalli", 1), id="invalid utf-8"),
        pytest.param(lambda d: d.replace(b'"index":4', b'"index":4.0'), id="float index"),
        pytest.param(lambda d: d.replace(b'"index":4', b'"index":4e0'), id="exponent index"),
        pytest.param(lambda d: d.replace(b'"records":1', b'"records":NaN'), id="NaN"),
        pytest.param(lambda d: d.replace(b'"records":1', b'"records":9007199254740992'), id="unsafe integer"),
        pytest.param(lambda d: d.replace(b'"records":1', b'"records":' + b"[" * 100_000 + b"]" * 100_000), id="deep"),
        pytest.param(lambda d: b"[" + d + b"]", id="array"),
        pytest.param(lambda d: b"null", id="null"),
    ],
)
def test_any_second_spelling_of_an_entry_is_unparsable(spelling: Callable[[bytes], bytes]) -> None:
    expect_failure(rewritten(4, spelling(LOG[4][1])), "entry_unparsable", 4)


@pytest.mark.parametrize(
    "inner", [{"index": True}, {"index": "4"}, {"index": None}, {"index": 3}, {"index": -4}], ids=str
)
def test_an_entry_must_carry_its_own_position(inner: dict[str, Any]) -> None:
    changed = json.loads(LOG[4][1]) | inner
    if changed["index"] is None:
        del changed["index"]
    expect_failure(rewritten(4, entry_bytes(changed)), "index_mismatch", 4)


def test_every_single_bit_flip_in_an_entry_is_found_at_that_entry() -> None:
    data = LOG[4][1]
    kinds = set()
    for position in range(len(data)):
        for bit in range(8):
            flipped = data[:position] + bytes([data[position] ^ (1 << bit)]) + data[position + 1 :]
            with pytest.raises(AuditVerificationError) as caught:
                verify_log(rewritten(4, flipped, fix_hash=False), expected_size=SIZE, expected_root=ROOT)
            assert caught.value.index == 4
            kinds.add(caught.value.kind)
            # With the stored hash rewritten too, a flip that keeps the entry canonical survives to the root.
            with pytest.raises(AuditVerificationError) as caught:
                verify_log(rewritten(4, flipped), expected_size=SIZE, expected_root=ROOT)
            assert (caught.value.index, caught.value.kind) in {
                (4, "entry_unparsable"),
                (4, "index_mismatch"),
                (SIZE, "root_mismatch"),
            }
    assert kinds == {"entry_unparsable", "index_mismatch", "leaf_hash_mismatch"}


def test_verification_streams_and_stops_at_the_first_problem() -> None:
    def rows() -> Iterator[Row]:
        yield from LOG[:3]
        yield (3, LOG[3][1], leaf_hash(b"wrong"))
        raise AssertionError("read past the first problem")

    with pytest.raises(AuditVerificationError) as caught:
        verify_log(rows())
    assert (caught.value.kind, caught.value.index) == ("leaf_hash_mismatch", 3)


def test_errors_do_not_quote_entry_content() -> None:
    leaked = LOG[4][1].replace(b'"records":1', b'"records":"131052-308T"')
    error = expect_failure(rewritten(4, leaked, fix_hash=False), "leaf_hash_mismatch", 4)
    assert "131052" not in str(error)
    assert isinstance(error, AuditError)
    assert error.code == "audit_verification_failed"
    assert str(error).startswith("entry 4: leaf_hash_mismatch: ")


def test_a_negative_expected_size_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="expected_size"):
        verify_log(LOG, expected_size=-1)


def write_jsonl(path: Path, lines: list[bytes], end: bytes = b"\n") -> Path:
    path.write_bytes(b"\n".join(lines) + end)
    return path


def test_verify_jsonl_prints_size_and_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_jsonl(tmp_path / "entries.jsonl", [data for _, data, _ in LOG])
    assert main(["verify-jsonl", str(path)]) == 0
    assert capsys.readouterr().out == f"size {SIZE}\nroot {ROOT.hex()}\n"


def test_verify_jsonl_accepts_a_missing_final_newline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_jsonl(tmp_path / "entries.jsonl", [data for _, data, _ in LOG], end=b"")
    assert main(["verify-jsonl", str(path)]) == 0
    assert f"root {ROOT.hex()}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([data for _, data, _ in LOG[:3]] + [data for _, data, _ in LOG[4:]], "entry 3: index_mismatch"),
        ([data for _, data, _ in LOG[:2]] + [b"", LOG[2][1]], "entry 2: entry_unparsable"),
        ([data + b"\r" for _, data, _ in LOG], "entry 0: entry_unparsable"),
    ],
    ids=["deleted line", "blank line", "CRLF"],
)
def test_verify_jsonl_names_the_first_bad_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[bytes], message: str
) -> None:
    path = write_jsonl(tmp_path / "entries.jsonl", lines)
    assert main(["verify-jsonl", str(path)]) == 1
    assert message in capsys.readouterr().err


def test_verify_jsonl_reports_an_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify-jsonl", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_python_dash_m_audit_runs_the_command(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "entries.jsonl", [data for _, data, _ in LOG])
    done = subprocess.run(
        [sys.executable, "-m", "audit", "verify-jsonl", str(path)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, f"size {SIZE}\nroot {ROOT.hex()}\n")
