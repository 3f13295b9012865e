"""Schemas of the policy files: the vocabulary (`policies/rules/vocabulary.yaml`), the rule files
(`policies/rules/*.yaml`) and the decision tables (`policies/cases/*.yaml`).

All strict (`unknown = RAISE`). A rule file is also checked against the vocabulary: every org type, role,
category, field, purpose, exception and obligation a rule names must be defined there, so that a typo cannot
silently widen or narrow a flow. `load_*` return plain validated dicts or raise `PolicyError` naming file,
rule and field.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from policies.errors import PolicyError

ANY = "any"
NAME = validate.Regexp(r"^[a-z][a-z0-9_]*$", error="not a snake_case name: {input}")
TEXT = validate.Length(min=1)
# A flow of flows.md (F1 … F18, F2a, F9b, F14b) or a rule of one (F12a, F12b when a flow needs two rules).
FLOW_ID = validate.Regexp(r"^F\d+[a-z]?$", error="not a flow id: {input}")
GDPR = validate.Regexp(r"^GDPR \d", error="must cite GDPR articles")


def _unique(values: list[Any]) -> None:
    if duplicates := sorted(v for v, n in Counter(values).items() if n > 1):
        raise ValidationError(f"duplicates: {', '.join(map(str, duplicates))}")


def _names(**kwargs: Any) -> fields.List[str]:
    """A non-empty list of distinct snake_case names."""
    return fields.List(fields.String(validate=NAME), validate=[validate.Length(min=1), _unique], **kwargs)


def _flag(**kwargs: Any) -> fields.Boolean:
    # YAML already gives booleans; refuse "yes"/1 so that a quoted value is a mistake, not a truth.
    return fields.Boolean(truthy={True}, falsy={False}, **kwargs)


class NamesOrAny(fields.Field[list[str] | str]):
    """Either the word `any` or a non-empty list of distinct names."""

    default_error_messages = {"invalid": "must be 'any' or a non-empty list of names"}  # noqa: RUF012

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> list[str] | str:
        if value == ANY:
            return ANY
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise self.make_error("invalid")
        _unique(value)
        return value


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


# --- vocabulary -----------------------------------------------------------------------------------------


class OrgTypeSchema(StrictSchema):
    roles = _names(required=True)


class CategorySchema(StrictSchema):
    special = _flag(required=True)
    field_names = _names(required=True, data_key="fields")


class ExceptionSchema(StrictSchema):
    reference = fields.String(required=True, validate=TEXT)
    description = fields.String(required=True, validate=TEXT)
    # 703/2023 53 § 5–6 mom. applies only when the person has no legal representative who could consent.
    requires_no_legal_representative = _flag(load_default=False)


class VocabularySchema(StrictSchema):
    org_types = fields.Dict(
        keys=fields.String(validate=NAME), values=fields.Nested(OrgTypeSchema), required=True, validate=TEXT
    )
    categories = fields.Dict(
        keys=fields.String(validate=NAME), values=fields.Nested(CategorySchema), required=True, validate=TEXT
    )
    purposes = _names(required=True)
    exceptions = fields.Dict(
        keys=fields.String(validate=NAME), values=fields.Nested(ExceptionSchema), load_default=dict
    )
    obligations = fields.Dict(keys=fields.String(validate=NAME), values=fields.String(validate=TEXT), load_default=dict)


# --- rules ----------------------------------------------------------------------------------------------


class ConsentRequirementSchema(StrictSchema):
    explicit = _flag(required=True)
    written = _flag(required=True)
    # Youth Act 1285/2016 12 §: for a minor the custodian consents too, beside the young person.
    minor_needs_custodian = _flag(load_default=False)


class ExplanationSchema(StrictSchema):
    fi = fields.String(required=True, validate=TEXT)
    sv = fields.String(required=True, validate=TEXT)
    en = fields.String(required=True, validate=TEXT)


# A permit must say on what basis, under which GDPR article, what it discloses and whether a service
# relationship is needed; a forbid says none of that.
_PERMIT_REQUIRED = ("basis", "lawful_basis", "fields", "relationship_required")
_PERMIT_ONLY = (*_PERMIT_REQUIRED, "consent", "exceptions", "obligations", "person_age_under")


class RuleSchema(StrictSchema):
    id = fields.String(required=True, validate=FLOW_ID)
    # The flow of flows.md the rule encodes; defaults to the id. F12a and F12b both encode F12.
    flow = fields.String(validate=FLOW_ID)
    effect = fields.String(required=True, validate=validate.OneOf(["permit", "forbid"]))
    requester_org_types = NamesOrAny(required=True)
    requester_roles = _names()
    except_org_types = _names()
    source_org_types = NamesOrAny(required=True)
    categories = _names(required=True)
    purposes = NamesOrAny(required=True)
    basis = fields.String(validate=validate.OneOf(["statute", "consent", "consent_or_exception"]))
    exceptions = _names()
    lawful_basis = fields.String(validate=GDPR)
    secrecy_ground = fields.String(required=True, validate=TEXT)
    allow = fields.Dict(keys=fields.String(), values=_names(), data_key="fields")
    relationship_required = _flag()
    # The rule applies only to a person younger than this many whole years (F14b: Youth Act 1285/2016 11 §
    # 4 mom., under 29); never to a person whose age is unknown.
    person_age_under = fields.Integer(strict=True, validate=validate.Range(min=1, max=150))
    consent = fields.Nested(ConsentRequirementSchema)
    obligations = _names()
    explanation = fields.Nested(ExplanationSchema, required=True)

    @validates_schema
    def check_effect(self, data: dict[str, Any], **kwargs: Any) -> None:
        """Which keys a rule needs depends on its effect and basis."""
        present = {self.fields[k].data_key or k for k, v in data.items() if v is not None}
        errors: dict[str, str] = {}
        if data["effect"] == "forbid":
            # A forbid only says who must never receive what; it has no basis and discloses nothing.
            errors |= {k: "not allowed in a forbid" for k in _PERMIT_ONLY if k in present}
        else:
            errors |= {k: "required for a permit" for k in _PERMIT_REQUIRED if k not in present}
            if "except_org_types" in present:
                errors["except_org_types"] = "only a forbid has exceptions by org type"
            basis = data.get("basis")
            if basis in ("consent", "consent_or_exception") and "consent" not in present:
                errors["consent"] = f"required for basis {basis}"
            if basis == "statute" and "consent" in present:
                errors["consent"] = "a statutory rule needs no consent"
            if (basis == "consent_or_exception") != ("exceptions" in present):
                errors["exceptions"] = "required exactly when basis is consent_or_exception"
        if errors:
            raise ValidationError({k: [v] for k, v in errors.items()})


class PortalEntrySchema(StrictSchema):
    """A flow the portal serves to the person themself (F17: GDPR Art. 15; 703/2023 11 §, 74 §). It is part of
    the policy so that the register is complete and its explanation reviewed with the rest, but it is never a
    partner rule: the engine's index never holds it, so no partner request can match it."""

    id = fields.String(required=True, validate=FLOW_ID)
    flow = fields.String(validate=FLOW_ID)
    categories = NamesOrAny(required=True)
    # The law obliges the controller to show the person their data; nothing here rests on consent.
    basis = fields.String(required=True, validate=validate.OneOf(["statute"]))
    lawful_basis = fields.String(required=True, validate=GDPR)
    secrecy_ground = fields.String(required=True, validate=TEXT)
    shows = fields.String(required=True, validate=TEXT)  # what the portal shows, in a sentence
    explanation = fields.Nested(ExplanationSchema, required=True)


class RuleFileSchema(StrictSchema):
    description = fields.String(validate=TEXT)
    rules = fields.List(fields.Nested(RuleSchema), validate=TEXT)
    portal = fields.List(fields.Nested(PortalEntrySchema), validate=TEXT)

    def __init__(self, vocabulary: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vocabulary = vocabulary

    @validates_schema
    def check_references(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "rules" not in data and "portal" not in data:
            raise ValidationError({"rules": ["a rule file holds rules, portal entries or both"]})
        errors: dict[str, Any] = {}
        rules = {
            i: e for i, rule in enumerate(data.get("rules", ())) if (e := rule_reference_errors(rule, self.vocabulary))
        }
        if rules:
            errors["rules"] = rules
        categories = self.vocabulary["categories"]
        portal = {
            i: {"categories": [f"unknown category '{c}'" for c in entry["categories"] if c not in categories]}
            for i, entry in enumerate(data.get("portal", ()))
            if isinstance(entry["categories"], list) and any(c not in categories for c in entry["categories"])
        }
        if portal:
            errors["portal"] = portal
        if errors:
            raise ValidationError(errors)


def rule_reference_errors(rule: Mapping[str, Any], vocabulary: Mapping[str, Any]) -> dict[str, list[str]]:
    """Every name a rule uses must be defined in the vocabulary; keys are the (dotted) rule fields."""
    errors: dict[str, list[str]] = {}

    def unknown(key: str, names: object, known: Mapping[str, Any] | list[str], what: str) -> None:
        if isinstance(names, list) and (bad := [n for n in names if n not in known]):
            errors[key] = [f"unknown {what} '{n}'" for n in bad]

    org_types, categories = vocabulary["org_types"], vocabulary["categories"]
    for key in ("requester_org_types", "except_org_types", "source_org_types"):
        unknown(key, rule.get(key), org_types, "org type")
    unknown("categories", rule["categories"], categories, "category")
    unknown("purposes", rule["purposes"], vocabulary["purposes"], "purpose")
    unknown("exceptions", rule.get("exceptions"), vocabulary["exceptions"], "exception")
    unknown("obligations", rule.get("obligations"), vocabulary["obligations"], "obligation")

    requesters = rule["requester_org_types"]
    requesters = list(org_types) if requesters == ANY else [t for t in requesters if t in org_types]
    roles = {role for t in requesters for role in org_types[t]["roles"]}
    bad_roles = [r for r in rule.get("requester_roles") or () if r not in roles]
    if bad_roles:
        errors["requester_roles"] = [f"'{r}' is not a role of {', '.join(requesters)}" for r in bad_roles]

    allow: dict[str, list[str]] = rule.get("allow") or {}
    for category in rule["categories"] if rule["effect"] == "permit" else ():
        if category in categories and category not in allow:
            errors[f"fields.{category}"] = ["missing allow-list"]
    for category, names in allow.items():
        if category not in rule["categories"]:
            errors[f"fields.{category}"] = ["category not listed in categories"]
        elif category in categories:
            known = categories[category]["field_names"]
            if bad := [f"unknown field '{n}'" for n in names if n not in known]:
                errors[f"fields.{category}"] = bad
    return errors


# --- decision tables ------------------------------------------------------------------------------------


class ExceptionClaimSchema(StrictSchema):
    ground = fields.String(required=True)
    justification = fields.String(required=True)


class CaseRequestSchema(StrictSchema):
    requester_org = fields.String(required=True)
    requester_org_type = fields.String(required=True)
    requester_role = fields.String(required=True)
    person_id = fields.String(load_default="person-1")
    category = fields.String(required=True)
    purpose = fields.String(required=True)
    source_org = fields.String(load_default=None)
    source_org_type = fields.String(load_default=None)
    exception = fields.Nested(ExceptionClaimSchema, load_default=None)


class CaseConsentSchema(StrictSchema):
    consent_id = fields.String(required=True)
    version = fields.Integer(load_default=1, strict=True)
    status = fields.String(load_default="active")
    recipients = fields.List(fields.String(), required=True)
    categories = fields.List(fields.String(), required=True)
    purposes = fields.List(fields.String(), required=True)
    valid_from = fields.AwareDateTime(required=True)
    valid_until = fields.AwareDateTime(load_default=None)
    explicit = _flag(load_default=False)
    written = _flag(load_default=False)
    bound_to_org = fields.String(load_default=None)
    given_by = fields.String(load_default="person")
    mandate = fields.String(load_default=None)
    withdrawn_at = fields.AwareDateTime(load_default=None)
    requester_org = fields.String(load_default=None)


class CaseFactsSchema(StrictSchema):
    relationships = fields.List(fields.String(), load_default=list)
    consents = fields.List(fields.Nested(CaseConsentSchema), load_default=list)
    # Without person_is_minor, a given age decides it (under 18); without either, an adult of unknown age.
    person_is_minor = _flag(load_default=None)
    person_age = fields.Integer(strict=True, validate=validate.Range(min=0, max=150), load_default=None)
    has_legal_representative = _flag(load_default=False)

    @validates_schema
    def check_age(self, data: dict[str, Any], **kwargs: Any) -> None:
        minor, age = data.get("person_is_minor"), data.get("person_age")
        if minor is not None and age is not None and minor != (age < 18):
            raise ValidationError({"person_is_minor": [f"contradicts person_age {age}"]})


class ExpectationSchema(StrictSchema):
    effect = fields.String(required=True, validate=validate.OneOf(["permit", "deny"]))
    basis = fields.String(validate=validate.OneOf(["statute", "consent", "exception"]))
    rule = fields.String()
    fields_ = fields.List(fields.String(), data_key="fields")
    obligations = fields.List(fields.String())
    consent_id = fields.String()
    exception_ground = fields.String()  # the asserted exception a permit rests on
    reason = fields.String()  # a reason code that must be among the decision's reasons

    @validates_schema
    def check_permit(self, data: dict[str, Any], **kwargs: Any) -> None:
        keys = ("basis", "rule", "fields_")
        if data["effect"] == "permit" and (missing := [k.rstrip("_") for k in keys if k not in data]):
            raise ValidationError({k: ["required when a permit is expected"] for k in missing})
        if data["effect"] == "deny" and (extra := [k.rstrip("_") for k in keys if k in data]):
            raise ValidationError({k: ["a deny has none"] for k in extra})


class EvaluationSchema(StrictSchema):
    """`broker policy eval`: one request, the facts and the clock, in the decision tables' form."""

    request = fields.Nested(CaseRequestSchema, required=True)
    facts = fields.Nested(CaseFactsSchema, load_default=None)
    now = fields.AwareDateTime(required=True)


class CaseSchema(StrictSchema):
    name = fields.String(required=True, validate=TEXT)
    flow = fields.String(required=True, validate=TEXT)
    statute = fields.String(required=True, validate=TEXT)
    now = fields.AwareDateTime()
    request = fields.Nested(CaseRequestSchema, required=True)
    facts = fields.Nested(CaseFactsSchema, load_default=None)
    expect = fields.Nested(ExpectationSchema, required=True)


class CaseFileSchema(StrictSchema):
    description = fields.String(validate=TEXT)
    now = fields.AwareDateTime()  # the default clock for the file's cases
    templates = fields.Dict(keys=fields.String())  # YAML anchors the cases refer to; not read otherwise
    cases = fields.List(fields.Nested(CaseSchema), required=True, validate=TEXT)

    @validates_schema
    def check_clock(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "now" not in data and (
            missing := {
                i: {"now": ["required (no file default)"]} for i, c in enumerate(data["cases"]) if "now" not in c
            }
        ):
            raise ValidationError({"cases": missing})


# --- loading with errors that name file, rule and field -------------------------------------------------


def load_vocabulary(data: object, file: str) -> dict[str, Any]:
    return _load(VocabularySchema(), data, file)


def load_rule_file(data: object, file: str, vocabulary: Mapping[str, Any]) -> dict[str, Any]:
    return _load(RuleFileSchema(vocabulary), data, file, {"rules": ("rule", "id"), "portal": ("portal entry", "id")})


def load_case_file(data: object, file: str) -> dict[str, Any]:
    return _load(CaseFileSchema(), data, file, {"cases": ("case", "name")})


# The lists whose entries an error names: list key → (label, the entry's naming key).
_Items = Mapping[str, tuple[str, str]]


def _load(schema: Schema, data: object, file: str, items: _Items | None = None) -> dict[str, Any]:
    try:
        loaded: dict[str, Any] = schema.load(data)  # type: ignore[arg-type]  # checked by the schema itself
    except ValidationError as error:
        raise PolicyError(
            [_line(file, path, message, data, items or {}) for path, message in _flatten(error.messages)]
        ) from None
    return loaded


def _flatten(messages: object, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if isinstance(messages, dict):
        for k, v in messages.items():
            # "_schema" is the object itself; "value" is marshmallow's wrapper around a Dict entry's errors.
            yield from _flatten(v, path if k in ("_schema", "value") else (*path, k))
    elif isinstance(messages, list):
        for m in messages:
            yield from _flatten(m, path)
    else:
        yield path, str(messages)


def _line(file: str, path: tuple[str | int, ...], message: str, data: object, items: _Items) -> str:
    parts = [file]
    if len(path) >= 2 and isinstance(path[0], str) and path[0] in items and isinstance(path[1], int):
        label, key = items[path[0]]
        entries = data.get(path[0]) if isinstance(data, dict) else None
        index, path = path[1], path[2:]
        entry = entries[index] if isinstance(entries, list) and index < len(entries) else None
        name = entry.get(key) if isinstance(entry, dict) else None
        parts.append(f"{label} {name}" if isinstance(name, str) else f"{label} #{index + 1}")
    if path:
        parts.append(".".join(map(str, path)))
    parts.append(message)
    return ": ".join(parts)
