"""What a seeded person has been through, as the broker's use cases would have recorded it.

Each person follows one of a few service paths of the reference deployment (domain/flows.md): rehabilitative
work activity with a work assessment for the health centre (the demo's path for Mikko Laine, F7), activation
planning among the authorities (F1, F2, F9), outreach youth work (F14) and work placement with an employer (F18).
Along the path the organisations that serve the person resolve them, start (and sometimes end) service
relationships, deposit records, record or request consents (some later withdrawn, some left to expire), ask for
records, ask for dry-run decisions and obtain tokens. Every step leaves the rows and the audit entry the real use
case leaves (broker/services/): the same columns, the same entry members, records and identity codes sealed with
the instance's keys by the same envelope functions, consent texts rendered by the same template, and every
disclosure decided by the policy engine itself (`policies.decide`) on the facts of that moment — so a seeded
permit or denial is the one the broker would have made.

Everything except cryptographic randomness is derived from (seed, ordinal): the same seed gives the same persons,
identity codes, identifiers, histories and entry bytes. Data keys, nonces and so ciphertexts are fresh, as the
broker makes them; the identity-code index is keyed with the instance's own key.

Identity codes are a bijection of the ordinal, independent of the seed (`identity_code`), so persons of two runs
never share one: see broker/seed/__init__.py for how a run picks its ordinals.
"""

from __future__ import annotations

import functools
import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from hashlib import sha256
from typing import Any

from sqlalchemy import create_engine, insert
from sqlalchemy.orm import Session

from broker.adapters.envelope import hetu_index, record_aad, seal, seal_hetu
from broker.adapters.keystore import KeyStore
from broker.adapters.orm import OrganisationRow
from broker.demo import ORGANISATIONS
from broker.domain.clock import utc
from broker.domain.hetu import CHECK_CHARS, normalise_hetu
from broker.domain.model import PARTNER_SCOPES, Caller
from broker.services.audit_log import payload_digest, pending_entry
from broker.services.consent_texts import HELSINKI, TEMPLATE_VERSION, render_consent_text
from broker.services.disclosures import disclosed_item
from broker.services.notices import CONSENT_WITHDRAWN, _notice_aad
from broker.services.persons import age, is_minor
from policies import ConsentFact, Decision, DecisionRequest, Facts, Policy, decide
from schemas.records import load_record
from schemas.records.examples import EXAMPLES

# -- identity codes ------------------------------------------------------------------------------------------------

# Seeded codes use the century signs added on 1 January 2023 (Y, X, W, V, U for the 1900s and B, C, D, E, F for the
# 2000s; Government decree 128/2010 as amended by 1039/2022) and the individual numbers 900–999 reserved for test
# codes (broker/domain/hetu.py): they are valid codes of nobody, and they never meet the demo's or the test suite's
# codes, which use "-" and "A" (broker.domain.hetu.make_hetu). Birth dates are such that everyone is of age for the
# whole seeded history (at most three years).
FIRST_BIRTH = date(1956, 1, 1)
LAST_BIRTH = date(2005, 11, 30)
_SIGNS = {1900: "YXWVU", 2000: "BCDEF"}
_DAYS = (LAST_BIRTH - FIRST_BIRTH).days + 1
CODE_SPACE = _DAYS * 100 * 5  # birth days × individual numbers 900–999 × five century signs
# ordinal → (ordinal · STRIDE + OFFSET) mod CODE_SPACE is a bijection because STRIDE is a prime above CODE_SPACE (so
# coprime with it): ordinals spread over all birth dates, and no two ordinals give one code.
_STRIDE = 2_654_435_761
_OFFSET = 7_919


def identity_code(ordinal: int) -> tuple[str, date]:
    """The ordinal's identity code (normalised) and birth date."""
    if not 0 <= ordinal < CODE_SPACE:
        raise ValueError(f"seeded persons are numbered below {CODE_SPACE:,}")
    x, sign = divmod((ordinal * _STRIDE + _OFFSET) % CODE_SPACE, 5)
    day, individual = divmod(x, 100)
    born = FIRST_BIRTH + timedelta(days=day)
    digits = f"{born.day:02d}{born.month:02d}{born.year % 100:02d}"
    number = f"{900 + individual:03d}"
    code = f"{digits}{_SIGNS[born.year // 100 * 100][sign]}{number}{CHECK_CHARS[int(digits + number) % 31]}"
    return normalise_hetu(code), born


# -- the reference deployment's paths ---------------------------------------------------------------------------------

ORG_TYPE = {org_id: org_type for org_id, org_type, _, _ in ORGANISATIONS}
ORG_ROLE = {org_id: role for org_id, _, _, role in ORGANISATIONS}
ORG_NAME = {org_id: name for org_id, _, name, _ in ORGANISATIONS}
STAFF_PER_ORGANISATION = 80
_SCOPES = frozenset(PARTNER_SCOPES)

# The benchmark's disclosure: the health centre asks for the work assessment Kisälli deposited, on the person's
# explicit consent (flows.md F7; the demo's flow for Mikko Laine in broker/demo.py).
BENCH_PARTNER = "varha-health"
BENCH_SOURCE = "kisalli"
BENCH_CATEGORY = "work_assessment"
BENCH_PURPOSE = "work_capacity_assessment"


@dataclass(frozen=True)
class Terms:
    """A consent as one organisation asks for it (ConsentTerms of broker/services/consents.py)."""

    requester: str
    recipients: tuple[str, ...]
    categories: tuple[str, ...]
    purposes: tuple[str, ...]
    written: bool = False  # "specific and written" (F16, F18)

    @functools.cached_property
    def sets(self) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
        """Recipients, categories and purposes as the policy's facts hold them."""
        return frozenset(self.recipients), frozenset(self.categories), frozenset(self.purposes)


TERMS = {
    "F7": Terms("kisalli", ("varha-health",), ("work_assessment",), ("work_capacity_assessment",)),
    "F8": Terms("varha-health", ("kisalli",), ("health_check_summary",), ("service_delivery",)),
    "F9b": Terms("kisalli", ("kisalli",), ("service_need_assessment",), ("multisector_planning",)),
    "F14": Terms("lieto-youth-outreach", ("kisalli",), ("youth_referral",), ("service_referral",)),
    "F15a": Terms("ohjaamo-turku", ("ohjaamo-turku",), ("service_need_assessment",), ("multisector_planning",)),
    "F18": Terms("kisalli", ("demo-employer",), ("work_assessment",), ("service_delivery",), written=True),
}


@dataclass(frozen=True)
class Path:
    """A service path: who serves the person, what they deposit, which consent they ask for, what they request."""

    name: str
    orgs: tuple[str, ...]  # always; the first resolves the person
    extra_orgs: tuple[str, ...]
    record: tuple[str, str]  # always: (depositing organisation, category)
    extra_records: tuple[tuple[str, str], ...]  # when the organisation serves the person
    consent: str  # always (a key of TERMS)
    extra_consents: tuple[str, ...]
    asks: tuple[tuple[str, str, str], ...]  # (requester, category, purpose), the first ones most often


PATHS = (
    Path(
        "work_activity",
        ("kisalli", "varha-health"),
        ("varha-social-work", "turku-employment", "kela"),
        ("kisalli", "work_assessment"),
        (
            ("kisalli", "attendance_report"),
            ("varha-social-work", "activity_decision"),
            ("turku-employment", "activation_plan"),
            ("varha-health", "health_check_summary"),
            ("kela", "benefit_status"),
        ),
        "F7",
        ("F8", "F9b", "F18"),
        (
            ("varha-health", "work_assessment", "work_capacity_assessment"),
            ("kisalli", "activity_decision", "service_delivery"),
            ("varha-social-work", "attendance_report", "follow_up"),
            ("kisalli", "activation_plan", "service_delivery"),
            ("kisalli", "health_check_summary", "service_delivery"),
            ("kela", "work_assessment", "rehabilitation_decision"),
            ("demo-employer", "work_assessment", "service_delivery"),
        ),
    ),
    Path(
        "activation",
        ("turku-employment", "kisalli"),
        ("varha-social-work", "kela", "ohjaamo-turku"),
        ("turku-employment", "service_need_assessment"),
        (
            ("turku-employment", "activation_plan"),
            ("varha-social-work", "activity_decision"),
            ("kela", "benefit_status"),
            ("kela", "cofinancing_entry"),
        ),
        "F9b",
        ("F15a",),
        (
            ("kisalli", "service_need_assessment", "multisector_planning"),
            ("varha-social-work", "service_need_assessment", "multisector_planning"),
            ("turku-employment", "benefit_status", "activation_planning"),
            ("turku-employment", "activation_plan", "activation_planning"),
            ("kisalli", "activation_plan", "service_delivery"),
            ("kisalli", "cofinancing_entry", "cofinancing_liability"),
            ("ohjaamo-turku", "service_need_assessment", "multisector_planning"),
        ),
    ),
    Path(
        "youth",
        ("lieto-youth-outreach", "kisalli"),
        ("ohjaamo-turku", "varha-social-work"),
        ("lieto-youth-outreach", "youth_referral"),
        (("kisalli", "contact_details"), ("kisalli", "attendance_report")),
        "F14",
        ("F15a",),
        (
            ("kisalli", "youth_referral", "service_referral"),
            ("lieto-youth-outreach", "contact_details", "service_referral"),
            ("varha-social-work", "youth_referral", "service_referral"),
            ("varha-social-work", "attendance_report", "follow_up"),
        ),
    ),
    Path(
        "work_placement",
        ("kisalli", "turku-employment"),
        ("demo-college",),
        ("kisalli", "work_assessment"),
        (("turku-employment", "activation_plan"), ("kisalli", "attendance_report")),
        "F18",
        ("F7",),
        (
            ("demo-employer", "work_assessment", "service_delivery"),
            ("demo-college", "work_assessment", "service_delivery"),
            ("kisalli", "activation_plan", "service_delivery"),
            ("varha-health", "work_assessment", "work_capacity_assessment"),
        ),
    ),
)
_PATH_WEIGHTS = (0.55, 0.25, 0.1, 0.1)
YOUTH_UNTIL = 29  # outreach youth work serves people under 29 (Youth Act 1285/2016 11 §)

# Fictional names; any likeness to a real person's is a coincidence of common Finnish names.
FIRST_NAMES = (
    "Aino", "Anna", "Antti", "Eero", "Elina", "Emma", "Heikki", "Helmi", "Ilkka", "Jari", "Johanna", "Juha",
    "Jukka", "Kaisa", "Kari", "Katja", "Laura", "Leena", "Lauri", "Maria", "Marko", "Matti", "Mika", "Minna",
    "Niko", "Noora", "Oskari", "Outi", "Pekka", "Petra", "Riikka", "Sami", "Sanna", "Tiina", "Timo", "Ville",
)  # fmt: skip
LAST_NAMES = (
    "Aaltonen", "Heikkinen", "Hämäläinen", "Järvinen", "Karjalainen", "Koskinen", "Laaksonen", "Lehtonen",
    "Mäkinen", "Nieminen", "Ojala", "Rantanen", "Salminen", "Tuominen", "Virtanen", "Väisänen",
)  # fmt: skip
WITNESSES = ("Työvalmentaja Pekka Salo", "Sosiaaliohjaaja Mari Lind", "Yksilövalmentaja Outi Rinne")
WITHDRAWAL_REASONS = (None, "Asiakas peruutti puhelimessa.", "Asiakas peruutti tapaamisessa.")
REQUEST_REASONS = (
    "Jotta voimme suunnitella palvelusi yhdessä.",
    "Jotta voimme arvioida, mikä tuki sinulle sopii parhaiten.",
)
LANGUAGES = (("fi", 0.85), ("sv", 0.1), ("en", 0.05))
REQUEST_TTL = timedelta(days=30)  # Settings.consent_request_ttl_days

# -- the rows, in the columns of broker/adapters/orm.py ---------------------------------------------------------------

COLUMNS: dict[str, tuple[str, ...]] = {
    "consent_texts": ("sha256", "version", "language", "text", "created_at"),
    "persons": (
        "id", "hetu_index", "hetu_kek_id", "hetu_wrapped_key", "hetu_nonce", "hetu_ciphertext", "birth_date",
        "display_name", "created_at",
    ),
    "relationships": ("id", "person_id", "organisation_id", "started_at", "ended_at"),
    "consent_requests": (
        "id", "person_id", "requester_org", "requested_by_role", "recipients", "categories", "purposes", "valid_days",
        "reason", "status", "created_at", "expires_at", "answered_at", "consent_id",
    ),
    "consents": (
        "id", "person_id", "version", "status", "requester_org", "recipients", "categories", "purposes", "valid_from",
        "valid_until", "bound_to_org", "explicit", "written", "method", "given_by", "representative_id", "mandate",
        "recorded_by_org", "recorded_by_actor", "recorded_by_role", "witness", "text_sha256", "language",
        "request_id", "created_at", "withdrawn_at",
    ),
    "consent_events": ("consent_id", "version", "action", "at", "by_kind", "by_org", "by_actor", "detail"),
    "records": (
        "id", "person_id", "category", "source_org", "deposited_at", "deposited_by_role", "kek_id", "wrapped_key",
        "nonce", "ciphertext",
    ),
    # audit_entries: "id" (the entry's number within its chunk until the loader gives the append id) and the
    # columns of broker.services.audit_log.pending_entry's row, in its order (ChunkRows.entry_columns).
    "audit_actors": ("entry_id", "actor_id", "salt"),
    "disclosures": (
        "id", "person_id", "kind", "recipient_org", "partner", "category", "purpose", "effect", "basis", "record_ids",
        "fields", "payload_sha256", "policy_version", "audit_entry_id", "created_at",
    ),
    "notices": (
        "id", "person_id", "kind", "sender_org", "recipient_org", "basis", "kek_id", "wrapped_key", "nonce",
        "ciphertext", "created_at", "acked_at",
    ),
}  # fmt: skip
# Where a chunk's rows point to its entries (by number within the chunk): table → column.
ENTRY_REFERENCES = {"audit_actors": "entry_id", "disclosures": "audit_entry_id"}


@dataclass
class ChunkRows:
    """The rows of a chunk of persons, table by table (COLUMNS), with the audit entries numbered 0… in append
    order; `eligible` the benchmark-ready persons (manifest entries), `counts` what was made."""

    first: int
    persons: int
    tables: dict[str, list[tuple[Any, ...]]] = field(default_factory=lambda: {name: [] for name in COLUMNS})
    entries: list[tuple[Any, ...]] = field(default_factory=list)
    entry_columns: tuple[str, ...] = ()
    eligible: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    texts: set[str] = field(default_factory=set)  # the consent texts listed in tables["consent_texts"]


# -- one person -------------------------------------------------------------------------------------------------------


@dataclass
class _Relationship:
    id: str
    org: str
    started_at: datetime
    ended_at: datetime | None = None


@dataclass
class _Consent:
    id: str
    terms: Terms
    valid_from: datetime
    valid_until: datetime | None
    bound_to_org: str | None
    method: str
    written: bool
    text_sha256: str
    language: str
    recorded_by: Caller | None
    witness: str | None
    request_id: str | None
    withdrawn_at: datetime | None = None

    def fact(self, at: datetime) -> ConsentFact:
        withdrawn = self.withdrawn_at is not None and self.withdrawn_at <= at
        return ConsentFact(
            consent_id=self.id,
            version=2 if withdrawn else 1,
            status="withdrawn" if withdrawn else "active",
            recipients=self.terms.sets[0],
            categories=self.terms.sets[1],
            purposes=self.terms.sets[2],
            valid_from=self.valid_from,
            valid_until=self.valid_until,
            explicit=True,
            written=self.written,
            bound_to_org=self.bound_to_org,
            given_by="person",
            mandate=None,
            withdrawn_at=self.withdrawn_at if withdrawn else None,
            requester_org=self.terms.requester,
        )


@dataclass
class _Record:
    id: str
    category: str
    source: str
    deposited_at: datetime


@dataclass(order=True)
class _Event:
    at: datetime
    order: int
    kind: str = field(compare=False)
    data: Any = field(compare=False, default=None)


class ConsentTexts:
    """The consent texts, rendered by the broker's own template (broker/services/consent_texts.py) and kept by
    terms. Rendering reads the organisations' names through a session: here an in-memory copy of the table."""

    def __init__(self, names: dict[str, str], now: datetime) -> None:
        engine = create_engine("sqlite://")
        OrganisationRow.__table__.create(engine)  # type: ignore[attr-defined]
        with engine.begin() as connection:
            connection.execute(
                insert(OrganisationRow),
                [
                    {"id": org, "name": name, "org_type": ORG_TYPE.get(org, "unknown"), "created_at": now}
                    for org, name in names.items()
                ],
            )
        self._session = Session(engine)
        self._known: dict[tuple[Any, ...], tuple[str, str]] = {}

    def text(
        self, language: str, terms: Terms, valid_until: datetime | None, bound_to_org: str | None
    ) -> tuple[str, str]:
        """(SHA-256 hex, text) of the consent text for these terms."""
        day = valid_until.astimezone(HELSINKI).date() if valid_until else None
        key = (language, terms, day, bound_to_org)
        found = self._known.get(key)
        if found is None:
            text = render_consent_text(
                self._session,
                language,
                requester=terms.requester,
                recipients=sorted(set(terms.recipients)),
                categories=sorted(set(terms.categories)),
                purposes=sorted(set(terms.purposes)),
                valid_until=valid_until,
                bound_to_org=bound_to_org,
            )
            found = self._known[key] = (sha256(text.encode("utf-8")).hexdigest(), text)
        return found


class PersonFactory:
    """Makes persons, one chunk at a time, in a worker process (broker/seed/__init__.py)."""

    def __init__(
        self,
        *,
        keys: KeyStore,
        policy: Policy,
        names: dict[str, str],
        seed: int,
        now: datetime,
        entries_per_person: int,
    ) -> None:
        self.keys = keys
        self.policy = policy
        self.seed = seed
        self.now = now
        self.entries_per_person = entries_per_person
        self.texts = ConsentTexts(names, now)
        # Record content: the category's example (schemas/records/examples.py), loaded through its strict schema
        # and serialised exactly as deposit_record serialises it.
        self.contents: dict[str, tuple[dict[str, Any], bytes, list[str]]] = {}
        for category, example in EXAMPLES.items():
            loaded = load_record(category, example)
            plaintext = json.dumps(loaded, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()
            self.contents[category] = (loaded, plaintext, sorted(loaded))

    def chunk(self, first: int, count: int) -> ChunkRows:
        rows = ChunkRows(first=first, persons=count)
        for ordinal in range(first, first + count):
            _Person(self, rows, ordinal).make()
        for table, values in rows.tables.items():
            if table != "consent_texts":  # texts are shared: a chunk lists those it uses, stored once
                rows.counts[table] = len(values)
        rows.counts["audit_entries"] = len(rows.entries)
        return rows


class _Person:
    """One person's history, planned within an entry budget, then played in time order."""

    def __init__(self, factory: PersonFactory, rows: ChunkRows, ordinal: int) -> None:
        self.f = factory
        self.rows = rows
        # Reproducible fictional data, not secrets: the seeded identifiers and salts are as guessable as the seed.
        self.rng = random.Random(f"broker-seed/{factory.seed}/{ordinal}")  # noqa: S311  # nosec B311
        self.code, self.born = identity_code(ordinal)
        self.id = self._id("per")
        self.now = factory.now
        self.entries_before = len(rows.entries)
        self.relationships: dict[str, _Relationship] = {}
        self.consents: list[_Consent] = []
        self.records: list[_Record] = []
        self.events: list[_Event] = []

    # -- randomness -----------------------------------------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{self.rng.getrandbits(128):032x}"  # as broker.services.new_id: a prefix and 128 bits

    def _between(self, start: datetime, end: datetime) -> datetime:
        span = max((end - start).total_seconds(), 0.0)
        return start + timedelta(microseconds=int(self.rng.random() * span * 1_000_000))

    def _caller(self, org: str) -> Caller:
        return Caller(
            partner_id=org,
            organisation_id=org,
            org_type=ORG_TYPE[org],
            actor_id=f"{org}-staff-{self.rng.randrange(1, STAFF_PER_ORGANISATION + 1):03d}",
            actor_role=ORG_ROLE[org],
            scopes=_SCOPES,
            request_id=f"{self.rng.getrandbits(64):016x}",
        )

    def _event(self, at: datetime, kind: str, data: Any = None) -> None:
        # Strictly before the seeding time, and never before the person was first resolved.
        at = min(max(at, self.start + timedelta(microseconds=1)), self.now - timedelta(seconds=1))
        self.events.append(_Event(at, len(self.events), kind, data))

    # -- the plan -----------------------------------------------------------------------------------------------

    def make(self) -> None:
        rng = self.rng
        now = self.now
        path = rng.choices(PATHS, _PATH_WEIGHTS)[0]
        if path.name == "youth" and age(self.born, now) >= YOUTH_UNTIL:
            path = PATHS[0]
        # The history runs from 90 days to three years back, to the seeding time.
        self.start = now - timedelta(seconds=rng.uniform(90, 3 * 365) * 86400)
        window = now - self.start
        budget = self.f.entries_per_person
        # Mandatory: resolve, the path's relationships, its record and its consent: 5 entries (MIN_ENTRIES).
        budget -= 1 + len(path.orgs) + 2
        reserve = min(budget, max(1, self.f.entries_per_person // 4))  # kept for requests, tokens, look-ups

        def fits(n: int) -> bool:
            nonlocal budget
            if budget - n < reserve:
                return False
            budget -= n
            return True

        orgs = list(path.orgs)
        rel_start = {org: self.start + window * (0.001 + 0.009 * i) for i, org in enumerate(orgs)}
        # The path's own consent: kept active to the end on the work-activity path three times in four (those
        # persons are the benchmark's), otherwise any of given and kept, withdrawn, or left to expire.
        kept = path.name == "work_activity" and rng.random() < 0.75
        consents: list[tuple[str, bool, bool]] = [(path.consent, False, kept)]  # (terms, by portal, kept active)
        for key in path.extra_consents:
            if TERMS[key].requester in orgs and rng.random() < 0.6 and fits(1):
                consents.append((key, False, False))
        # Given in the portal (asked by the requester, answered by the person: two entries) about one time in four.
        consents = [(key, rng.random() < 0.25 and fits(1), keep) for key, _, keep in consents]
        withdrawals = [i for i, (_, _, keep) in enumerate(consents) if not keep and rng.random() < 0.35 and fits(1)]
        for org in rng.sample(path.extra_orgs, len(path.extra_orgs)):
            if rng.random() < 0.3 and fits(1):
                orgs.append(org)
                rel_start[org] = self.start + window * rng.uniform(0.01, 0.4)
        records = [path.record] + [r for r in path.extra_records if r[0] in orgs and rng.random() < 0.5 and fits(1)]
        ends = [o for o in orgs[len(path.orgs) :] if rng.random() < 0.15 and fits(1)]
        activity = budget  # the reserve and whatever the options left

        # Times, then play in time order.
        self._event(self.start, "resolve", (orgs[0], True))
        for org in orgs:
            self._event(rel_start[org], "relationship", org)
        for org, category in records:
            self._event(rel_start[org] + window * rng.uniform(0.01, 0.2), "deposit", (org, category))
        for i, (key, by_portal, keep) in enumerate(consents):
            terms = TERMS[key]
            asked = rel_start.get(terms.requester, self.start) + window * rng.uniform(0.01, 0.3)
            self._event(asked, "consent", (key, by_portal, keep, i in withdrawals))
        for org in ends:
            self._event(self._between(rel_start[org] + window * 0.3, now), "end", org)
        asks = path.asks
        weights = [len(asks) - i for i in range(len(asks))]  # the path's main flow most often
        for _ in range(activity):
            at = self._between(self.start + window * 0.05, now)
            roll = rng.random()
            if roll < 0.72:
                self._event(at, "disclose", rng.choices(asks, weights)[0])
            elif roll < 0.8:
                self._event(at, "query", rng.choices(asks, weights)[0])
            elif roll < 0.9:
                self._event(at, "token", rng.choice(orgs))
            else:
                self._event(at, "lookup", rng.choice(orgs))
        self._play()
        self._finish(path)

    # -- playing the events ---------------------------------------------------------------------------------------

    def _play(self) -> None:
        pending = sorted(self.events)
        # A consent given through the portal is two entries, the request and the answer; a withdrawal is an event
        # of its own. Both are scheduled while playing, after the event that causes them.
        while pending:
            event = pending.pop(0)
            kind, data, at = event.kind, event.data, event.at
            if kind == "resolve":
                self._resolve(at, data[0], created=data[1])
            elif kind == "lookup":
                self._resolve(at, data, created=False)
            elif kind == "relationship":
                self._start_relationship(at, data)
            elif kind == "end":
                self._end_relationship(at, data)
            elif kind == "deposit":
                self._deposit(at, *data)
            elif kind == "consent":
                for follow in self._consent(at, *data):
                    _insert_sorted(pending, follow)
            elif kind == "portal_grant":
                for follow in self._portal_grant(at, *data):
                    _insert_sorted(pending, follow)
            elif kind == "withdraw":
                self._withdraw(at, *data)
            elif kind == "disclose":
                self._disclose(at, *data)
            elif kind == "query":
                self._query(at, *data)
            elif kind == "token":
                self._token(at, data)
            else:  # pragma: no cover - every kind is scheduled above
                raise AssertionError(kind)

    def _follow(self, at: datetime, kind: str, data: Any) -> _Event:
        at = min(at, self.now - timedelta(seconds=1))
        self.events.append(event := _Event(at, len(self.events), kind, data))
        return event

    def _entry(self, at: datetime, event: str, *, caller: Caller | None = None, **arguments: Any) -> int:
        """Build one audit entry with the audit code's own function; return its number within the chunk."""
        salt = f"{self.rng.getrandbits(256):064x}"
        if caller is None and "actor" not in arguments:
            salt = None  # type: ignore[assignment]
        row, opening = pending_entry(event=event, now=at, salt=salt, caller=caller, **arguments)
        rows = self.rows
        number = len(rows.entries)
        if not rows.entry_columns:
            rows.entry_columns = ("id", *row)
        rows.entries.append((number, *row.values()))
        if opening is not None:
            rows.tables["audit_actors"].append((number, *opening))
        rows.counts[f"entries:{event}"] += 1
        return number

    def _resolve(self, at: datetime, org: str, *, created: bool) -> None:
        if created:
            sealed = seal_hetu(self.code, self.id, self.f.keys)
            name = f"{self.rng.choice(FIRST_NAMES)} {self.rng.choice(LAST_NAMES)}"
            self.rows.tables["persons"].append(
                (
                    self.id,
                    hetu_index(self.code, self.f.keys),
                    sealed.kek_id,
                    sealed.wrapped_key,
                    sealed.nonce,
                    sealed.ciphertext,
                    self.born,
                    name,
                    at,
                )
            )
        self._entry(at, "person:resolve", caller=self._caller(org), person_id=self.id, detail={"created": created})

    def _start_relationship(self, at: datetime, org: str) -> None:
        relationship = self.relationships[org] = _Relationship(self._id("rel"), org, at)
        self._entry(
            at,
            "relationship:start",
            caller=self._caller(org),
            person_id=self.id,
            detail={"relationship_id": relationship.id},
        )

    def _end_relationship(self, at: datetime, org: str) -> None:
        relationship = self.relationships[org]
        relationship.ended_at = at
        self._entry(
            at,
            "relationship:end",
            caller=self._caller(org),
            person_id=self.id,
            detail={"relationship_id": relationship.id},
        )

    def _deposit(self, at: datetime, org: str, category: str) -> None:
        _loaded, plaintext, fields = self.f.contents[category]
        record = _Record(self._id("rec"), category, org, at)
        sealed = seal(plaintext, record_aad(record.id, self.id, category), self.f.keys)
        self.records.append(record)
        self.rows.tables["records"].append(
            (
                record.id,
                self.id,
                category,
                org,
                at,
                ORG_ROLE[org],
                sealed.kek_id,
                sealed.wrapped_key,
                sealed.nonce,
                sealed.ciphertext,
            )
        )
        self._entry(
            at,
            "record:deposit",
            caller=self._caller(org),
            person_id=self.id,
            category=category,
            record_ids=[record.id],
            fields=fields,
        )

    def _language(self) -> str:
        return self.rng.choices([code for code, _ in LANGUAGES], [weight for _, weight in LANGUAGES])[0]

    def _validity(self, at: datetime, keep: bool, *, portal: bool) -> tuple[datetime | None, bool]:
        """(valid_until, bound to the requester's relationship) of a consent given at `at`."""
        rng = self.rng
        if keep:  # in force for a benchmark run at any time within the next three months at least
            if rng.random() < 0.2 and not portal:
                return None, False
            return self.now + timedelta(days=rng.uniform(90, 540)), False
        roll = rng.random()
        if roll < 0.1 and not portal:
            return None, True
        if roll < 0.25 and not portal:
            return None, False
        return at + timedelta(days=rng.choice((90, 180, 365))), False

    def _consent(self, at: datetime, key: str, by_portal: bool, keep: bool, withdraw: bool) -> list[_Event]:
        terms = TERMS[key]
        caller = self._caller(terms.requester)
        if by_portal:
            # The requester asks (consents.request_consent); the person answers in the portal some hours or days
            # later, within the request's lifetime (person_portal.grant_request).
            answered = at + timedelta(seconds=self.rng.uniform(3600, 7 * 86400))
            valid_until, _ = self._validity(answered, keep, portal=True)
            valid_days = None if valid_until is None else math.ceil((valid_until - answered).total_seconds() / 86400)
            request_id = self._id("req")
            reason = self.rng.choice(REQUEST_REASONS)
            detail = {"consent_request_id": request_id}
            self._entry(at, "consent:request", caller=caller, person_id=self.id, detail=detail)
            request = (request_id, terms, caller.actor_role, valid_days, reason, at)
            return [self._follow(min(answered, at + REQUEST_TTL), "portal_grant", (request, keep, withdraw))]
        method = "in_person" if self.rng.random() < 0.7 else "paper"
        valid_until, bound = self._validity(at, keep, portal=False)
        witness = self.rng.choice(WITNESSES) if method == "in_person" else None
        consent = self._add_consent(
            at,
            terms,
            valid_until=valid_until,
            bound=bound,
            method=method,
            written=terms.written or method == "paper",
            recorded_by=caller,
            witness=witness,
            request_id=None,
        )
        self._entry(
            at,
            "consent:grant",
            caller=caller,
            person_id=self.id,
            basis={"kind": "consent", "consent_id": consent.id, "consent_version": 1},
            detail={"method": method},
        )
        return self._withdrawal(consent, at, professional=True) if withdraw else []

    def _portal_grant(self, at: datetime, request: tuple[Any, ...], keep: bool, withdraw: bool) -> list[_Event]:
        request_id, terms, role, valid_days, reason, asked = request
        valid_until = at + timedelta(days=valid_days) if valid_days else None
        consent = self._add_consent(
            at,
            terms,
            valid_until=valid_until,
            bound=False,
            method="portal",
            written=True,
            recorded_by=None,
            witness=None,
            request_id=request_id,
        )
        self.rows.tables["consent_requests"].append(
            (
                request_id,
                self.id,
                terms.requester,
                role,
                sorted(set(terms.recipients)),
                sorted(set(terms.categories)),
                sorted(set(terms.purposes)),
                valid_days,
                reason,
                "granted",
                asked,
                asked + REQUEST_TTL,
                at,
                consent.id,
            )
        )
        self._entry(
            at,
            "consent:grant",
            actor=(self.id, "person"),
            person_id=self.id,
            basis={"kind": "consent", "consent_id": consent.id, "consent_version": 1},
            detail={"method": "portal", "consent_request_id": request_id},
        )
        return self._withdrawal(consent, at, professional=False) if withdraw else []

    def _withdrawal(self, consent: _Consent, at: datetime, *, professional: bool) -> list[_Event]:
        # While the consent is in force: the portal lets a person withdraw only an active consent, not an expired
        # one (person_portal.withdraw_consent).
        end = min(self.now, consent.valid_until) if consent.valid_until else self.now
        when = self._between(at + (end - at) * 0.05, at + (end - at) * 0.9)
        return [self._follow(when, "withdraw", (consent, professional))]

    def _add_consent(
        self,
        at: datetime,
        terms: Terms,
        *,
        valid_until: datetime | None,
        bound: bool,
        method: str,
        written: bool,
        recorded_by: Caller | None,
        witness: str | None,
        request_id: str | None,
    ) -> _Consent:
        language = self._language()
        bound_to_org = terms.requester if bound else None
        digest, text = self.f.texts.text(language, terms, valid_until, bound_to_org)
        if digest not in self.rows.texts:
            self.rows.texts.add(digest)
            self.rows.tables["consent_texts"].append((digest, TEMPLATE_VERSION, language, text, at))
        consent = _Consent(
            id=self._id("con"),
            terms=terms,
            valid_from=at,
            valid_until=valid_until,
            bound_to_org=bound_to_org,
            method=method,
            written=written,
            text_sha256=digest,
            language=language,
            recorded_by=recorded_by,
            witness=witness,
            request_id=request_id,
        )
        self.consents.append(consent)
        by_kind = "professional" if recorded_by else "person"
        self.rows.tables["consent_events"].append(
            (
                consent.id,
                1,
                "grant",
                at,
                by_kind,
                recorded_by.organisation_id if recorded_by else None,
                recorded_by.actor_id if recorded_by else self.id,
                {"method": method, "witness": witness} if witness else {"method": method},
            )
        )
        return consent

    def _withdraw(self, at: datetime, consent: _Consent, professional: bool) -> None:
        consent.withdrawn_at = at
        terms = consent.terms
        if professional:
            # consents.withdraw_consent, recorded by the requester's professional; the others named are told.
            caller = self._caller(terms.requester)
            told = sorted({terms.requester, *terms.recipients} - {caller.organisation_id})
            reason = self.rng.choice(WITHDRAWAL_REASONS)
            event_row: tuple[str, str | None, str, dict[str, Any]] = (
                "professional",
                caller.organisation_id,
                caller.actor_id,
                {"reason": reason} if reason else {},
            )
        else:
            # person_portal.withdraw_consent: the person withdraws; the requester and every recipient are told.
            caller = None
            told = list(dict.fromkeys([terms.requester, *sorted(set(terms.recipients))]))
            event_row = ("person", None, self.id, {})
        self.rows.tables["consent_events"].append((consent.id, 2, "withdraw", at, *event_row))
        notice_ids = self._withdrawal_notices(consent, told, at)
        basis = {"kind": "consent", "consent_id": consent.id, "consent_version": 2}
        if caller is not None:
            detail: dict[str, Any] = {"told": told, "notice_ids": notice_ids}
            self._entry(at, "consent:withdraw", caller=caller, person_id=self.id, basis=basis, detail=detail)
        else:
            detail = {"method": "portal", "told": told, "notice_ids": notice_ids}
            actor = (self.id, "person")
            self._entry(at, "consent:withdraw", actor=actor, person_id=self.id, basis=basis, detail=detail)

    def _withdrawal_notices(self, consent: _Consent, told: list[str], at: datetime) -> list[str]:
        """notices.notify_consent_withdrawn: one sealed notice to each organisation told."""
        content = {
            "consent_id": consent.id,
            "withdrawn_at": utc(at).isoformat().replace("+00:00", "Z"),
            "categories": sorted(set(consent.terms.categories)),
            "purposes": sorted(set(consent.terms.purposes)),
        }
        plaintext = json.dumps(content, ensure_ascii=False).encode()
        ids = []
        for organisation in told:
            notice_id = self._id("not")
            sealed = seal(plaintext, _notice_aad(notice_id, self.id, CONSENT_WITHDRAWN), self.f.keys)
            self.rows.tables["notices"].append(
                (
                    notice_id,
                    self.id,
                    CONSENT_WITHDRAWN,
                    None,
                    organisation,
                    None,
                    sealed.kek_id,
                    sealed.wrapped_key,
                    sealed.nonce,
                    sealed.ciphertext,
                    at,
                    None,
                )
            )
            ids.append(notice_id)
        return ids

    # -- decisions --------------------------------------------------------------------------------------------

    def _facts(self, at: datetime) -> Facts:
        relationships = frozenset(
            r.org for r in self.relationships.values() if r.started_at <= at and (r.ended_at is None or at < r.ended_at)
        )
        return Facts(
            relationships=relationships,
            consents=tuple(c.fact(at) for c in self.consents),
            person_is_minor=is_minor(self.born, at),
            has_legal_representative=False,
            person_age=age(self.born, at),
        )

    def _request(self, caller: Caller, category: str, purpose: str, source: str | None) -> DecisionRequest:
        return DecisionRequest(
            requester_org=caller.organisation_id,
            requester_org_type=caller.org_type,
            requester_role=caller.actor_role,
            person_id=self.id,
            category=category,
            purpose=purpose,
            source_org=source,
            source_org_type=ORG_TYPE[source] if source else None,
        )

    def _decisions(
        self, caller: Caller, category: str, purpose: str, at: datetime
    ) -> tuple[list[_Record], dict[str, Decision]]:
        """disclosures.request_disclosure's decisions: one per source organisation of the category's records."""
        facts = self._facts(at)
        records = sorted((r for r in self.records if r.category == category), key=lambda r: (r.deposited_at, r.id))
        policy = self.f.policy
        decisions = {
            source: decide(self._request(caller, category, purpose, source), facts, policy, at)
            for source in sorted({r.source for r in records})
        }
        if not records:
            decisions[""] = decide(self._request(caller, category, purpose, None), facts, policy, at)
        return records, decisions

    def _disclose(self, at: datetime, requester: str, category: str, purpose: str) -> None:
        caller = self._caller(requester)
        records, decisions = self._decisions(caller, category, purpose, at)
        permitted = {source: d for source, d in decisions.items() if d.permitted}
        disclosure_id = self._id("dis")
        table = self.rows.tables["disclosures"]
        if not permitted:
            denial = next(iter(decisions.values()))
            number = self._entry(
                at,
                "disclosure:deny",
                caller=caller,
                person_id=self.id,
                category=category,
                purpose=purpose,
                effect="deny",
                policy_version=denial.policy_version,
                detail={"disclosure_id": disclosure_id, "reasons": sorted({r.code for r in denial.reasons})},
            )
            table.append(
                (
                    disclosure_id, self.id, "request", requester, caller.partner_id, category, purpose, "deny", None,
                    [], [], None, denial.policy_version, number, at,
                )
            )  # fmt: skip
            self.rows.counts["disclosures_denied"] += 1
            return
        primary = next(iter(permitted.values()))
        disclosed: list[dict[str, Any]] = []
        for record in records:
            decision = permitted.get(record.source)
            if decision is None:
                continue
            content = self.f.contents[record.category][0]
            disclosed.append(
                disclosed_item(record.id, record.category, record.source, record.deposited_at, decision, content)
            )
        fields = sorted({name for item in disclosed for name in item["content"]})
        digest = payload_digest(disclosed)
        basis = primary.basis.as_dict() if primary.basis else None
        bases = [d.basis.as_dict() for d in permitted.values() if d.basis]
        record_ids = [item["record_id"] for item in disclosed]
        number = self._entry(
            at,
            "disclosure:permit",
            caller=caller,
            person_id=self.id,
            category=category,
            purpose=purpose,
            effect="permit",
            basis=basis,
            policy_version=primary.policy_version,
            record_ids=record_ids,
            fields=fields,
            payload_sha256=digest,
            detail={
                "disclosure_id": disclosure_id,
                "withheld": len(records) - len(disclosed),
                **({"bases": bases} if len(bases) > 1 else {}),
            },
        )
        table.append(
            (
                disclosure_id, self.id, "request", requester, caller.partner_id, category, purpose, "permit", basis,
                record_ids, fields, digest, primary.policy_version, number, at,
            )
        )  # fmt: skip
        self.rows.counts["disclosures_permitted"] += 1

    def _query(self, at: datetime, requester: str, category: str, purpose: str) -> None:
        """disclosures.query_decision: a dry run, audited, with no source named."""
        caller = self._caller(requester)
        decision = decide(self._request(caller, category, purpose, None), self._facts(at), self.f.policy, at)
        self._entry(
            at,
            "decision:query",
            caller=caller,
            person_id=self.id,
            category=category,
            purpose=purpose,
            effect=decision.effect,
            basis=decision.basis.as_dict() if decision.basis else None,
            policy_version=decision.policy_version,
        )

    def _token(self, at: datetime, org: str) -> None:
        """app._log_token_issue: a partner's professional obtained an access token (no person in the entry)."""
        caller = self._caller(org)
        prefix = f"{self.rng.getrandbits(64):016x}"
        detail = {"token_hash_prefix": prefix, "scopes": sorted(caller.scopes)}
        self._entry(at, "token:issue", caller=caller, detail=detail)

    # -- the rows that reflect the end state ----------------------------------------------------------------------

    def _finish(self, path: Path) -> None:
        tables = self.rows.tables
        counts = self.rows.counts
        for relationship in self.relationships.values():
            tables["relationships"].append(
                (relationship.id, self.id, relationship.org, relationship.started_at, relationship.ended_at)
            )
        for c in self.consents:
            recorded = c.recorded_by
            withdrawn = c.withdrawn_at is not None
            tables["consents"].append(
                (
                    c.id, self.id, 2 if withdrawn else 1, "withdrawn" if withdrawn else "active", c.terms.requester,
                    sorted(set(c.terms.recipients)), sorted(set(c.terms.categories)), sorted(set(c.terms.purposes)),
                    c.valid_from, c.valid_until, c.bound_to_org, True, c.written, c.method, "person", None, None,
                    recorded.organisation_id if recorded else None, recorded.actor_id if recorded else None,
                    recorded.actor_role if recorded else None, c.witness, c.text_sha256, c.language, c.request_id,
                    c.valid_from, c.withdrawn_at,
                )
            )  # fmt: skip
            if withdrawn:
                counts["consents_withdrawn"] += 1
            elif c.valid_until is not None and c.valid_until <= self.now:
                counts["consents_expired"] += 1
        counts["relationships_ended"] += sum(1 for r in self.relationships.values() if r.ended_at is not None)
        counts[f"path:{path.name}"] += 1
        made = len(self.rows.entries) - self.entries_before
        if made != self.f.entries_per_person:  # the plan's budget is exact: a mismatch is a bug here
            raise AssertionError(f"person {self.id}: {made} entries instead of {self.f.entries_per_person}")
        self._check_benchmark_ready()

    def _check_benchmark_ready(self) -> None:
        """A person is listed in the manifest when the benchmark's disclosure is permitted now, decided by the
        policy on the person's final facts, with a record from the benchmark's source."""
        records = [r for r in self.records if r.category == BENCH_CATEGORY and r.source == BENCH_SOURCE]
        consent = next(
            (
                c
                for c in self.consents
                if c.terms is TERMS["F7"]
                and c.withdrawn_at is None
                and (c.valid_until is None or c.valid_until > self.now + timedelta(days=30))
            ),
            None,
        )
        if not records or consent is None:
            return
        org_type, role = ORG_TYPE[BENCH_PARTNER], ORG_ROLE[BENCH_PARTNER]
        caller = Caller(BENCH_PARTNER, BENCH_PARTNER, org_type, f"{BENCH_PARTNER}-staff-001", role, frozenset())
        request = self._request(caller, BENCH_CATEGORY, BENCH_PURPOSE, BENCH_SOURCE)
        decision = decide(request, self._facts(self.now), self.f.policy, self.now)
        if decision.permitted and decision.basis is not None and decision.basis.consent_id == consent.id:
            self.rows.eligible.append(
                {"person_id": self.id, "consent_id": consent.id, "record_ids": [r.id for r in records]}
            )


def _insert_sorted(events: list[_Event], event: _Event) -> None:
    low, high = 0, len(events)
    while low < high:
        middle = (low + high) // 2
        if events[middle] < event:
            low = middle + 1
        else:
            high = middle
    events.insert(low, event)
