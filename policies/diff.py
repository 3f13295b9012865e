"""What would change under a new policy version (`broker policy diff OLD NEW`).

Both versions decide the same requests — the decision tables, and a generated request set that covers the
whole vocabulary: every organisation type × each of its roles × every source organisation type (and "any
source", the dry run) × every category × every purpose, in a handful of fact situations. Every request whose
decision differs is reported: the effect, the basis (kind and rule), the secrecy ground or lawful basis it
cites, the fields, or the obligations.

Pure: policies, cases and the clock in, a `PolicyDiff` out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from policies.cases import Case
from policies.engine import decide
from policies.loader import Policy
from policies.model import ConsentFact, Decision, DecisionRequest, Facts, StatutoryException

ASPECTS = ("effect", "basis", "reference", "fields", "obligations")
# Reasons that only say a rule was not for this requester or source; a denial is better explained by the others.
_NOT_FOR_THIS = frozenset({"wrong_org_type", "wrong_role", "wrong_source"})
ADULT_AGE, YOUNG_ADULT_AGE, MINOR_AGE = 35, 24, 16


@dataclass(frozen=True)
class Situation:
    """One fact situation of the generated request set. Consents, when there are any, name exactly the
    requesting organisation, the category and the purpose asked for, and are valid now."""

    name: str
    description: str
    relationship: bool = False  # the requester serves the person now
    person_age: int | None = None
    consent: bool = False  # the person's own consent (explicit)
    written: bool = False
    custodian: bool = False  # a custodian's consent too (explicit, and written when `written`)
    exception: str | None = None  # a statutory exception the requester asserts

    def facts(self, requester: str, category: str, purpose: str, now: datetime) -> Facts:
        def consent(consent_id: str, **extra: object) -> ConsentFact:
            return ConsentFact(
                consent_id=consent_id,
                version=1,
                status="active",
                recipients=frozenset({requester}),
                categories=frozenset({category}),
                purposes=frozenset({purpose}),
                valid_from=now - timedelta(days=30),
                explicit=True,
                written=self.written,
                **extra,  # type: ignore[arg-type]
            )

        consents = ((consent("c-person"),) if self.consent else ()) + (
            (consent("c-custodian", given_by="representative", mandate="custodian"),) if self.custodian else ()
        )
        return Facts(
            relationships=frozenset({requester}) if self.relationship else frozenset(),
            consents=consents,
            person_is_minor=self.person_age is not None and self.person_age < 18,
            person_age=self.person_age,
        )


def situations(exceptions: Sequence[str]) -> tuple[Situation, ...]:
    fixed = (
        Situation("none", "no facts: no service relationship, no consent, age unknown"),
        Situation("relationship", f"a service relationship only; an adult ({ADULT_AGE})", True, ADULT_AGE),
        Situation(
            "young_adult", f"a service relationship only; a young adult ({YOUNG_ADULT_AGE})", True, YOUNG_ADULT_AGE
        ),
        Situation(
            "explicit_consent",
            f"a service relationship and the person's explicit consent; an adult ({ADULT_AGE})",
            True,
            ADULT_AGE,
            consent=True,
        ),
        Situation(
            "written_consent",
            f"a service relationship and the person's explicit, written consent; an adult ({ADULT_AGE})",
            True,
            ADULT_AGE,
            consent=True,
            written=True,
        ),
        Situation(
            "minor_custodian",
            f"a minor ({MINOR_AGE}) with a service relationship, their own and a custodian's explicit, written consent",
            True,
            MINOR_AGE,
            consent=True,
            written=True,
            custodian=True,
        ),
    )
    asserted = tuple(
        Situation(
            f"exception:{ground}",
            f"a service relationship, no consent, no legal representative; the requester asserts {ground}",
            True,
            ADULT_AGE,
            exception=ground,
        )
        for ground in sorted(exceptions)
    )
    return fixed + asserted


@dataclass(frozen=True)
class Outcome:
    """What a diff compares of a decision (the reasons are shown, not compared)."""

    effect: str
    kind: str | None = None
    rule: str | None = None
    reference: str | None = None
    lawful_basis: str | None = None
    fields: tuple[str, ...] = ()
    obligations: tuple[str, ...] = ()
    why: str = field(default="", compare=False)

    @classmethod
    def of(cls, decision: Decision) -> Outcome:
        basis = decision.basis
        if basis is None:
            codes = [r.code for r in decision.reasons]
            # The reasons of rules that were for this requester and source say most; failing those, a wrong role
            # or source says more than a wrong org type or "no rule".
            telling = [c for c in codes if c not in _NOT_FOR_THIS | {"no_rule"}]
            telling = telling or [c for c in codes if c in ("wrong_role", "wrong_source")] or codes
            forbidden = [r.rule_id for r in decision.reasons if r.code == "forbidden"]
            why = f"forbidden by {', '.join(forbidden)}" if forbidden else ", ".join(dict.fromkeys(telling))
            return cls("deny", why=why)
        return cls(
            decision.effect,
            basis.kind,
            basis.rule_id,
            basis.reference,
            basis.lawful_basis,
            tuple(sorted(decision.fields)),
            decision.obligations,
        )

    def aspects(self, other: Outcome) -> tuple[str, ...]:
        differs = {
            "effect": self.effect != other.effect,
            "basis": (self.kind, self.rule) != (other.kind, other.rule),
            "reference": (self.reference, self.lawful_basis) != (other.reference, other.lawful_basis),
            "fields": self.fields != other.fields,
            "obligations": self.obligations != other.obligations,
        }
        return tuple(a for a in ASPECTS if differs[a])

    def describe(self, aspects: Sequence[str]) -> str:
        if self.effect != "permit":
            return f"deny ({self.why})" if self.why else "deny"
        whole = "effect" in aspects
        parts = [f"permit {self.kind} {self.rule}"]
        if whole or "reference" in aspects:
            parts.append(f"({self.reference}; {self.lawful_basis})")
        if whole or "fields" in aspects:
            parts.append(f"fields [{', '.join(self.fields)}]")
        if (whole and self.obligations) or "obligations" in aspects:
            parts.append(f"obligations [{', '.join(self.obligations)}]")
        return " ".join(parts)


@dataclass(frozen=True)
class Change:
    origin: str  # "case" (a decision table) or "request" (the generated set)
    label: str
    old: Outcome
    new: Outcome

    @property
    def aspects(self) -> tuple[str, ...]:
        return self.old.aspects(self.new)

    def line(self) -> str:
        aspects = self.aspects
        return (
            f"{self.origin} {self.label}: {self.old.describe(aspects)} → {self.new.describe(aspects)}"
            f"  [{', '.join(aspects)}]"
        )


@dataclass(frozen=True)
class PolicyDiff:
    old_version: str
    new_version: str
    cases: int  # decision-table cases compared
    requests: int  # generated requests compared
    changes: tuple[Change, ...]

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def summary(self) -> str:
        by_origin = Counter(c.origin for c in self.changes)
        by_aspect = Counter(a for c in self.changes for a in c.aspects)
        head = (
            f"policy {self.old_version[:16]} → {self.new_version[:16]}: "
            f"{by_origin['case']} of {self.cases} decision-table cases and "
            f"{by_origin['request']} of {self.requests} generated requests change"
        )
        if not self.changes:
            return head
        return head + " (" + ", ".join(f"{a} {by_aspect[a]}" for a in ASPECTS if by_aspect[a]) + ")"

    def lines(self) -> Iterator[str]:
        for change in self.changes:
            yield change.line()
        yield self.summary()


def diff_policies(old: Policy, new: Policy, cases: Sequence[Case] = (), now: datetime | None = None) -> PolicyDiff:
    """Run both versions over `cases` (each at its own clock) and over the generated request set at `now`;
    without `now`, over the decision tables only."""
    changes: list[Change] = []
    for case in cases:
        before, after = (Outcome.of(decide(case.request, case.facts, p, case.now)) for p in (old, new))
        if before != after:
            changes.append(Change("case", f'"{case.name}" ({case.flow}, {case.statute})', before, after))
    requests = 0
    if now is not None:
        for label, request, facts in generated_requests(old, new, now):
            requests += 1
            before, after = Outcome.of(decide(request, facts, old, now)), Outcome.of(decide(request, facts, new, now))
            if before != after:
                changes.append(Change("request", label, before, after))
    return PolicyDiff(old.version, new.version, len(cases), requests, tuple(changes))


def generated_requests(old: Policy, new: Policy, now: datetime) -> Iterator[tuple[str, DecisionRequest, Facts]]:
    """The generated request set over both versions' vocabularies, so that a word one version adds is asked about
    too. Each organisation is named after its type; each request is labelled for the report."""
    org_types = sorted(old.org_types | new.org_types)
    sources: list[str | None] = [*org_types, None]
    categories = sorted(old.categories | new.categories)
    purposes = sorted(old.purposes | new.purposes)
    for org_type in org_types:
        roles = sorted(old.roles_for(org_type) | new.roles_for(org_type))
        for category in categories:
            for purpose in purposes:
                for situation in situations(sorted(set(old.exceptions) | set(new.exceptions))):
                    facts = situation.facts(org_type, category, purpose, now)
                    claim = (
                        StatutoryException(situation.exception, "asserted in the generated request set")
                        if situation.exception
                        else None
                    )
                    for role in roles:
                        for source in sources:
                            request = DecisionRequest(
                                org_type, org_type, role, "person", category, purpose, source, source, claim
                            )
                            label = (
                                f"{org_type}/{role} ← {source or 'any source'}: {category} for {purpose} "
                                f"[{situation.name}]"
                            )
                            yield label, request, facts
