"""Retention: erasing record content whose retention period has ended (flows.md, "Retention"; issue #5 item 9).

The schedule is data, `policies/retention.yaml`, with an entry for every record category, so that the register
of processing can show the time limits for erasure of each category (GDPR Art. 30(1)(f)). A period runs from the
end of the depositing organisation's service relationship with the person — for social services the matter
closes when that organisation stops serving them — and never from before the record was deposited. While the
organisation still serves the person the record is kept; a record without a rule, or whose organisation never
had a relationship with the person, is kept too: nothing is erased without a rule and a date to count from.

Erasing sets the record's ciphertext to NULL; its metadata (id, person, category, source, deposit time) stays, so
the person's data download and the log still name the record, and disclosures simply no longer find it
(`broker.services.disclosures` reads only records that still have content). Each erasure appends a `record:erase`
entry — record id, category, rule and statute, never content — in the transaction that erases, so the log stays
complete and verifiable: it never held content, and nothing in it changes.

`run_retention` scans the live records a page at a time (read-only) and erases each page's due records in one
transaction, which first locks the persons (`FOR UPDATE`, as every change to what a decision reads does, so that
no relationship can start or end under it and no disclosure records on the records' old state) and the records
(`FOR UPDATE`), and decides again on what it reads: a second run, or two runs at once, erase nothing twice.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo

import yaml
from sqlalchemy import select, update

from broker.adapters.orm import OrganisationRow, PersonRow, RecordRow, RelationshipRow
from broker.adapters.uow import UnitOfWork
from broker.domain.clock import utc
from broker.domain.errors import InvalidRequestError
from broker.services import Broker
from broker.services.audit_log import append_entry
from policies import Policy, PolicyError
from policies.loader import PACKAGE_DIR, display_path

SCHEDULE_FILE = PACKAGE_DIR / "retention.yaml"
# The periods are the law's, counted on the Finnish calendar: a relationship that ends at 00:30 in Helsinki ends
# on that Helsinki day, whatever the UTC date.
CALENDAR = ZoneInfo("Europe/Helsinki")
# The only event a period can run from (see the module docstring); the file names it so that it reads as a rule.
TRIGGERS = ("relationship_end",)
# The log's actor for the job: the id goes into the leaf only as a salted commitment, the role as it is.
ACTOR = ("retention", "system")

Status = Literal["erase", "open", "running", "no_relationship", "no_rule"]


class RetentionScheduleError(PolicyError):
    """`policies/retention.yaml` is invalid; one line per problem, naming the file and the field."""

    code: ClassVar[str] = "invalid_retention_schedule"


class RetentionRunError(InvalidRequestError):
    code = "invalid_retention_run"


# --- the schedule ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetentionRule:
    id: str
    years: int
    after: str  # one of TRIGGERS
    reference: str  # the statute and section that set the period
    description: str


@dataclass(frozen=True, slots=True)
class CategoryRetention:
    category: str
    rule: RetentionRule | None  # None: no period known, the record is kept
    by_source: Mapping[str, RetentionRule | None]  # depositing organisation's type → its rule, where it differs
    note: str

    def rule_for(self, source_org_type: str | None) -> RetentionRule | None:
        if source_org_type is not None and source_org_type in self.by_source:
            return self.by_source[source_org_type]
        return self.rule


@dataclass(frozen=True)
class RetentionSchedule:
    rules: Mapping[str, RetentionRule]
    categories: Mapping[str, CategoryRetention]

    def rule_for(self, category: str, source_org_type: str | None) -> RetentionRule | None:
        entry = self.categories.get(category)
        return entry.rule_for(source_org_type) if entry is not None else None


_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_RULE_KEYS = frozenset({"years", "after", "reference", "description"})
_CATEGORY_KEYS = frozenset({"rule", "by_source", "note"})
# Longer than any period in the 703/2023 annex (120 years from birth): a larger number is a typo.
_MAX_YEARS = 120


def load_retention_schedule(policy: Policy, path: Path | None = None) -> RetentionSchedule:
    """Read and validate the schedule (default: the shipped `policies/retention.yaml`) against the policy's
    categories and org types; raises RetentionScheduleError naming file and field."""
    path = path if path is not None else SCHEDULE_FILE
    shown = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RetentionScheduleError(f"{shown}: cannot be read: {error}") from None
    return parse_retention_schedule(text, policy, shown)


def parse_retention_schedule(text: str, policy: Policy, shown: str = "retention.yaml") -> RetentionSchedule:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise RetentionScheduleError(f"{shown}: {error}".replace("\n", " ")) from None
    if not isinstance(document, dict):
        raise RetentionScheduleError(f"{shown}: must be a mapping with 'rules' and 'categories'")
    errors: list[str] = []

    def fail(where: str, message: str) -> None:
        errors.append(f"{shown}: {where}: {message}")

    for key in sorted(set(document) - {"rules", "categories"}, key=str):
        fail(str(key), "unknown key (expected 'rules' and 'categories')")
    rules, declared = _rules(document.get("rules"), fail)
    categories, used = _categories(document.get("categories"), rules, declared, policy, fail)
    for name in sorted(declared - used):
        fail(f"rules.{name}", "no category uses this rule")
    if errors:
        raise RetentionScheduleError(errors)
    return RetentionSchedule(rules=MappingProxyType(rules), categories=MappingProxyType(categories))


def _rules(data: Any, fail: Any) -> tuple[dict[str, RetentionRule], set[str]]:
    """The valid rules, and the names of all rules declared (valid or not): a category that names a declared
    but invalid rule is not reported again."""
    if not isinstance(data, dict) or not data:
        fail("rules", "must be a non-empty mapping of rule name to rule")
        return {}, set()
    rules: dict[str, RetentionRule] = {}
    declared: set[str] = set()
    for name, body in data.items():
        where = f"rules.{name}"
        if not isinstance(name, str) or not _NAME.match(name):
            fail(where, "a rule's name must be snake_case")
            continue
        declared.add(name)
        if not isinstance(body, dict):
            fail(where, "must be a mapping with years, after, reference and description")
            continue
        problems = len(_keys(body, _RULE_KEYS, _RULE_KEYS, where, fail))
        years = body.get("years")
        # bool is an int in Python: refuse `years: yes` rather than read it as 1.
        if "years" in body and (isinstance(years, bool) or not isinstance(years, int) or not 1 <= years <= _MAX_YEARS):
            fail(f"{where}.years", f"must be a whole number of years from 1 to {_MAX_YEARS}")
            problems += 1
        if "after" in body and body["after"] not in TRIGGERS:
            fail(f"{where}.after", f"must be one of: {', '.join(TRIGGERS)}")
            problems += 1
        for key in ("reference", "description"):
            if key in body and not _text(body[key]):
                fail(f"{where}.{key}", "must be non-empty text")
                problems += 1
        if not problems:
            rules[name] = RetentionRule(
                id=name,
                years=body["years"],
                after=body["after"],
                reference=body["reference"].strip(),
                description=body["description"].strip(),
            )
    return rules, declared


def _categories(
    data: Any, rules: Mapping[str, RetentionRule], declared: set[str], policy: Policy, fail: Any
) -> tuple[dict[str, CategoryRetention], set[str]]:
    """The valid category entries, and the names of the rules they use."""
    if not isinstance(data, dict):
        fail("categories", "must be a mapping of record category to its retention")
        return {}, set()
    used: set[str] = set()

    def named(value: Any, where: str) -> tuple[RetentionRule | None, bool]:
        if value is None:
            return None, True
        if isinstance(value, str) and value in declared:
            used.add(value)
            return rules.get(value), value in rules  # an invalid rule is reported once, under rules
        fail(where, f"unknown rule {value!r} (a name under 'rules', or null to keep the records)")
        return None, False

    for missing in sorted(policy.categories - set(data)):
        fail("categories", f"no entry for '{missing}': name its rule, or `rule: null` with a note to keep it")
    entries: dict[str, CategoryRetention] = {}
    for name, body in data.items():
        where = f"categories.{name}"
        if name not in policy.categories:
            fail(where, "not a category of the policy vocabulary (policies/rules/vocabulary.yaml)")
            continue
        if not isinstance(body, dict):
            fail(where, "must be a mapping with rule, note and optionally by_source")
            continue
        problems = len(_keys(body, _CATEGORY_KEYS, {"rule", "note"}, where, fail))
        rule, ok = named(body.get("rule"), f"{where}.rule")
        problems += not ok
        by_source: dict[str, RetentionRule | None] = {}
        sources = body.get("by_source")
        if "by_source" in body and (not isinstance(sources, dict) or not sources):
            fail(f"{where}.by_source", "must be a non-empty mapping of org type to rule (or leave it out)")
            problems += 1
        for org_type, value in sources.items() if isinstance(sources, dict) else ():
            if org_type not in policy.org_types:
                fail(f"{where}.by_source.{org_type}", "not an org type of the policy vocabulary")
                problems += 1
                continue
            by_source[org_type], ok = named(value, f"{where}.by_source.{org_type}")
            problems += not ok
        if "note" in body and not _text(body["note"]):
            fail(f"{where}.note", "must be non-empty text: say why this rule (or why none)")
            problems += 1
        if not problems:
            entries[name] = CategoryRetention(
                category=name, rule=rule, by_source=MappingProxyType(by_source), note=body["note"].strip()
            )
    return entries, used


def _keys(body: Mapping[Any, Any], allowed: frozenset[str], required: Any, where: str, fail: Any) -> list[str]:
    """Report unknown and missing keys; return the problems found."""
    problems = []
    for key in sorted(set(body) - allowed, key=str):
        problems.append(f"{where}.{key}")
        fail(f"{where}.{key}", "unknown key")
    for key in sorted(set(required) - set(body)):
        problems.append(f"{where}.{key}")
        fail(f"{where}.{key}", "missing")
    return problems


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


# --- when a period ends ----------------------------------------------------------------------------------------


def add_years(day: date, years: int) -> date:
    """The day `years` after `day`, as 150/1930 3 § counts a period in years: the day with the same number in
    that month, or the month's last day when it has none (29 February → 28 February)."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # only 29 February has no counterpart, and only in February
        return day.replace(year=day.year + years, day=28)


def retention_ends_on(rule: RetentionRule, closed_at: datetime, deposited_at: datetime) -> date:
    """The day the record's period ends, and from which it is erased: `rule.years` after the later of the
    relationship's end and the record's deposit, on the Finnish calendar."""
    start = max(utc(closed_at), utc(deposited_at)).astimezone(CALENDAR).date()
    return add_years(start, rule.years)


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Status
    rule: RetentionRule | None = None
    ends_on: date | None = None


def judge(
    rule: RetentionRule | None,
    *,
    deposited_at: datetime,
    relationship_ends: Sequence[datetime | None],
    now: datetime,
) -> Verdict:
    """What retention says of one record now. `relationship_ends` holds the `ended_at` of every service
    relationship the depositing organisation has had with the person (None for one still open)."""
    if rule is None:
        return Verdict("no_rule")
    if not relationship_ends:
        return Verdict("no_relationship", rule)
    ends = [end for end in relationship_ends if end is not None]
    if len(ends) < len(relationship_ends):
        return Verdict("open", rule)
    ends_on = retention_ends_on(rule, max(utc(end) for end in ends), deposited_at)
    today = utc(now).astimezone(CALENDAR).date()
    return Verdict("erase" if today >= ends_on else "running", rule, ends_on)


# --- the run ---------------------------------------------------------------------------------------------------


@dataclass
class CategoryTally:
    """Records of one category, by what this run did with them (in a dry run: would have done)."""

    erased: int = 0
    kept_open: int = 0  # the depositing organisation still serves the person
    kept_running: int = 0  # the relationship has ended, the period has not
    kept_no_relationship: int = 0  # the depositing organisation never served the person: no date to count from
    kept_no_rule: int = 0  # no retention rule for the category (and source)

    def add(self, status: Status) -> None:
        name = "erased" if status == "erase" else f"kept_{status}"
        setattr(self, name, getattr(self, name) + 1)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class RetentionReport:
    now: datetime
    dry_run: bool
    batches: int  # erasing transactions committed
    categories: Mapping[str, CategoryTally]  # every category of the schedule, and any other that records hold
    notes: Mapping[str, str]  # category → why it has no rule, for the categories kept for want of one

    @property
    def erased(self) -> int:
        return sum(t.erased for t in self.categories.values())

    def lines(self) -> Iterator[str]:
        """The summary `broker retention run` prints."""
        moment = utc(self.now).isoformat(timespec="seconds").replace("+00:00", "Z")
        records = _count(self.erased, "record")
        if self.dry_run:
            yield f"retention dry run as of {moment}: would erase {records}; nothing was changed"
        else:
            yield f"retention run as of {moment}: erased {records} in {_count(self.batches, 'transaction')}"
        columns = ("erased", "kept-open", "kept-running", "kept-no-relationship", "kept-no-rule")
        width = max(len("category"), *(len(c) for c in self.categories))
        yield "  ".join(["category".ljust(width), *columns])
        for category, tally in sorted(self.categories.items()):
            counts = tally.as_dict().values()
            yield "  ".join(
                [category.ljust(width), *(str(n).rjust(len(c)) for n, c in zip(counts, columns, strict=True))]
            )
        for category, note in sorted(self.notes.items()):
            kept = _count(self.categories[category].kept_no_rule, "record")
            yield f"no retention rule: kept {kept} of {category} — {note}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def run_retention(
    broker: Broker,
    now: datetime | None = None,
    *,
    dry_run: bool = False,
    batch_size: int = 500,
    schedule: RetentionSchedule | None = None,
) -> RetentionReport:
    """Erase the content of every record whose retention period has ended by `now` (default: the broker's
    clock), `batch_size` records a transaction; with `dry_run`, only count. Idempotent.

    `now` may lie in the past (erasing less), but only a dry run may look ahead: erasing as of a future time
    would destroy records the law still requires the broker to keep."""
    if batch_size < 1:
        raise RetentionRunError("batch_size must be at least 1", field="batch_size")
    now = broker.clock.now() if now is None else now
    if now.tzinfo is None:
        raise RetentionRunError("the time to erase as of must carry its UTC offset", field="now")
    if not dry_run and now > broker.clock.now():
        raise RetentionRunError("only a dry run may look ahead: the time given is in the future", field="now")
    schedule = schedule if schedule is not None else load_retention_schedule(broker.policy)
    # Every category of the schedule is reported, with or without records; any other category records hold too.
    tallies = defaultdict(CategoryTally, {category: CategoryTally() for category in schedule.categories})
    org_types = _org_types(broker)
    batches = 0
    after = ""
    while True:
        with broker.uow(write=False) as uow:
            page = _live_records(uow, after, batch_size)
            ends = _relationship_ends(uow, {r.person_id for r in page})
        if not page:
            break
        after = page[-1].id
        due = []
        for row in page:
            verdict = _verdict(schedule, org_types, ends, row, now)
            if verdict.status == "erase":
                due.append(row)
            else:
                tallies[row.category].add(verdict.status)
        if due and not dry_run:
            for category, status in _erase(broker, schedule, org_types, due, now):
                tallies[category].add(status)
            batches += 1
        else:
            for row in due:
                tallies[row.category].add("erase")
    notes = {
        category: schedule.categories[category].note
        if category in schedule.categories
        else "not in the retention schedule"
        for category, tally in tallies.items()
        if tally.kept_no_rule
    }
    return RetentionReport(
        now=utc(now), dry_run=dry_run, batches=batches, categories=dict(tallies), notes=MappingProxyType(notes)
    )


_RECORDS = RecordRow.__table__
_RECORD_COLUMNS = (
    _RECORDS.c.id,
    _RECORDS.c.person_id,
    _RECORDS.c.category,
    _RECORDS.c.source_org,
    _RECORDS.c.deposited_at,
)


def _live_records(uow: UnitOfWork, after: str, limit: int) -> list[Any]:
    """The next page of records that still hold content, in id order (keyset paging: each page is one index
    range scan however far the run has got)."""
    return list(
        uow.session.execute(
            select(*_RECORD_COLUMNS)
            .where(_RECORDS.c.id > after, _RECORDS.c.ciphertext.is_not(None))
            .order_by(_RECORDS.c.id)
            .limit(limit)
        )
    )


def _relationship_ends(uow: UnitOfWork, persons: set[str]) -> dict[tuple[str, str], list[datetime | None]]:
    ends: defaultdict[tuple[str, str], list[datetime | None]] = defaultdict(list)
    if persons:
        rows = uow.session.execute(
            select(RelationshipRow.person_id, RelationshipRow.organisation_id, RelationshipRow.ended_at).where(
                RelationshipRow.person_id.in_(sorted(persons))
            )
        )
        for person_id, organisation_id, ended_at in rows:
            ends[(person_id, organisation_id)].append(ended_at)
    return ends


def _org_types(broker: Broker) -> dict[str, str]:
    with broker.uow(write=False) as uow:
        return {
            org_id: org_type
            for org_id, org_type in uow.session.execute(select(OrganisationRow.id, OrganisationRow.org_type))
        }


def _verdict(
    schedule: RetentionSchedule,
    org_types: Mapping[str, str],
    ends: Mapping[tuple[str, str], list[datetime | None]],
    row: Any,
    now: datetime,
) -> Verdict:
    return judge(
        schedule.rule_for(row.category, org_types.get(row.source_org)),
        deposited_at=row.deposited_at,
        relationship_ends=ends.get((row.person_id, row.source_org), []),
        now=now,
    )


def _erase(
    broker: Broker, schedule: RetentionSchedule, org_types: Mapping[str, str], due: list[Any], now: datetime
) -> list[tuple[str, Status]]:
    """One transaction: lock, decide again on what is read under the locks, erase what is still due and log
    each erasure. Returns (category, status) for every record of `due` that still held content."""
    outcome: list[tuple[str, Status]] = []
    with broker.uow() as uow:
        session = uow.session
        persons = sorted({row.person_id for row in due})
        # FOR UPDATE on the persons, in id order, as every change to what a decision reads takes it
        # (broker.services.persons `lock_person`): an erasure is one, and no relationship starts or ends, nor does a
        # disclosure record, before this commits. SQLite serialises writers already.
        session.execute(select(PersonRow.id).where(PersonRow.id.in_(persons)).order_by(PersonRow.id).with_for_update())
        rows = list(
            session.execute(
                select(*_RECORD_COLUMNS)
                .where(_RECORDS.c.id.in_(sorted(row.id for row in due)), _RECORDS.c.ciphertext.is_not(None))
                .order_by(_RECORDS.c.id)
                .with_for_update()
            )
        )
        ends = _relationship_ends(uow, set(persons))
        erased: list[tuple[Any, Verdict]] = []
        for row in rows:
            verdict = _verdict(schedule, org_types, ends, row, now)
            outcome.append((row.category, verdict.status))
            if verdict.status == "erase":
                erased.append((row, verdict))
        if erased:
            # Only the ciphertext goes: the wrapped data key and nonce columns are NOT NULL, and without the
            # ciphertext they open nothing.
            session.execute(
                update(RecordRow)
                .where(RecordRow.id.in_([row.id for row, _ in erased]))
                .values(ciphertext=None)
                .execution_options(synchronize_session=False)
            )
            logged_at = broker.clock.now()
            for row, verdict in erased:
                assert verdict.rule is not None and verdict.ends_on is not None
                append_entry(
                    uow,
                    event="record:erase",
                    now=logged_at,
                    actor=ACTOR,
                    person_id=row.person_id,
                    category=row.category,
                    record_ids=[row.id],
                    detail={
                        "rule": verdict.rule.id,
                        "reference": verdict.rule.reference,
                        "retention_ended_on": verdict.ends_on.isoformat(),
                    },
                )
        uow.commit()
    return outcome


__all__ = [
    "CALENDAR",
    "SCHEDULE_FILE",
    "CategoryRetention",
    "CategoryTally",
    "RetentionReport",
    "RetentionRule",
    "RetentionRunError",
    "RetentionSchedule",
    "RetentionScheduleError",
    "Verdict",
    "add_years",
    "judge",
    "load_retention_schedule",
    "parse_retention_schedule",
    "retention_ends_on",
    "run_retention",
]
