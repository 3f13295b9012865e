"""The anomaly rules of the data-protection officer's review queue (docs/dpo.md, "Anomaly queue").

Each rule is a pure function over the log entries it is given (and, where it needs them, a professional's
baseline or the service relationships in force): no database, no clock. The DPO service (broker/services/dpo.py)
loads those facts with indexed queries and hands them in; the unit tests hand in their own.

A rule's finding points at one log entry — the use itself, or the entry at which a count crossed its threshold —
so that an item of the queue is the pair (entry, rule), the key a review is stored under (`DpoReviewRow`).

Why these rules: the controller must monitor the use of the logs and the disclosures (Client Data Act 703/2023
§ 7 and § 11; GDPR Art. 5(1)(f), 32(1)(d) and 39(1)(b)); a DPO cannot read every entry, so the queue lifts the
patterns that unjustified use tends to leave — work outside office hours, a burst of requests, persons the
organisation does not serve, a run of refusals, an organisation probing many persons it has no basis for — and
every use of a statutory exception, which the policy itself puts on the DPO's review list (obligation `dpo_review`,
policies/rules/vocabulary.yaml).

One rule reads a state beside the log rather than a pattern in it: `attestation_overdue`, a withdrawal that an
organisation which received data under the consent has left unanswered past its due date (GDPR Art. 17 and 19,
docs/withdrawal.md). Its finding points at the withdrawal's `consent:withdraw` entry and names the silent
organisations; the facts (`WithdrawalFacts`) come from the attestations table.

Days and office hours are Finnish: Europe/Helsinki, with its summer time.
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

HELSINKI = ZoneInfo("Europe/Helsinki")

OUT_OF_HOURS = "out_of_hours"
VOLUME_SPIKE = "volume_spike"
NO_RELATIONSHIP = "no_relationship"
REPEATED_DENIALS = "repeated_denials"
STATUTORY_EXCEPTION = "statutory_exception"
ENUMERATION = "enumeration"
ATTESTATION_OVERDUE = "attestation_overdue"
#: Every rule, in the order the queue explains them.
RULES = (
    OUT_OF_HOURS,
    VOLUME_SPIKE,
    NO_RELATIONSHIP,
    REPEATED_DENIALS,
    ENUMERATION,
    STATUTORY_EXCEPTION,
    ATTESTATION_OVERDUE,
)

#: Records handed over: pulled by the recipient (a permitted request) or pushed to it (a notice).
DISCLOSURE_EVENTS = frozenset({"disclosure:permit", "notice:send"})
#: A professional's requests for records, whatever the answer.
REQUEST_EVENTS = frozenset({"disclosure:permit", "disclosure:deny"})
#: Questions about a person that policy can refuse: a request for records, or a dry run of one (`decision:query`).
REFUSABLE_EVENTS = frozenset({"disclosure:deny", "decision:query"})
#: Every event the rules read.
EVENTS = DISCLOSURE_EVENTS | REQUEST_EVENTS | REFUSABLE_EVENTS


@dataclass(frozen=True)
class Thresholds:
    """The rules' parameters; docs/dpo.md gives the reasons for the defaults."""

    #: Office hours on weekdays, local time: [start, end).
    day_starts: time = time(7, 0)
    day_ends: time = time(19, 0)
    #: A day's requests by one professional are a spike when they exceed `volume_factor` × their mean daily
    #: requests over the `baseline_days` before, and are at least `volume_minimum`.
    volume_factor: float = 3.0
    volume_minimum: int = 20
    baseline_days: int = 30
    #: Distinct persons one professional received records of, in one day, without their organisation serving them.
    persons_without_relationship: int = 5
    #: Denials of one professional's requests within `denial_window`.
    denials: int = 5
    denial_window: timedelta = timedelta(hours=1)
    #: Distinct persons about whom one organisation's requests or dry runs were refused within `enumeration_window`.
    #: A refusal is rare in legitimate work — a professional asks about a client, is refused, and asks the client for
    #: consent — so even a large organisation refuses about a handful of persons an hour; a script walking through
    #: person ids refuses about hundreds a minute, under any sensible rate limit (docs/security.md, "Abuse limits").
    #: Twenty in ten minutes lies far from both.
    enumeration_persons: int = 20
    enumeration_window: timedelta = timedelta(minutes=10)


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class LogFacts:
    """What the rules read of one log entry: the plain columns beside the canonical bytes, the opened actor
    (the professional's id, known to the DPO only) and the exception grounds named by its basis or bases."""

    entry_id: int
    logged_at: datetime  # timezone-aware
    event: str
    organisation: str | None = None
    actor_id: str | None = None
    person_id: str | None = None
    effect: str | None = None
    basis_kind: str | None = None
    exception_grounds: tuple[str, ...] = ()

    @property
    def professional(self) -> tuple[str, str] | None:
        """A professional is known by organisation and staff id: two organisations may use the same ids."""
        if self.organisation is None or self.actor_id is None:
            return None
        return (self.organisation, self.actor_id)


@dataclass(frozen=True)
class Finding:
    rule: str
    entry_id: int
    logged_at: datetime
    organisation: str | None
    person_id: str | None
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[int, str]:
        return (self.entry_id, self.rule)


@dataclass(frozen=True)
class AttestationFacts:
    """One organisation asked, after a withdrawal, what it did with the data it had received under the consent."""

    organisation: str
    due_at: datetime  # timezone-aware
    answered_at: datetime | None = None  # timezone-aware; None while unanswered


@dataclass(frozen=True)
class WithdrawalFacts:
    """A withdrawal that asked for attestations: its `consent:withdraw` log entry and whom it asked."""

    entry_id: int
    logged_at: datetime  # timezone-aware
    consent_id: str
    person_id: str | None
    attestations: tuple[AttestationFacts, ...]


#: (organisation, staff id, local day) → the professional's requests in the baseline period before that day.
Baselines = Mapping[tuple[str, str, date], int]
#: (person, organisation) → the service relationships as (started_at, ended_at or None).
Relationships = Mapping[tuple[str, str], Sequence[tuple[datetime, datetime | None]]]


def local_day(moment: datetime) -> date:
    return moment.astimezone(HELSINKI).date()


def day_start(day: date) -> datetime:
    """The first moment of a Finnish calendar day (the zone's offset of that day, summer time included)."""
    return datetime.combine(day, time(0, 0), tzinfo=HELSINKI)


def window(now: datetime, days: int) -> tuple[datetime, datetime]:
    """The queue's period: from the start of the local day `days - 1` days before today, to `now`."""
    if days < 1:
        raise ValueError("days must be at least 1")
    return day_start(local_day(now) - timedelta(days=days - 1)), now


def baseline_period(day: date, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> tuple[datetime, datetime]:
    """The baseline of a day: the `baseline_days` whole local days before it."""
    return day_start(day - timedelta(days=thresholds.baseline_days)), day_start(day)


def _ordered(entries: Iterable[LogFacts]) -> list[LogFacts]:
    return sorted(entries, key=lambda e: (e.logged_at, e.entry_id))


# --- the rules ---------------------------------------------------------------------------------------------------


def out_of_hours(entries: Iterable[LogFacts], thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[Finding]:
    """Every disclosure made outside office hours: before 07:00 or from 19:00 on a weekday, or at a weekend
    (Finnish time). Public holidays are not known to the broker and count as weekdays."""
    found = []
    for entry in _ordered(entries):
        if entry.event not in DISCLOSURE_EVENTS:
            continue
        local = entry.logged_at.astimezone(HELSINKI)
        weekend = local.weekday() >= 5
        if weekend or not thresholds.day_starts <= local.time() < thresholds.day_ends:
            found.append(
                Finding(
                    OUT_OF_HOURS,
                    entry.entry_id,
                    entry.logged_at,
                    entry.organisation,
                    entry.person_id,
                    {"local_time": local.strftime("%Y-%m-%d %H:%M"), "weekend": weekend},
                )
            )
    return found


def volume_candidates(
    entries: Iterable[LogFacts], thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> set[tuple[str, str, date]]:
    """The (organisation, staff id, day) whose requests reach `volume_minimum`: only their baselines are needed."""
    counts: dict[tuple[str, str, date], int] = defaultdict(int)
    for entry in entries:
        professional = entry.professional
        if entry.event in REQUEST_EVENTS and professional is not None:
            counts[(*professional, local_day(entry.logged_at))] += 1
    return {key for key, count in counts.items() if count >= thresholds.volume_minimum}


def volume_spikes(
    entries: Iterable[LogFacts], baselines: Baselines, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> list[Finding]:
    """A professional's day with more requests than `volume_factor` × their own mean over the baseline days, and
    at least `volume_minimum`; flagged once per day, at the request that crossed the line. A professional with no
    history has a mean of 0, so any day reaching the minimum is flagged."""
    found = []
    running: dict[tuple[str, str, date], int] = defaultdict(int)
    for entry in _ordered(entries):
        professional = entry.professional
        if entry.event not in REQUEST_EVENTS or professional is None:
            continue
        key = (*professional, local_day(entry.logged_at))
        running[key] += 1
        count = running[key]
        mean = baselines.get(key, 0) / thresholds.baseline_days
        limit = max(thresholds.volume_factor * mean, thresholds.volume_minimum - 1)
        # Flag at the first request above the limit only (count == floor(limit) + 1).
        if count > limit and count - 1 <= limit:
            found.append(
                Finding(
                    VOLUME_SPIKE,
                    entry.entry_id,
                    entry.logged_at,
                    entry.organisation,
                    entry.person_id,
                    {"day": key[2].isoformat(), "count": count, "baseline_mean": round(mean, 2)},
                )
            )
    return found


def _served(relationships: Relationships, person_id: str, organisation: str, at: datetime) -> bool:
    for started_at, ended_at in relationships.get((person_id, organisation), ()):
        if started_at <= at and (ended_at is None or at < ended_at):
            return True
    return False


def without_relationship(
    entries: Iterable[LogFacts], relationships: Relationships, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> list[Finding]:
    """A professional who, in one day, received the records of `persons_without_relationship` or more distinct
    persons whom their organisation did not serve at that moment; flagged once per day, at the entry that reached
    the count. (Statutory flows that need no relationship, such as Kela's F1, still count: the rule lifts the
    pattern for review, it does not judge it.)"""
    found = []
    seen: dict[tuple[str, str, date], set[str]] = defaultdict(set)
    for entry in _ordered(entries):
        professional = entry.professional
        if entry.event != "disclosure:permit" or professional is None or entry.person_id is None:
            continue
        if _served(relationships, entry.person_id, professional[0], entry.logged_at):
            continue
        key = (*professional, local_day(entry.logged_at))
        persons = seen[key]
        if entry.person_id in persons:
            continue
        persons.add(entry.person_id)
        if len(persons) == thresholds.persons_without_relationship:
            found.append(
                Finding(
                    NO_RELATIONSHIP,
                    entry.entry_id,
                    entry.logged_at,
                    entry.organisation,
                    entry.person_id,
                    {"day": key[2].isoformat(), "persons": len(persons)},
                )
            )
    return found


def repeated_denials(entries: Iterable[LogFacts], thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[Finding]:
    """`denials` refusals of one professional's requests within `denial_window`; flagged at the refusal that
    reached the count, after which the count starts again (ten refusals in an hour are two items)."""
    found = []
    recent: dict[tuple[str, str], list[LogFacts]] = defaultdict(list)
    for entry in _ordered(entries):
        professional = entry.professional
        if entry.event != "disclosure:deny" or professional is None:
            continue
        run = recent[professional]
        run.append(entry)
        while run and entry.logged_at - run[0].logged_at > thresholds.denial_window:
            run.pop(0)
        if len(run) >= thresholds.denials:
            found.append(
                Finding(
                    REPEATED_DENIALS,
                    entry.entry_id,
                    entry.logged_at,
                    entry.organisation,
                    entry.person_id,
                    {
                        "denials": len(run),
                        "since": run[0].logged_at.astimezone(HELSINKI).strftime("%Y-%m-%d %H:%M"),
                        "persons": len({e.person_id for e in run if e.person_id}),
                    },
                )
            )
            run.clear()
    return found


def enumeration(entries: Iterable[LogFacts], thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[Finding]:
    """An organisation refused, within `enumeration_window`, about `enumeration_persons` distinct persons — requests
    for records or dry-run decisions without a basis, the trace of someone walking through persons to see whom they
    can reach. Flagged at the refusal that reached the count, after which the count starts again (forty persons in
    a few minutes are two items).

    Counted per organisation, not per professional: the professional is the partner system's own statement (the
    assertion's `act` claim), so a probe made with a partner's key can name a new professional for every request and
    stay under the per-professional rules above."""
    found = []
    # Per organisation: its refusals within the window, oldest first, and how many of them name each person.
    runs: dict[str, deque[tuple[datetime, str]]] = defaultdict(deque)
    persons: dict[str, Counter[str]] = defaultdict(Counter)
    for entry in _ordered(entries):
        organisation, person = entry.organisation, entry.person_id
        if entry.event not in REFUSABLE_EVENTS or entry.effect != "deny" or organisation is None or person is None:
            continue
        run, counts = runs[organisation], persons[organisation]
        run.append((entry.logged_at, person))
        counts[person] += 1
        while entry.logged_at - run[0][0] > thresholds.enumeration_window:
            _, gone = run.popleft()
            counts[gone] -= 1
            if counts[gone] == 0:
                del counts[gone]
        if len(counts) >= thresholds.enumeration_persons:
            found.append(
                Finding(
                    ENUMERATION,
                    entry.entry_id,
                    entry.logged_at,
                    organisation,
                    person,
                    {
                        "persons": len(counts),
                        "refusals": len(run),
                        "since": run[0][0].astimezone(HELSINKI).strftime("%Y-%m-%d %H:%M"),
                    },
                )
            )
            run.clear()
            counts.clear()
    return found


def statutory_exceptions(entries: Iterable[LogFacts]) -> list[Finding]:
    """Every disclosure made on a statutory exception instead of consent (703/2023 53 § 5–6 mom. and 56 §;
    1301/2014 35 §): the policy adds the obligation `dpo_review` to each, so each is an item."""
    found = []
    for entry in _ordered(entries):
        if entry.event not in DISCLOSURE_EVENTS:
            continue
        if entry.basis_kind == "exception" or entry.exception_grounds:
            found.append(
                Finding(
                    STATUTORY_EXCEPTION,
                    entry.entry_id,
                    entry.logged_at,
                    entry.organisation,
                    entry.person_id,
                    {"grounds": list(entry.exception_grounds)},
                )
            )
    return found


def attestations_overdue(withdrawals: Iterable[WithdrawalFacts], now: datetime) -> list[Finding]:
    """Every withdrawal with an organisation that has not answered by its due date — as of `now`: an answer given
    later than `now` does not count yet. One item per withdrawal, at its `consent:withdraw` entry, naming the silent
    organisations (the queue's organisation is the silent one when there is one only). An answer given late takes
    the organisation out of the item; the item goes when every organisation has answered. Unlike the log rules it
    does not age out of the queue's period: an unanswered question stays until it is answered or reviewed."""
    found = []
    for withdrawal in sorted(withdrawals, key=lambda w: (w.logged_at, w.entry_id)):
        if withdrawal.logged_at > now:
            continue
        overdue = sorted(
            (a for a in withdrawal.attestations if a.due_at <= now and (a.answered_at is None or a.answered_at > now)),
            key=lambda a: (a.due_at, a.organisation),
        )
        if not overdue:
            continue
        silent = sorted({a.organisation for a in overdue})
        found.append(
            Finding(
                ATTESTATION_OVERDUE,
                withdrawal.entry_id,
                withdrawal.logged_at,
                silent[0] if len(silent) == 1 else None,
                withdrawal.person_id,
                {
                    "consent_id": withdrawal.consent_id,
                    "silent": silent,
                    "due": local_day(overdue[0].due_at).isoformat(),
                    "asked": len(withdrawal.attestations),
                },
            )
        )
    return found


def evaluate(
    entries: Iterable[LogFacts],
    *,
    now: datetime,
    baselines: Baselines,
    relationships: Relationships,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    withdrawals: Iterable[WithdrawalFacts] = (),
) -> list[Finding]:
    """Every rule over the entries logged up to `now` (and the withdrawals' attestations as of `now`), oldest
    first."""
    current = [e for e in entries if e.logged_at <= now]
    found = [
        *out_of_hours(current, thresholds),
        *volume_spikes(current, baselines, thresholds),
        *without_relationship(current, relationships, thresholds),
        *repeated_denials(current, thresholds),
        *enumeration(current, thresholds),
        *statutory_exceptions(current),
        *attestations_overdue(withdrawals, now),
    ]
    order = {rule: i for i, rule in enumerate(RULES)}
    return sorted(found, key=lambda f: (f.logged_at, f.entry_id, order[f.rule]))


def exception_grounds(entry: Mapping[str, Any]) -> tuple[str, ...]:
    """The exception grounds an entry's basis (and, when several sources were decided, each of its bases in
    `detail.bases`) names."""
    bases: list[Any] = [entry.get("basis")]
    detail = entry.get("detail")
    if isinstance(detail, Mapping) and isinstance(detail.get("bases"), list):
        bases.extend(detail["bases"])
    grounds = []
    for basis in bases:
        if isinstance(basis, Mapping):
            ground = basis.get("exception_ground")
            if isinstance(ground, str) and ground and ground not in grounds:
                grounds.append(ground)
    return tuple(grounds)
