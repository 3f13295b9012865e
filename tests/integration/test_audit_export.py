"""`broker audit export` and `python -m audit verify DIR` (issue #5 item 4): a whole export and slices of the log
verify offline against the signed checkpoints; an edited export names the first bad index."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from audit import AuditVerificationError
from audit.export import verify_export
from broker.services.audit_export import ExportError, export_log
from broker.services.sequencer import Sequencer
from tests.support import Env


def _log(env: Env, rounds: int = 3) -> int:
    broker = dataclasses.replace(env.broker, settings=dataclasses.replace(env.broker.settings, audit_batch_size=4))
    size = 0
    for _ in range(rounds):
        for _ in range(3):
            env.serve(env.person(), "kisalli")
        size = Sequencer(broker).run_once().size
    return size


def test_a_whole_export_verifies_offline(env: Env, tmp_path: Path) -> None:
    size = _log(env)
    summary = export_log(env.broker, tmp_path / "export")
    assert f"{size} entries" in summary
    result = verify_export(tmp_path / "export", strict=True)
    assert (result.first, result.entries, result.size) == (0, size, size)
    assert result.checkpoints >= 3
    run = subprocess.run(
        [sys.executable, "-m", "audit", "verify", str(tmp_path / "export")], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"ok: {size} entries")


@pytest.mark.parametrize("bounds", [(0, 5), (3, 11), (7, None)])
def test_a_slice_verifies_against_the_newest_checkpoint(
    env: Env, tmp_path: Path, bounds: tuple[int, int | None]
) -> None:
    size = _log(env)
    first, end = bounds
    export_log(env.broker, tmp_path / "slice", first=first, end=end)
    result = verify_export(tmp_path / "slice")
    assert result.first == first and result.entries == (end if end is not None else size) - first
    assert result.size == size


def test_an_edited_export_names_the_first_bad_index(env: Env, tmp_path: Path) -> None:
    _log(env)
    export_log(env.broker, tmp_path / "export")
    entries = tmp_path / "export" / "entries.jsonl"
    lines = entries.read_bytes().split(b"\n")
    lines[4] = lines[4].replace(b'"event":"', b'"event":"x', 1)
    entries.write_bytes(b"\n".join(lines))
    with pytest.raises(AuditVerificationError) as failure:
        verify_export(tmp_path / "export")
    assert failure.value.kind == "root_mismatch"
    run = subprocess.run(
        [sys.executable, "-m", "audit", "verify", str(tmp_path / "export")], capture_output=True, text=True, check=False
    )
    assert run.returncode == 1 and "FAIL at index" in (run.stdout + run.stderr)


def test_export_refuses_bounds_beyond_the_signed_log(env: Env, tmp_path: Path) -> None:
    size = _log(env, rounds=1)
    with pytest.raises(ExportError, match="from <= to"):
        export_log(env.broker, tmp_path / "bad", first=2, end=size + 1)


def test_the_cli_exports(env: Env, tmp_path: Path) -> None:
    _log(env, rounds=1)
    settings = env.broker.settings
    environment = {
        "BROKER_MODE": "test",
        "BROKER_DATABASE_URL": settings.database_url,
        "BROKER_INSTANCE_PATH": str(settings.instance_path),
        "BROKER_ISSUER": settings.issuer,
        "PATH": "/usr/bin:/bin",
    }
    run = subprocess.run(
        [sys.executable, "-m", "broker.cli", "audit", "export", str(tmp_path / "cli")],
        capture_output=True,
        text=True,
        check=False,
        env=environment,
    )
    assert run.returncode == 0, run.stderr
    assert verify_export(tmp_path / "cli").entries > 0
    again = subprocess.run(
        [sys.executable, "-m", "broker.cli", "audit", "export", str(tmp_path / "cli")],
        capture_output=True,
        text=True,
        check=False,
        env=environment,
    )
    assert again.returncode == 1 and "must be empty" in again.stderr
