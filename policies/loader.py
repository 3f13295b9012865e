"""Loading the policy: the YAML files in `policies/rules/` become one validated, indexed, immutable `Policy`.

`vocabulary.yaml` names the org types (with their roles), categories (with their fields), purposes,
statutory exceptions and obligations; every other `*.yaml` file holds rules (and portal entries, flows served
to the person themself, which the engine never matches). The version is a hash of the exact files, and the
files' text is kept so that the text behind any decision can be stored beside it (DESIGN.md invariant 1) —
`load_policy_files` builds the same policy again from that stored text.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
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
    flow: str  # the flow of flows.md it encodes: F12a and F12b both encode F12
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
    person_age_under: int | None  # applies only to a person younger than this (None: any age)
    explicit: bool
    written: bool
    minor_needs_custodian: bool
    obligations: tuple[str, ...]
    explanation: Mapping[str, str]  # language (fi, sv, en) → plain-language text for the person
    file: str
    order: int  # position in the policy; ties between equal permits go to the earlier rule


@dataclass(frozen=True, slots=True)
class PortalEntry:
    """A flow served by the portal to the person themself (F17), never to a partner: it is in the register,
    with its legal ground and explanation, but not in the engine's index."""

    id: str
    flow: str
    categories: frozenset[str]
    basis: Literal["statute"]
    lawful_basis: str
    secrecy_ground: str
    shows: str
    explanation: Mapping[str, str]
    file: str


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
    portal: tuple[PortalEntry, ...] = ()  # never in the index: no partner request can match one

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
    if not folder.is_dir():
        raise PolicyError(f"{display_path(folder)}: not a folder of policy files")
    paths = sorted(p for p in folder.glob("*.yaml") if p.is_file())
    return _build({p.name: p.read_bytes() for p in paths}, lambda name: display_path(folder / name))


def load_policy_files(files: Mapping[str, str], origin: str = "stored policy") -> Policy:
    """The policy from the files' exact text, as `Policy.files` holds it and the broker stores it for every
    version it has run: the version comes out the same as when the files were read from a folder."""
    raw = {name: text.encode("utf-8") for name, text in files.items() if name.endswith(".yaml") and "/" not in name}
    return _build(raw, lambda name: f"{origin}/{name}" if name else origin)


def _build(raw: Mapping[str, bytes], shown_as: Callable[[str], str]) -> Policy:
    names = sorted(raw)
    if VOCABULARY_FILE not in raw:
        raise PolicyError(f"{shown_as('')}: no {VOCABULARY_FILE}")
    texts = {name: _parse(shown_as(name), raw[name]) for name in names}

    vocabulary = load_vocabulary(texts[VOCABULARY_FILE][1], shown_as(VOCABULARY_FILE))
    rules: list[Rule] = []
    portal: list[PortalEntry] = []
    seen: dict[str, str] = {}
    for name in names:
        if name == VOCABULARY_FILE:
            continue
        shown = shown_as(name)
        loaded = load_rule_file(texts[name][1], shown, vocabulary)
        for label, data in [("rule", d) for d in loaded.get("rules", ())] + [
            ("portal entry", d) for d in loaded.get("portal", ())
        ]:
            if data["id"] in seen:
                raise PolicyError(f"{shown}: {label} {data['id']}: id: duplicate rule id (also in {seen[data['id']]})")
            seen[data["id"]] = shown
            if label == "rule":
                rules.append(_compile(data, vocabulary, shown, len(rules)))
            else:
                portal.append(_portal_entry(data, vocabulary, shown))

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
        portal=tuple(portal),
    )


def display_path(path: Path) -> str:
    """The path as it should appear in a message: relative to the project when inside it (never this machine's
    absolute path for the shipped files), else as given."""
    try:
        return path.resolve().relative_to(PACKAGE_DIR.parent).as_posix()
    except ValueError:
        return str(path)


def _parse(shown: str, data: bytes) -> tuple[str, Any]:
    try:
        text = data.decode("utf-8")
        return text, yaml.safe_load(text)
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        raise PolicyError(f"{shown}: {error}".replace("\n", " ")) from None


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
        flow=data.get("flow") or data["id"],
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
        person_age_under=data.get("person_age_under"),
        explicit=bool(consent.get("explicit")),
        written=bool(consent.get("written")),
        minor_needs_custodian=bool(consent.get("minor_needs_custodian")),
        obligations=tuple(data.get("obligations") or ()),
        explanation=MappingProxyType(dict(data["explanation"])),
        file=file,
        order=order,
    )


def _portal_entry(data: Mapping[str, Any], vocabulary: Mapping[str, Any], file: str) -> PortalEntry:
    categories = data["categories"]
    return PortalEntry(
        id=data["id"],
        flow=data.get("flow") or data["id"],
        categories=frozenset(vocabulary["categories"] if categories == ANY else categories),
        basis=data["basis"],
        lawful_basis=data["lawful_basis"],
        secrecy_ground=data["secrecy_ground"],
        shows=data["shows"],
        explanation=MappingProxyType(dict(data["explanation"])),
        file=file,
    )
