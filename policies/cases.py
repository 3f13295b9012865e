"""Decision tables (STYLE.md: policies tested as decision tables). Each case in `policies/cases/*.yaml` gives a
request, the facts and the clock, the flow and statute it tests, and the decision expected. `broker policy test`
and the unit tests run them through `run_cases`; `broker policy check` calls `check_policy`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from policies.engine import decide
from policies.errors import PolicyError
from policies.loader import PACKAGE_DIR, Policy, display_path, load_policy
from policies.model import ConsentFact, Decision, DecisionRequest, Facts, StatutoryException
from schemas.policy import load_case_file

CASES_DIR = PACKAGE_DIR / "cases"


@dataclass(frozen=True)
class Case:
    name: str
    file: str
    flow: str
    statute: str
    now: datetime
    request: DecisionRequest
    facts: Facts
    expect: Mapping[str, Any]  # effect, and for a permit basis, rule, fields; optionally obligations, consent_id, reason


@dataclass(frozen=True)
class CaseResult:
    case: Case
    decision: Decision
    problems: tuple[str, ...]  # each a difference between the expected and the actual decision

    @property
    def passed(self) -> bool:
        return not self.problems


def check_policy(directory: str | Path | None = None) -> Policy:
    """Load and validate the policy files; raises `PolicyError` naming file, rule and field."""
    return load_policy(directory)


def run_cases(policy: Policy, directory: str | Path | None = None) -> list[CaseResult]:
    return [run_case(policy, case) for case in load_cases(directory)]


def run_case(policy: Policy, case: Case) -> CaseResult:
    decision = decide(case.request, case.facts, policy, case.now)
    expect, problems = case.expect, []
    basis = decision.basis
    actual: dict[str, object] = {
        "effect": decision.effect,
        "basis": basis.kind if basis else None,
        "rule": basis.rule_id if basis else None,
        "fields": list(decision.fields),
        "obligations": list(decision.obligations),
        "consent_id": basis.consent_id if basis else None,
    }
    for key, value in actual.items():
        wanted = expect.get("fields_" if key == "fields" else key)
        if key == "fields" and wanted is not None:
            wanted = sorted(wanted)
        if wanted is not None and wanted != value:
            problems.append(f"{key}: expected {wanted!r}, got {value!r}")
    codes = [r.code for r in decision.reasons]
    if "reason" in expect and expect["reason"] not in codes:
        problems.append(f"reason: expected {expect['reason']!r} among {codes!r}")
    return CaseResult(case, decision, tuple(problems))


def load_cases(directory: str | Path | None = None) -> list[Case]:
    folder = Path(directory) if directory is not None else CASES_DIR
    cases: list[Case] = []
    seen: set[str] = set()
    for path in sorted(folder.glob("*.yaml")):
        shown = display_path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError) as error:
            raise PolicyError(f"{shown}: {error}".replace("\n", " ")) from None
        data = load_case_file(raw, shown)
        for item in data["cases"]:
            if item["name"] in seen:
                raise PolicyError(f"{shown}: case {item['name']}: name: duplicate case name")
            seen.add(item["name"])
            cases.append(_case(item, data.get("now"), shown))
    return cases


def _case(item: Mapping[str, Any], default_now: datetime | None, file: str) -> Case:
    request = dict(item["request"])
    if request["exception"] is not None:
        request["exception"] = StatutoryException(**request["exception"])
    facts = dict(item["facts"] or {})
    consents = tuple(
        ConsentFact(**{k: frozenset(v) if k in ("recipients", "categories", "purposes") else v for k, v in c.items()})
        for c in facts.pop("consents", ())
    )
    now = item.get("now") or default_now
    assert now is not None  # noqa: S101 — the schema requires a clock per case or per file
    return Case(
        name=item["name"],
        file=file,
        flow=item["flow"],
        statute=item["statute"],
        now=now,
        request=DecisionRequest(**request),
        facts=Facts(
            relationships=frozenset(facts.pop("relationships", ())), consents=consents, **facts
        ),
        expect=item["expect"],
    )
