"""`make bench-policy`: `policies.decide()` next to cedarpy on the same requests, with 1, 100 and 10,000 consents.

A benchmark, not a test. What it does (docs/benchmarks.md, "Policy engine", has the numbers and how to read them):

1. builds, for each size, the facts of one adult person: relationships with four organisations and N consents —
   the few the requests can use (health care's explicit consent to the work assessment, Ohjaamo's) and filler
   consents naming other organisations and categories;
2. takes a fixed mix of seven requests that walks the engine's paths: a consent permit (F7), the same as a dry
   run without a source, a statute permit (F1), an asserted exception (F8), a forbid (F12b), a consent permit
   through a broad rule (F15b) and a request no rule lists;
3. checks that decide() and Cedar agree on every request of the mix, then times each engine call by call with
   `time.perf_counter_ns`, after a warm-up, in one thread, in five rounds that take turns between the engines,
   and prints p50/p99 latency (all calls) and throughput (the median round's calls per second inside calls):

   - `decide() warm`: one Facts object for all calls — the consent index is built once per Facts, as in a
     disclosure transaction that decides for several sources;
   - `decide() fresh`: a new Facts per call (same consents tuple), so the index is built on every call that
     looks at consents (three of the seven; the others never index, so read the mean, not p50);
   - `cedarpy warm`: the translation of tests/oracle/cedar.py with pre-parsed handles: the PolicySet once, the
     Entities (vocabulary, the person, their consents) once per Facts. Per decision it does what any caller
     must: convert the request to Cedar's form — the requester org as principal, the person as resource, one
     context per candidate consent (org type, role, category, source, purpose, clock, the consent) — evaluate
     them in one `is_authorized_batch` call (JSON in and out included) and OR the answers. The candidates are
     the consents naming the requester and the category, found in an index built once per Facts — the same
     narrowing the engine does; without it Cedar would evaluate all N;
   - `cedarpy cold`: as warm, but the person and consents are converted to Cedar JSON and parsed per decision.

   No schema validation per call (favourable to Cedar). Results go to bench/results/policy-<date>.json.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cedarpy

from bench.machine import machine_info
from policies import ConsentFact, DecisionRequest, Facts, Policy, StatutoryException, decide, load_policy
from tests.oracle.cedar import CedarPolicy, cedar_request, context, facts_entities, translate_policy

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
NOW = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
SIZES = (1, 100, 10_000)
# Targets (issue #3): decide() ≥ 20 × cedarpy's throughput, p99 ≤ 50 µs, flat as the consents grow.
TARGET_RATIO = 20.0
TARGET_P99_US = 50.0
FLAT = 1.5  # "flat": p50 with 10,000 consents at most 1.5 × p50 with one

RELATIONSHIPS = frozenset({"varha-health", "varha-social-work", "kisalli", "ohjaamo-turku"})
FILLER_CATEGORIES = (
    "work_assessment",
    "contact_details",
    "activation_plan",
    "health_check_summary",
    "attendance_report",
    "youth_referral",
)


def requests() -> list[tuple[str, DecisionRequest]]:
    def ask(org: str, org_type: str, role: str, category: str, purpose: str, source: str | None, **kw: Any) -> Any:
        source_type = {
            "kisalli": "employment_services",
            "kela": "kela",
            "varha-health": "health_care",
            "ohjaamo-turku": "ohjaamo",
        }
        return DecisionRequest(
            org, org_type, role, "person-1", category, purpose, source, source_type.get(source or ""), **kw
        )

    care = StatutoryException("care_need_health_or_safety_at_risk", "collapsed at work, needs care today")
    return [
        ("F7 consent", ask("varha-health", "health_care", "physician", "work_assessment", "work_capacity_assessment",
                           "kisalli")),
        ("F7 dry run", ask("varha-health", "health_care", "nurse", "work_assessment", "work_capacity_assessment",
                           None)),
        ("F1 statute", ask("varha-social-work", "social_work", "social_worker", "benefit_status",
                           "activation_planning", "kela")),
        ("F8 exception", ask("kisalli", "employment_services", "individual_coach", "health_check_summary",
                             "service_delivery", "varha-health", exception=care)),
        ("F12b forbid", ask("kela", "kela", "kela_expert", "substance_incident", "follow_up", "kisalli")),
        ("F15b consent", ask("varha-social-work", "social_work", "social_worker", "contact_details",
                             "service_delivery", "ohjaamo-turku")),
        ("no rule", ask("demo-employer", "employer", "employer_contact", "benefit_status", "activation_planning",
                        "kela")),
    ]  # fmt: skip


EXPECTED = {
    "F7 consent": "permit",
    "F7 dry run": "permit",
    "F1 statute": "permit",
    "F8 exception": "permit",
    "F12b forbid": "deny",
    "F15b consent": "permit",
    "no rule": "deny",
}


def facts_with(size: int) -> Facts:
    """`size` consents: the two the mix uses, the rest filler for other recipients (never the requesters)."""
    used = [
        ConsentFact(
            "c-f7",
            1,
            "active",
            frozenset({"varha-health"}),
            frozenset({"work_assessment"}),
            frozenset({"work_capacity_assessment"}),
            NOW - timedelta(days=30),
            explicit=True,
        ),
        ConsentFact(
            "c-ohjaamo",
            1,
            "active",
            frozenset({"varha-social-work"}),
            frozenset({"contact_details"}),
            frozenset({"service_delivery"}),
            NOW - timedelta(days=3),
            explicit=True,
            written=True,
        ),
    ]
    filler = [
        ConsentFact(
            f"c-{i}",
            1 + i % 3,
            "active" if i % 5 else "withdrawn",
            frozenset({f"org-{i % 97}"}),
            frozenset({FILLER_CATEGORIES[i % len(FILLER_CATEGORIES)], "contact_details"}),
            frozenset({"service_delivery", "work_capacity_assessment"}),
            NOW - timedelta(days=1 + i % 400),
            explicit=bool(i % 2),
            withdrawn_at=None if i % 5 else NOW - timedelta(hours=1),
        )
        for i in range(max(size - len(used), 0))
    ]
    return Facts(relationships=RELATIONSHIPS, consents=tuple(used[:size] + filler))


# --- Cedar as a caller would use it ---------------------------------------------------------------------


class CedarCaller:
    """What a service deciding with Cedar keeps per Facts, and what it must do per decision."""

    def __init__(self, cedar: CedarPolicy, person_id: str, facts: Facts) -> None:
        self.cedar = cedar
        self.entities = cedar.vocabulary.with_added_json_str(json.dumps(facts_entities(person_id, facts)))
        self.candidates: dict[tuple[str, str], list[int | None]] = {}
        for position, consent in enumerate(facts.consents):
            for recipient in consent.recipients:
                for category in consent.categories:
                    self.candidates.setdefault((recipient, category), []).append(position)

    def decide(self, request: DecisionRequest, now: datetime) -> bool:
        # One evaluation per candidate, or one without a consent when there is none: a policy that does not
        # read the consent slot is satisfied whichever consent is in it, so the empty slot adds nothing then.
        positions = self.candidates.get((request.requester_org, request.category)) or [None]
        asks = [cedar_request(request, context(request, now, c)) for c in positions]
        return any(r.allowed for r in cedarpy.is_authorized_batch(asks, self.cedar.policies, self.entities))


def cedar_cold(cedar: CedarPolicy, facts: Facts, request: DecisionRequest, now: datetime) -> bool:
    return CedarCaller(cedar, request.person_id, facts).decide(request, now)


# --- timing ---------------------------------------------------------------------------------------------


@dataclass
class Row:
    engine: str
    consents: int
    calls: int
    p50_us: float
    p99_us: float
    mean_us: float
    per_second: float  # the median round's
    round_rates: list[float]  # decisions per second in each round, in order

    def as_dict(self) -> dict[str, Any]:
        found = {k: round(v, 2) if isinstance(v, float) else v for k, v in self.__dict__.items()}
        found["round_rates"] = [round(v, 1) for v in self.round_rates]
        return found


Call = Callable[[DecisionRequest], object]


def measure(size: int, engines: Sequence[tuple[str, Call]], mix: Sequence[DecisionRequest], args: Any) -> list[Row]:
    """Call by call, cycling through the mix, in rounds that take turns between the engines, so that a burst of
    other work on the machine hits every engine alike. p50/p99 are over all calls; the throughput is the median
    of the rounds' (calls ÷ time inside the calls), which one disturbed round does not move."""
    clock = time.perf_counter_ns
    for _, call in engines:
        warm_until = clock() + 1_000_000_000  # a slow engine warms up for a second at most
        for i in range(args.warmup):
            call(mix[i % len(mix)])
            if i >= len(mix) and clock() > warm_until:
                break
    samples: dict[str, list[int]] = {name: [] for name, _ in engines}
    rates: dict[str, list[float]] = {name: [] for name, _ in engines}
    for _ in range(args.rounds):
        for name, call in engines:
            gc.collect()
            taken: list[int] = []
            deadline = clock() + int(args.seconds * 1e9)
            i = 0
            while i < args.calls and (i < args.min_calls or clock() < deadline):
                request = mix[i % len(mix)]
                start = clock()
                call(request)
                taken.append(clock() - start)
                i += 1
            samples[name] += taken
            rates[name].append(len(taken) * 1e9 / sum(taken))
    rows = []
    for name, _ in engines:
        found = sorted(samples[name])
        rows.append(
            Row(
                engine=name,
                consents=size,
                calls=len(found),
                p50_us=found[len(found) // 2] / 1000,
                p99_us=found[min(len(found) - 1, (len(found) * 99) // 100)] / 1000,
                mean_us=statistics.fmean(found) / 1000,
                per_second=statistics.median(rates[name]),
                round_rates=rates[name],
            )
        )
    return rows


def run(policy: Policy, cedar: CedarPolicy, args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    for size in args.sizes:
        rows += rows_for(size, policy, cedar, args)
    return rows


def rows_for(size: int, policy: Policy, cedar: CedarPolicy, args: argparse.Namespace) -> list[Row]:
    named = requests()
    mix = [r for _, r in named]
    facts = facts_with(size)
    caller = CedarCaller(cedar, "person-1", facts)
    for name, request in named:  # both engines give the expected answer before anything is timed
        effect = decide(request, facts, policy, NOW).effect
        allowed = caller.decide(request, NOW)
        wanted = "deny" if name == "F15b consent" and size < 2 else EXPECTED[name]  # one consent: F7's only
        if effect != wanted or allowed != (effect == "permit"):
            raise SystemExit(f"{name} with {size} consents: decide() {effect}, cedar {allowed}")
    print(f"  {size} consents …", file=sys.stderr, flush=True)

    def fresh(request: DecisionRequest) -> object:
        return decide(request, Facts(relationships=facts.relationships, consents=facts.consents), policy, NOW)

    engines: list[tuple[str, Call]] = [
        ("decide() warm", lambda r: decide(r, facts, policy, NOW)),
        ("decide() fresh", fresh),
        ("cedarpy warm", lambda r: caller.decide(r, NOW)),
        ("cedarpy cold", lambda r: cedar_cold(cedar, facts, r, NOW)),
    ]
    return measure(size, engines, mix, args)


# --- report ---------------------------------------------------------------------------------------------


def verdict(rows: list[Row]) -> dict[str, Any]:
    by = {(r.engine, r.consents): r for r in rows}
    sizes = sorted({r.consents for r in rows})
    # Each round's ratio sets the two engines side by side in time; the median round's is the one reported.
    ratios = {
        n: statistics.median(
            d / c for d, c in zip(by["decide() warm", n].round_rates, by["cedarpy warm", n].round_rates, strict=True)
        )
        for n in sizes
    }
    p50_ratios = {n: by["cedarpy warm", n].p50_us / by["decide() warm", n].p50_us for n in sizes}
    worst_p99 = max(by["decide() warm", n].p99_us for n in sizes)
    growth = by["decide() warm", sizes[-1]].p50_us / by["decide() warm", sizes[0]].p50_us
    return {
        "throughput_ratio_vs_cedarpy_warm": {str(n): round(v, 1) for n, v in ratios.items()},
        "p50_ratio_vs_cedarpy_warm": {str(n): round(v, 1) for n, v in p50_ratios.items()},
        "ratio_met": min(ratios.values()) >= TARGET_RATIO,
        "decide_warm_worst_p99_us": round(worst_p99, 2),
        "p99_met": worst_p99 <= TARGET_P99_US,
        "decide_warm_p50_growth": round(growth, 2),
        "flat_met": growth <= FLAT,
    }


def table(rows: list[Row], verdict_: dict[str, Any]) -> str:
    ratios = verdict_["throughput_ratio_vs_cedarpy_warm"]
    lines = [
        "| consents | engine | calls | p50 µs | p99 µs | decisions/s (1 thread) | decide() warm ÷ this |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    by = {(r.engine, r.consents): r for r in rows}
    for r in rows:
        times = by["decide() warm", r.consents].per_second / r.per_second
        lines.append(
            f"| {r.consents:,} | {r.engine} | {r.calls:,} | {r.p50_us:,.1f} | {r.p99_us:,.1f} | "
            f"{r.per_second:,.0f} | {times:,.1f} × |"
        )
    sizes = sorted({r.consents for r in rows})

    def met(key: str) -> str:
        return "met" if verdict_[key] else "MISSED"

    p50s = verdict_["p50_ratio_vs_cedarpy_warm"]
    lines += [
        "",
        f"- throughput, decide() warm ÷ cedarpy warm (median of paired rounds): "
        f"{', '.join(f'{int(k):,} consents {v} ×' for k, v in ratios.items())} — target ≥ {TARGET_RATIO:g} ×: "
        f"{met('ratio_met')} (p50 ratio: {', '.join(f'{v} ×' for v in p50s.values())})",
        f"- decide() warm p99, worst size: {verdict_['decide_warm_worst_p99_us']} µs — target ≤ {TARGET_P99_US:g} µs: "
        f"{met('p99_met')}",
        f"- decide() warm p50, {sizes[-1]:,} ÷ {sizes[0]:,} consents: {verdict_['decide_warm_p50_growth']} × — "
        f"flat (≤ {FLAT} ×): {met('flat_met')}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.policy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=lambda s: tuple(int(x) for x in s.split(",")), default=SIZES)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per size, taking turns between the engines")
    parser.add_argument("--calls", type=int, default=20_000, help="at most this many timed calls per round")
    parser.add_argument("--min-calls", type=int, default=2, help="at least this many per round, whatever the time")
    parser.add_argument("--seconds", type=float, default=0.6, help="end a round after this long (past --min-calls)")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None, help="the JSON results (default bench/results/…)")
    args = parser.parse_args(argv)

    policy = load_policy()
    cedar = translate_policy(policy)
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    print(f"policy {policy.version[:12]}, {len(cedar.policies)} Cedar policies; timing …", file=sys.stderr)
    rows = run(policy, cedar, args)
    result = verdict(rows)
    print(table(rows, result))

    out = args.out or RESULTS / f"policy-{started.date().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "policy",
        "date": started.isoformat(timespec="seconds"),
        "command": "make bench-policy",
        "machine": {
            **machine_info(),
            "python": platform.python_version(),
            "cedarpy": importlib.metadata.version("cedarpy"),
        },
        # Other work on the machine shows here: the numbers are only as good as the quiet they ran in.
        "load_average_1_5_15min": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()],
        },
        "policy_version": policy.version,
        "cedar_policies": len(cedar.policies),
        "mix": [name for name, _ in requests()],
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "cedar_per_decision": (
            "warm: the PolicySet parsed once, the Entities (vocabulary, person, consents) once per Facts; per "
            "decision the request becomes one Cedar request per candidate consent (principal, resource, context "
            "dicts), one is_authorized_batch call with cedarpy's JSON in and out; no per-call schema validation. "
            "cold: also converts the person and consents to Cedar JSON and parses them per decision"
        ),
        "rows": [r.as_dict() for r in rows],
        "verdict": result,
    }
    out.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    shown = out.relative_to(HERE.parent) if out.is_relative_to(HERE.parent) else out
    print(f"\nwritten to {shown}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
