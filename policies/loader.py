"""Loading the policy: the YAML files in `policies/rules/` become one validated, indexed, immutable `Policy`.

`vocabulary.yaml` names the org types (with their roles), categories (with their fields), purposes,
statutory exceptions and obligations; every other `*.yaml` file holds rules. The version is a hash of the
exact files, and the files' text is kept so that the text behind any decision can be stored beside it
(DESIGN.md invariant 1).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml

from policies.errors import PolicyError
from schemas.policy import ANY, load_rule_file, load_vocabulary

PACKAGE_DIR = Path(__file__).resolve().parent
RULES_DIR = PACKAGE_DIR / "rules"
VOCABULARY_FILE = "vocabulary.yaml"

RuleBasis = Literal["statute", "consent", "consent_or_exception"]


@dataclass(frozen=True, slots=True)
class Category:
    name: str
    special: bool  # GDPR Art. 9 data, or may contain it: consent to it must be explicit
    fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ExceptionGround:
    """A statutory exception a requester may assert instead of consent (flows.md, C/E rows)."""

    id: str
    reference: str
    description: str
    requires_no_legal_representative: bool


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    effect: Literal["permit", "forbid"]
    requester_org_types: frozenset[str]  # `any` already expanded to every org type
    requester_roles: frozenset[str] | None  # None: any role of the org type
    except_org_types: frozenset[str]
    source_org_types: frozenset[str]
    categories: frozenset[str]
    purposes: frozenset[str]
    basis: RuleBasis | None  # None for a forbid
    exceptions: frozenset[str]
    lawful_basis: str
    secrecy_ground: str
    fields: Mapping[str, tuple[str, ...]]  # category → sorted allow-list
    relationship_required: bool
    explicit: bool
    written: bool
    minor_needs_custodian: bool
    obligations: tuple[str, ...]
    explanation: Mapping[str, str]  # language (fi, sv, en) → plain-language text for the person
    file: str
    order: int  # position in the policy; ties between equal permits go to the earlier rule


@dataclass(frozen=True, eq=False)
class Policy:
    version: str  # SHA-256 hex over the sorted file names and bytes
    files: Mapping[str, str]  # file name → exact text
    rules: tuple[Rule, ...]
    purposes: frozenset[str]
    exceptions: Mapping[str, ExceptionGround]
    obligations: Mapping[str, str]  # obligation → what the service must do
    org_roles: Mapping[str, frozenset[str]]
    category_info: Mapping[str, Category]
    # (category, purpose) → candidate rules, forbids first, so that `decide` never scans the whole policy.
    index: Mapping[tuple[str, str], tuple[Rule, ...]]
    by_id: Mapping[str, Rule]

    @property
    def org_types(self) -> frozenset[str]:
        return frozenset(self.org_roles)

    @property
    def categories(self) -> frozenset[str]:
        return frozenset(self.category_info)

    def roles_for(self, org_type: str) -> frozenset[str]:
        return self.org_roles.get(org_type, frozenset())

    def is_special(self, category: str) -> bool:
        return self.category_info[category].special

    def category_fields(self, category: str) -> tuple[str, ...]:
        return self.category_info[category].fields

    def rule(self, rule_id: str) -> Rule:
        return self.by_id[rule_id]

    def candidates(self, category: str, purpose: str) -> tuple[Rule, ...]:
        return self.index.get((category, purpose), ())


def load_policy(directory: str | Path | None = None) -> Policy:
    """Read, validate and compile the policy files; raises `PolicyError` naming file, rule and field."""
    folder = Path(directory) if directory is not None else RULES_DIR
    paths = sorted(p for p in folder.glob("*.yaml") if p.is_file())
    raw = {p.name: p.read_bytes() for p in paths}
    if VOCABULARY_FILE not in raw:
        raise PolicyError(f"{display_path(folder)}: no {VOCABULARY_FILE}")
    texts = {p.name: _parse(p, raw[p.name]) for p in paths}

    vocabulary = load_vocabulary(texts[VOCABULARY_FILE][1], display_path(folder / VOCABULARY_FILE))
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for path in paths:
        if path.name == VOCABULARY_FILE:
            continue
        shown = display_path(path)
        for data in load_rule_file(texts[path.name][1], shown, vocabulary)["rules"]:
            if data["id"] in seen:
                raise PolicyError(f"{shown}: rule {data['id']}: id: duplicate rule id (also in {seen[data['id']]})")
            seen[data["id"]] = shown
            rules.append(_compile(data, vocabulary, shown, len(rules)))

    index: defaultdict[tuple[str, str], list[Rule]] = defaultdict(list)
    for rule in sorted(rules, key=lambda r: (r.effect != "forbid", r.order)):
        for category in rule.categories:
            for purpose in rule.purposes:
                index[(category, purpose)].append(rule)

    return Policy(
        version=_version(raw),
        files=MappingProxyType({name: text for name, (text, _) in texts.items()}),
        rules=tuple(rules),
        purposes=frozenset(vocabulary["purposes"]),
        exceptions=MappingProxyType({k: ExceptionGround(id=k, **v) for k, v in vocabulary["exceptions"].items()}),
        obligations=MappingProxyType(dict(vocabulary["obligations"])),
        org_roles=MappingProxyType({k: frozenset(v["roles"]) for k, v in vocabulary["org_types"].items()}),
        category_info=MappingProxyType(
            {k: Category(k, v["special"], tuple(v["field_names"])) for k, v in vocabulary["categories"].items()}
        ),
        index=MappingProxyType({key: tuple(found) for key, found in index.items()}),
        by_id=MappingProxyType({rule.id: rule for rule in rules}),
    )


def display_path(path: Path) -> str:
    """The path as it should appear in a message: relative to the project when inside it (never this machine's
    absolute path for the shipped files), else as given."""
    try:
        return path.resolve().relative_to(PACKAGE_DIR.parent).as_posix()
    except ValueError:
        return str(path)


def _parse(path: Path, data: bytes) -> tuple[str, Any]:
    try:
        text = data.decode("utf-8")
        return text, yaml.safe_load(text)
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        raise PolicyError(f"{display_path(path)}: {error}".replace("\n", " ")) from None


def _version(raw: Mapping[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(raw):
        # Length-prefixed, so that moving bytes between a name and a file's content changes the hash.
        for part in (name.encode(), raw[name]):
            digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def _compile(data: Mapping[str, Any], vocabulary: Mapping[str, Any], file: str, order: int) -> Rule:
    def names(value: str | list[str] | None, everything: Iterable[str]) -> frozenset[str]:
        return frozenset(everything) if value == ANY else frozenset(value or ())

    consent = data.get("consent") or {}
    roles = data.get("requester_roles")
    return Rule(
        id=data["id"],
        effect=data["effect"],
        requester_org_types=names(data["requester_org_types"], vocabulary["org_types"]),
        requester_roles=frozenset(roles) if roles else None,
        except_org_types=names(data.get("except_org_types"), ()),
        source_org_types=names(data["source_org_types"], vocabulary["org_types"]),
        categories=frozenset(data["categories"]),
        purposes=names(data["purposes"], vocabulary["purposes"]),
        basis=data.get("basis"),
        exceptions=names(data.get("exceptions"), ()),
        lawful_basis=data.get("lawful_basis") or "",
        secrecy_ground=data["secrecy_ground"],
        fields=MappingProxyType({c: tuple(sorted(f)) for c, f in (data.get("allow") or {}).items()}),
        relationship_required=bool(data.get("relationship_required")),
        explicit=bool(consent.get("explicit")),
        written=bool(consent.get("written")),
        minor_needs_custodian=bool(consent.get("minor_needs_custodian")),
        obligations=tuple(data.get("obligations") or ()),
        explanation=MappingProxyType(dict(data["explanation"])),
        file=file,
        order=order,
    )
