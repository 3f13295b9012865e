"""The policy engine's values: what is asked, what is known, what is decided.

Plain frozen dataclasses; no I/O (DESIGN.md invariant 5). Times are aware UTC datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Effect = Literal["permit", "deny"]
BasisKind = Literal["statute", "consent", "exception"]


@dataclass(frozen=True)
class StatutoryException:
    """A statutory exception the requester asserts (issue #3): `ground` is one of the policy's exception
    ids."""

    ground: str
    justification: str


@dataclass(frozen=True)
class DecisionRequest:
    requester_org: str
    requester_org_type: str
    requester_role: str
    person_id: str
    category: str
    purpose: str
    # The organisation that deposited the record asked for. None asks "would any source be permitted" (a
    # dry run when the person has no record of the category yet).
    source_org: str | None = None
    source_org_type: str | None = None
    exception: StatutoryException | None = None


@dataclass(frozen=True)
class ConsentFact:
    consent_id: str
    version: int
    status: str  # "active" | "withdrawn" | "expired" | "superseded"
    recipients: frozenset[str]  # organisation ids allowed to receive
    categories: frozenset[str]
    purposes: frozenset[str]
    valid_from: datetime
    valid_until: datetime | None = None
    explicit: bool = False
    written: bool = False
    # A case-bound consent ends when this organisation's service relationship with the person ends.
    bound_to_org: str | None = None
    given_by: str = "person"  # "person" | "representative"
    # The representative's mandate: "custodian" | "guardian_personal" | "continuing_poa_personal" | …
    mandate: str | None = None
    withdrawn_at: datetime | None = None
    requester_org: str | None = None


@dataclass(frozen=True)
class Facts:
    """What the broker knows about the person at decision time, read in the disclosure transaction."""

    relationships: frozenset[str] = frozenset()  # organisation ids with an active service relationship
    consents: tuple[ConsentFact, ...] = ()
    person_is_minor: bool = False
    has_legal_representative: bool = False
    # Whole years at decision time; None when unknown. A rule with an age condition (F14b, Youth Act 1285/2016
    # 11 § 4 mom.: under 29) never applies to a person of unknown age.
    person_age: int | None = None


@dataclass(frozen=True)
class Basis:
    kind: BasisKind
    rule_id: str  # e.g. "F7"
    reference: str  # the ground that lifts secrecy: statute and section, e.g. "703/2023 53 § 3 mom."
    lawful_basis: str  # GDPR article(s), e.g. "GDPR 6(1)(e), 9(2)(h)"
    consent_id: str | None = None
    consent_version: int | None = None
    exception_ground: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "rule": self.rule_id,
            "reference": self.reference,
            "lawful_basis": self.lawful_basis,
            "consent_id": self.consent_id,
            "consent_version": self.consent_version,
            "exception_ground": self.exception_ground,
        }


@dataclass(frozen=True)
class Reason:
    """Why one rule did or did not apply. `code` is stable (e.g. "wrong_purpose", "no_relationship",
    "consent_missing_recipient", "consent_withdrawn", "forbidden", "permit"), `detail` is for humans."""

    rule_id: str
    applies: bool
    code: str
    detail: str


@dataclass(frozen=True)
class Decision:
    effect: Effect
    basis: Basis | None
    fields: tuple[str, ...]
    obligations: tuple[str, ...]
    reasons: tuple[Reason, ...]
    policy_version: str
    extra: dict[str, object] = field(default_factory=dict, compare=False)

    @property
    def permitted(self) -> bool:
        return self.effect == "permit"
