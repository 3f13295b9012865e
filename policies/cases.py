"""Decision tables (STYLE.md: policies tested as decision tables). Each case in `policies/cases/*.yaml`
gives a request, the facts and the clock, the flow and statute it tests, and the decision expected.
`broker policy test` and the unit tests run them through `run_cases`; `broker policy check` calls
`check_policy`.
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
    # effect; for a permit also basis, rule and fields_; optionally obligations, consent_id, exception_ground and
    # a reason code
    expect: Mapping[str, Any]


@dataclass(frozen=True)
class CaseResult:
    case: Case
    decision: Decision
    problems: tuple[str, ...]  # each a difference between the expected and the actual decision

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def name(self) -> str:
        return self.case.name

    @property
    def message(self) -> str:
        return f"{self.case.file} ({self.case.flow}, {self.case.statute}): {'; '.join(self.problems) or 'ok'}"


def check_policy(directory: str | Path | None = None) -> Policy:
    """Load and validate the policy files; raises `PolicyError` naming file, rule and field."""
    return load_policy(directory)


def run_cases(policy: Policy, directory: str | Path | None = None) -> list[CaseResult]:
    return [run_case(policy, case) for case in load_cases(directory)]


def run_case(policy: Policy, case: Case) -> CaseResult:
    decision = decide(case.request, case.facts, policy, case.now)
    basis, expect = decision.basis, case.expect
    actual: dict[str, object] = {
        "effect": decision.effect,
        "basis": basis.kind if basis else None,
        "rule": basis.rule_id if basis else None,
        "fields_": sorted(decision.fields),
        "obligations": list(decision.obligations),
        "consent_id": basis.consent_id if basis else None,
        "exception_ground": basis.exception_ground if basis else None,
    }
    problems = [
        f"{key.rstrip('_')}: expected {wanted!r}, got {actual[key]!r}"
        for key in actual
        if (wanted := expect.get(key)) is not None and (sorted(wanted) if key == "fields_" else wanted) != actual[key]
    ]
    codes = [r.code for r in decision.reasons]
    if "reason" in expect and expect["reason"] not in codes:
        problems.append(f"reason: expected {expect['reason']!r} among {codes!r}")
    return CaseResult(case, decision, tuple(problems))


def load_cases(directory: str | Path | None = None) -> list[Case]:
    folder = Path(directory) if directory is not None else CASES_DIR
    cases: list[Case] = []
    for path in sorted(folder.glob("*.yaml")):
        shown = display_path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError) as error:
            raise PolicyError(f"{shown}: {error}".replace("\n", " ")) from None
        data = load_case_file(raw, shown)
        for item in data["cases"]:
            if any(c.name == item["name"] for c in cases):
                raise PolicyError(f"{shown}: case {item['name']}: name: duplicate case name")
            now = item.get("now") or data["now"]  # the schema requires one or the other
            request, facts = request_from(item["request"]), facts_from(item["facts"] or {})
            cases.append(Case(item["name"], shown, item["flow"], item["statute"], now, request, facts, item["expect"]))
    return cases


def request_from(data: Mapping[str, Any]) -> DecisionRequest:
    """A DecisionRequest from a request validated by `schemas.policy.CaseRequestSchema`."""
    claim = data.get("exception")
    return DecisionRequest(**{**data, "exception": StatutoryException(**claim) if claim else None})


def facts_from(data: Mapping[str, Any]) -> Facts:
    """Facts from facts validated by `schemas.policy.CaseFactsSchema`."""
    sets = ("recipients", "categories", "purposes")
    consents = tuple(ConsentFact(**{**c, **{k: frozenset(c[k]) for k in sets}}) for c in data.get("consents", ()))
    age: int | None = data.get("person_age")
    minor = data.get("person_is_minor")
    return Facts(
        relationships=frozenset(data.get("relationships", ())),
        consents=consents,
        person_is_minor=bool(minor) if minor is not None else age is not None and age < 18,
        has_legal_representative=bool(data.get("has_legal_representative")),
        person_age=age,
    )
