"""The policy engine: `decide(request, facts, policy, now) -> Decision`, pure (DESIGN.md invariant 5), and the
policy it reads from `policies/rules/*.yaml`, tested by the decision tables in `policies/cases/*.yaml`."""

from policies.engine import decide
from policies.errors import PolicyError
from policies.loader import Policy, PortalEntry, Rule, load_policy, load_policy_files
from policies.model import (
    Basis,
    BasisKind,
    ConsentFact,
    Decision,
    DecisionRequest,
    Effect,
    Facts,
    Reason,
    StatutoryException,
)

__all__ = [
    "Basis",
    "BasisKind",
    "ConsentFact",
    "Decision",
    "DecisionRequest",
    "Effect",
    "Facts",
    "Policy",
    "PolicyError",
    "PortalEntry",
    "Reason",
    "Rule",
    "StatutoryException",
    "decide",
    "load_policy",
    "load_policy_files",
]
