"""The HTTP benchmarks' own checks (bench/harness.py, bench/scale.py, bench/cpu_budget.py): a run that saw an error
response, a socket error, a replayed DPoP proof, a lost disclosure or a log that does not verify must fail, and a
seed manifest for another request must be refused. No server, no database: the functions that judge a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.cpu_budget import Budgets
from bench.harness import ASK, PARTNER, BenchError, disclosure_checks, failed_checks, summarise
from bench.scale import manifest_persons, sink_origin


def wrk_run(rate: float, p99_us: int, **errors: int) -> dict[str, Any]:
    counts = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0} | errors
    return {
        "requests": int(rate * 10),
        "requests_per_s": rate,
        "errors": counts,
        "non_2xx": 0,
        "proofs_exhausted": 0,
        "latency_us": {"p50": p99_us // 4, "p90": p99_us // 2, "p95": p99_us // 2, "p99": p99_us, "max": p99_us},
        "command": "wrk -t1 -c8 -d10s",
    }


def clean_checks(**changes: Any) -> dict[str, Any]:
    summary = summarise([wrk_run(100.0, 20_000)])
    checks = disclosure_checks(summary, sent=1000, committed={"permit": 1003, "deny": 0})
    checks |= {"audit_verify": "audit log verified", "audit_verify_ok": True}
    return checks | changes


def test_a_clean_run_passes_every_check() -> None:
    assert failed_checks(clean_checks()) == []


@pytest.mark.parametrize(
    ("change", "failure"),
    [
        ({"non_2xx": 1}, "non_2xx"),
        ({"socket_errors": 2}, "socket_errors"),
        ({"dpop_proofs_sent_twice": 1}, "dpop_proofs_sent_twice"),
        ({"denies_committed": 1}, "denies_committed"),
        ({"permits_committed": 999}, "permits_committed < disclosures_counted_by_wrk"),
        ({"audit_verify_ok": False}, "audit_verify"),
    ],
)
def test_each_kind_of_failure_fails_the_run(change: dict[str, Any], failure: str) -> None:
    assert failed_checks(clean_checks(**change)) == [failure]


def test_warm_up_errors_count_against_the_run() -> None:
    run = wrk_run(100.0, 20_000) | {"warmup_non_2xx": 3, "warmup_socket_errors": 1, "warmup_proofs_exhausted": 2}
    summary = summarise([run])
    assert (summary["non_2xx"], summary["socket_errors"], summary["proofs_exhausted"]) == (3, 1, 2)


def test_the_median_run_stands_for_the_endpoint_and_each_percentile_has_its_median() -> None:
    summary = summarise([wrk_run(300.0, 30_000), wrk_run(100.0, 10_000), wrk_run(200.0, 50_000, read=1)])
    assert summary["requests_per_s"] == 200.0
    assert summary["p99_ms"] == 50.0  # the run with the median rate
    assert summary["median_over_runs_ms"]["p99"] == 30.0  # the median of the three p99s
    assert summary["socket_errors"] == 1


def write_manifest(tmp_path: Path, persons: list[Any], **disclosure: Any) -> Path:
    path = tmp_path / "seed-manifest.json"
    body = {"category": ASK["category"], "purpose": ASK["purpose"]} | disclosure.pop("body", {})
    document = {"disclosure": {"client_id": PARTNER, "body": body, **disclosure}, "persons": persons}
    path.write_text(json.dumps(document))
    return path


def test_a_manifest_gives_its_persons(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, [{"person_id": "a", "x": 1}, {"person_id": "b"}])
    assert manifest_persons(path) == ["a", "b"]


@pytest.mark.parametrize(
    ("persons", "disclosure", "message"),
    [
        ([], {}, "no persons"),
        ([{"person_id": "a"}, {"person_id": "a"}], {}, "listed twice"),
        ([{"name": "a"}], {}, "without a person_id"),
        ([{"person_id": "a"}], {"client_id": "kela"}, "ready for"),
        ([{"person_id": "a"}], {"body": {"purpose": "other"}}, "ready for"),
    ],
)
def test_a_manifest_for_another_request_is_refused(
    tmp_path: Path, persons: list[Any], disclosure: dict[str, Any], message: str
) -> None:
    with pytest.raises(BenchError, match=message):
        manifest_persons(write_manifest(tmp_path, persons, **disclosure))


def test_a_seeded_log_is_served_under_the_origin_its_checkpoints_name(tmp_path: Path) -> None:
    sink = tmp_path / "checkpoints"
    sink.mkdir()
    (sink / "00000000000000000027.note").write_text("old.example/audit-log\n27\nAAAA\n\n— sig\n")
    (sink / "latest.note").write_text("bench.invalid/persons-10/audit-log\n100\nBBBB\n\n— sig\n")
    assert sink_origin(tmp_path) == "bench.invalid/persons-10/audit-log"
    (sink / "latest.note").unlink()
    assert sink_origin(tmp_path) == "old.example/audit-log"
    for note in sink.iterdir():
        note.unlink()
    with pytest.raises(BenchError, match="no checkpoint"):
        sink_origin(tmp_path)


def test_budget_use_is_the_difference_of_two_readings() -> None:
    before = {"wrk": {"cpu_ns": 1_000_000_000, "nr_periods": 100, "nr_throttled": 0, "throttled_time": 0}}
    after = {"wrk": {"cpu_ns": 3_000_000_000, "nr_periods": 600, "nr_throttled": 50, "throttled_time": 400_000_000}}
    assert Budgets.delta(before, after, 10.0) == {
        "wrk": {"cores_used": 0.2, "throttled_periods_pct": 10.0, "throttled_s": 0.4}
    }
