"""The DPO's policy commands (issue #3): `broker policy explain`, `register` and `diff`, run as an operator runs
them — `python -m broker.cli` in a subprocess, configured through the environment — and the person's age
reaching the decision through the disclosure transaction (F14b)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

from broker.adapters.database import Database
from broker.adapters.orm import PolicyVersionRow
from broker.services.disclosures import load_facts
from policies import load_policy
from policies.loader import RULES_DIR
from policies.register import register_markdown
from schemas.records.examples import EXAMPLES
from tests.support import Env, new_hetu

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "policies.md"


def run(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    environment.update({"BROKER_MODE": "test", **env})
    return subprocess.run(
        [sys.executable, "-m", "broker.cli", "policy", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
        timeout=300,
        check=False,
    )


def rules_copy(tmp_path: Path, file: str = "", old: str = "", new: str = "") -> Path:
    folder = tmp_path / "rules"
    shutil.copytree(RULES_DIR, folder)
    if file:
        path = folder / file
        text = path.read_text(encoding="utf-8")
        assert text.count(old) == 1
        path.write_text(text.replace(old, new), encoding="utf-8")
    return folder


F6_FIELDS = "      interruption_notice: [interruption_date, reason_category]\n"
F6_MORE = "      interruption_notice: [interruption_date, reason_category, results_summary]\n"


# --- explain ------------------------------------------------------------------------------------------------


def test_explain_tells_a_flow_in_words_in_the_chosen_language(tmp_path: Path) -> None:
    result = run("explain", "F6", "--lang", "fi", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert out.startswith("F6 — rule F6, permit (policies/rules/activation.yaml)")
    assert "who receives: employment_authority, kela — any role" in out
    assert "secrecy ground: 380/2023 115 §; 1290/2002 ch. 13 1 §" in out
    assert "fields: interruption_notice: interruption_date, reason_category" in out
    assert "withheld: interruption_notice: results_summary, proposed_next_step" in out
    assert "in words (fi): Jos työtoimintasi keskeytyy" in out
    assert str(tmp_path) not in result.stdout  # no machine paths, whatever the working folder


def test_explain_without_a_flow_tells_them_all_and_an_unknown_flow_exits_2(tmp_path: Path) -> None:
    every = run("explain", cwd=tmp_path)
    assert every.returncode == 0, every.stderr
    assert all(f"\n{flow} — " in "\n" + every.stdout for flow in ("F1", "F12", "F14b", "F17", "F18"))
    unknown = run("explain", "F99", cwd=tmp_path)
    assert unknown.returncode == 2 and "no flow or rule 'F99'; the policy has F1, F2a" in unknown.stderr


# --- register -----------------------------------------------------------------------------------------------


def test_register_prints_the_table_the_docs_hold_and_checks_a_stale_copy(tmp_path: Path) -> None:
    printed = run("register")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == register_markdown(load_policy())
    assert run("register", "--check", str(DOCS)).returncode == 0

    stale = tmp_path / "policies.md"
    stale.write_text(DOCS.read_text(encoding="utf-8").replace("| F14b | F14b |", "| F14b | F14c |"), encoding="utf-8")
    checked = run("register", "--check", str(stale))
    assert checked.returncode == 1 and "out of date" in checked.stdout
    updated = run("register", "--update", str(stale))
    assert updated.returncode == 0 and "register updated" in updated.stdout
    assert stale.read_text(encoding="utf-8") == DOCS.read_text(encoding="utf-8")
    assert run("register", "--check", str(tmp_path / "missing.md")).returncode == 2


# --- diff ---------------------------------------------------------------------------------------------------


def test_diff_of_a_version_with_itself_exits_0(tmp_path: Path) -> None:
    result = run("diff", str(RULES_DIR), str(rules_copy(tmp_path)))
    assert result.returncode == 0, result.stderr
    version = load_policy().version[:16]
    assert result.stdout.splitlines() == [
        f"policy {version} → {version}: 0 of {result.stdout.split(' of ')[1].split()[0]} decision-table cases and "
        f"0 of {result.stdout.split(' of ')[2].split()[0]} generated requests change"
    ]


def test_diff_prints_every_changed_decision_and_exits_1(tmp_path: Path) -> None:
    result = run("diff", str(RULES_DIR), str(rules_copy(tmp_path, "activation.yaml", F6_FIELDS, F6_MORE)))
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    # F6's requests: two benefit payers × one role × (employment services or any source) × 9 situations.
    assert " 36 of 187110 generated requests change" in lines[-1]
    assert lines[-1].endswith(f"(fields {len(lines) - 1})") and all(line.endswith("[fields]") for line in lines[:-1])
    assert all(" (F6, " in line for line in lines if line.startswith("case "))
    assert (
        'case "kela learns the interruption date and reason category only" (F6, 1290/2002 ch. 13 1 §): '
        "permit statute F6 fields [interruption_date, reason_category] → "
        "permit statute F6 fields [interruption_date, reason_category, results_summary]  [fields]"
    ) in lines


def test_diff_refuses_what_is_not_a_policy_version_with_exit_2(tmp_path: Path) -> None:
    broken = rules_copy(tmp_path, "health.yaml", "    flow: F7\n", "    flow: F7\n    colour: red\n")
    result = run("diff", str(RULES_DIR), str(broken))
    assert result.returncode == 2 and "health.yaml: rule F7: colour: Unknown field." in result.stderr
    assert run("diff", str(RULES_DIR), "no-such-folder").returncode == 2


def test_diff_reads_a_stored_version_by_its_hash(tmp_path: Path, database_url: str) -> None:
    """Every policy version the broker has run is stored with its text: the DPO compares against it by hash
    (on SQLite and, when configured, PostgreSQL)."""
    old = load_policy(rules_copy(tmp_path, "activation.yaml", F6_FIELDS, F6_MORE))
    db = Database(database_url)
    try:
        with db.session(write=True) as session:
            stored_at = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
            session.add(PolicyVersionRow(version=old.version, files=dict(old.files), first_loaded_at=stored_at))
            session.commit()
    finally:
        db.dispose()

    result = run("diff", old.version[:12], str(RULES_DIR), BROKER_DATABASE_URL=database_url)
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines()[-1].startswith(f"policy {old.version[:16]} → {load_policy().version[:16]}: ")
    assert "permit statute F6 fields [interruption_date, reason_category, results_summary] → " in result.stdout

    missing = run("diff", "0123456789ab", str(RULES_DIR), BROKER_DATABASE_URL=database_url)
    assert missing.returncode == 2 and "no stored policy version starts so" in missing.stderr


# --- the person's age reaches the decision (F14b) -------------------------------------------------------------


def test_the_disclosure_facts_carry_the_persons_age(env: Env) -> None:
    young, older = env.person(hetu=new_hetu(date(2001, 5, 17))), env.person(hetu=new_hetu(date(1990, 5, 17)))
    with env.broker.uow(write=False) as uow:
        facts = load_facts(uow, young, env.clock.now())
        assert (facts.person_age, facts.person_is_minor) == (24, False)
        assert load_facts(uow, older, env.clock.now()).person_age == 35


def test_outreach_youth_work_gets_a_young_persons_contact_details_and_is_told_to_tell_them_first(env: Env) -> None:
    young, older = env.person(hetu=new_hetu(date(2001, 5, 17))), env.person(hetu=new_hetu(date(1990, 5, 17)))
    for person_id in (young, older):
        deposited = env.post(
            "turku-employment",
            "/records",
            {"person_id": person_id, "category": "contact_details", "content": EXAMPLES["contact_details"]},
        )
        assert deposited.status_code == 201, deposited.get_json()

    ask = {"category": "contact_details", "purpose": "service_referral"}
    permitted = env.post("lieto-youth-outreach", "/disclosures", {"person_id": young, **ask})
    assert permitted.status_code == 200, permitted.get_json()
    body = permitted.get_json()
    assert body["basis"]["rule"] == "F14b" and body["basis"]["reference"] == "1285/2016 11 § 4 mom."
    assert body["obligations"] == ["tell_person_in_advance"]
    assert set(body["records"][0]["content"]) <= {"name", "phone", "email"}

    refused = env.post("lieto-youth-outreach", "/disclosures", {"person_id": older, **ask})
    assert refused.status_code == 403 and refused.get_json()["code"] == "no_legal_basis"
    reasons = {(r["rule"], r["code"]) for r in refused.get_json()["decision"]["reasons"]}
    assert ("F14b", "person_too_old") in reasons
