"""`broker policy eval`: a what-if decision from JSON — the request, the facts and the clock in, the decision
out — for a DPO or a partner developer asking "would this be permitted, and why not?"."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError

from policies.cases import facts_from, request_from
from policies.engine import decide
from policies.loader import Policy
from policies.model import Decision
from schemas.policy import EvaluationSchema


def evaluate_json(policy: Policy, document: object) -> dict[str, Any]:
    """`{"request": {...}, "facts": {...}, "now": "2025-06-01T09:00:00Z"}` → the decision as JSON-ready data.
    The request and facts take the decision tables' form. Raises ValueError for a malformed document."""
    try:
        data = EvaluationSchema().load(document)  # type: ignore[arg-type]  # the schema checks the type
    except ValidationError as error:
        raise ValueError(str(error.messages)) from None
    decision = decide(request_from(data["request"]), facts_from(data["facts"] or {}), policy, data["now"])
    return decision_json(decision)


def decision_json(decision: Decision) -> dict[str, Any]:
    return {
        "effect": decision.effect,
        "basis": decision.basis.as_dict() if decision.basis else None,
        "fields": list(decision.fields),
        "obligations": list(decision.obligations),
        "reasons": [
            {"rule": r.rule_id, "applies": r.applies, "code": r.code, "detail": r.detail} for r in decision.reasons
        ],
        "policy_version": decision.policy_version,
        "extra": dict(decision.extra),
    }
