"""Loading and validating the policy files: a bad file is refused with a message naming file, rule
and field."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from policies import PolicyError, load_policy
from policies.cases import check_policy
from policies.loader import RULES_DIR, load_policy_files

Mutation = Callable[[dict[str, Any]], None]


def policy_copy(tmp_path: Path, file: str = "", mutate: Mutation | None = None) -> Path:
    """The shipped rules copied to tmp_path, with `mutate` applied to one file's parsed YAML."""
    folder = tmp_path / "rules"
    shutil.copytree(RULES_DIR, folder)
    if mutate is not None:
        path = folder / file
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        mutate(data)
        path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return folder


def rule(data: dict[str, Any], rule_id: str) -> dict[str, Any]:
    return next(r for r in data["rules"] if r["id"] == rule_id)


def refusal(folder: Path) -> str:
    with pytest.raises(PolicyError) as caught:
        load_policy(folder)
    return str(caught.value)


def test_the_shipped_policy_loads_with_every_rule_it_promises() -> None:
    policy = check_policy()
    ids = {r.id for r in policy.rules}
    assert {
        "F5",
        "F7",
        "F8",
        "F9",
        "F12a",
        "F12b",
        "F15a",
        "F15b",
        "F2a",
        "F2b",
        "F3",
        "F4",
        "F6",
        "F10",
    } <= ids
    assert len(policy.version) == 64 and int(policy.version, 16) >= 0
    assert "vocabulary.yaml" in policy.files and "F7" in policy.files["health.yaml"]


def test_the_vocabulary_helpers_answer_from_the_files() -> None:
    policy = load_policy()
    assert policy.roles_for("health_care") == {"physician", "nurse"}
    assert policy.roles_for("employment_services") == {
        "individual_coach",
        "work_coach",
        "service_counsellor",
        "employment_coordinator",
    }
    assert policy.roles_for("astrologer") == frozenset()
    assert "ohjaamo" in policy.org_types and "substance_incident" in policy.categories
    assert "follow_up" in policy.purposes
    assert policy.is_special("health_check_summary") and not policy.is_special("interruption_notice")
    assert policy.category_fields("interruption_notice") == (
        "interruption_date",
        "reason_category",
        "results_summary",
        "proposed_next_step",
    )
    assert policy.rule("F7").basis == "consent_or_exception"
    with pytest.raises(KeyError):
        policy.rule("F99")


def test_the_index_holds_only_the_rules_for_a_category_and_purpose() -> None:
    policy = load_policy()
    candidates = policy.candidates("interruption_notice", "follow_up")
    assert {r.id for r in candidates} == {"F5", "F6", "F15a", "F15b"}
    assert all("interruption_notice" in r.categories and "follow_up" in r.purposes for r in candidates)
    forbids = [r.effect == "forbid" for r in policy.candidates("substance_incident", "follow_up")]
    assert forbids == sorted(forbids, reverse=True)  # forbids come first
    assert policy.candidates("horoscope", "follow_up") == ()


def test_every_rule_cites_its_statute_and_explains_itself_in_three_languages() -> None:
    for r in load_policy().rules:
        assert "§" in r.secrecy_ground, r.id
        assert set(r.explanation) == {"fi", "sv", "en"} and all(r.explanation.values()), r.id
        if r.effect == "permit":
            assert r.lawful_basis.startswith("GDPR 6(1)"), r.id


def test_the_engine_obligations_are_defined_in_the_vocabulary() -> None:
    assert {"dpo_review", "notify_person"} <= set(load_policy().obligations)


def test_no_health_detail_leaves_for_employment_services() -> None:
    policy = load_policy()
    assert "physician_notes" not in policy.rule("F8").fields["health_check_summary"]
    assert policy.rule("F6").fields["interruption_notice"] == ("interruption_date", "reason_category")
    assert not any("physician_notes" in fields for r in policy.rules for fields in r.fields.values())


def test_an_unknown_field_in_an_allow_list_is_named(tmp_path: Path) -> None:
    def mutate(data: dict[str, Any]) -> None:
        rule(data, "F7")["fields"]["work_assessment"].append("diagnosis")

    message = refusal(policy_copy(tmp_path, "health.yaml", mutate))
    assert "health.yaml: rule F7: fields.work_assessment: unknown field 'diagnosis'" in message


def test_an_unknown_category_is_named(tmp_path: Path) -> None:
    def mutate(data: dict[str, Any]) -> None:
        rule(data, "F5")["categories"].append("horoscope")

    message = refusal(policy_copy(tmp_path, "activation.yaml", mutate))
    assert "activation.yaml: rule F5: categories: unknown category 'horoscope'" in message


def test_an_unknown_key_in_a_rule_is_named(tmp_path: Path) -> None:
    def mutate(data: dict[str, Any]) -> None:
        rule(data, "F6")["colour"] = "red"

    message = refusal(policy_copy(tmp_path, "activation.yaml", mutate))
    assert "activation.yaml: rule F6: colour: Unknown field." in message


@pytest.mark.parametrize(
    ("file", "rule_id", "key", "value", "expected"),
    [
        ("health.yaml", "F7", "purposes", ["marketing"], "purposes: unknown purpose 'marketing'"),
        (
            "health.yaml",
            "F7",
            "requester_org_types",
            ["insurer"],
            "requester_org_types: unknown org type 'insurer'",
        ),
        (
            "health.yaml",
            "F7",
            "source_org_types",
            ["insurer"],
            "source_org_types: unknown org type 'insurer'",
        ),
        (
            "health.yaml",
            "F8",
            "requester_roles",
            ["kela_expert"],
            "requester_roles: 'kela_expert' is not a role of",
        ),
        ("health.yaml", "F7", "exceptions", ["because"], "exceptions: unknown exception 'because'"),
        ("health.yaml", "F7", "obligations", ["shrug"], "obligations: unknown obligation 'shrug'"),
        ("health.yaml", "F7", "basis", "vibes", "basis: Must be one of"),
        ("health.yaml", "F7", "lawful_basis", "because", "lawful_basis: must cite GDPR articles"),
        ("health.yaml", "F7", "consent", None, "consent: required for basis consent_or_exception"),
        ("health.yaml", "F7", "relationship_required", "yes", "relationship_required: Not a valid boolean."),
        (
            "health.yaml",
            "F16",
            "exceptions",
            ["lacks_capacity_no_representative"],
            "exceptions: required exactly",
        ),
        (
            "activation.yaml",
            "F6",
            "consent",
            {"explicit": True, "written": False},
            "consent: a statutory rule",
        ),
        ("activation.yaml", "F6", "except_org_types", ["kela"], "except_org_types: only a forbid"),
        (
            "activation.yaml",
            "F6",
            "categories",
            ["interruption_notice", "attendance_report"],
            "fields.attendance_report: missing allow-list",
        ),
        (
            "protection.yaml",
            "F12b",
            "fields",
            {"substance_incident": ["incident_date"]},
            "fields: not allowed in a forbid",
        ),
        ("protection.yaml", "F12b", "id", "F12-b", "id: not a flow id"),
    ],
)
def test_a_bad_rule_is_refused_naming_file_rule_and_field(
    tmp_path: Path, file: str, rule_id: str, key: str, value: object, expected: str
) -> None:
    def mutate(data: dict[str, Any]) -> None:
        target = rule(data, rule_id)
        if value is None:
            del target[key]
        else:
            target[key] = value

    message = refusal(policy_copy(tmp_path, file, mutate))
    shown_id = value if key == "id" else rule_id
    assert f"{file}: rule {shown_id}: {expected}" in message


def test_a_duplicate_rule_id_is_refused(tmp_path: Path) -> None:
    def mutate(data: dict[str, Any]) -> None:
        rule(data, "F8")["id"] = "F7"

    message = refusal(policy_copy(tmp_path, "health.yaml", mutate))
    assert "health.yaml: rule F7: id: duplicate rule id" in message


def test_a_bad_vocabulary_is_refused(tmp_path: Path) -> None:
    def mutate(data: dict[str, Any]) -> None:
        del data["categories"]["contact_details"]["special"]
        data["categories"]["work_assessment"]["fields"].append("tasks_tried")

    message = refusal(policy_copy(tmp_path, "vocabulary.yaml", mutate))
    assert "vocabulary.yaml: categories.contact_details.special: Missing data for required field." in message
    assert "vocabulary.yaml: categories.work_assessment.fields: duplicates: tasks_tried" in message


def test_a_missing_vocabulary_or_broken_yaml_is_refused(tmp_path: Path) -> None:
    folder = policy_copy(tmp_path)
    (folder / "health.yaml").write_text("rules: [unclosed", encoding="utf-8")
    assert "health.yaml" in refusal(folder)
    (folder / "vocabulary.yaml").unlink()
    assert "no vocabulary.yaml" in refusal(folder)


def test_the_version_is_the_hash_of_the_exact_files(tmp_path: Path) -> None:
    folder = policy_copy(tmp_path)
    before = load_policy(folder)
    assert load_policy(folder).version == before.version == load_policy().version
    path = folder / "health.yaml"
    path.write_text(
        path.read_text(encoding="utf-8") + "# a comment changes the text, so the version\n", encoding="utf-8"
    )
    after = load_policy(folder)
    assert after.version != before.version
    assert after.files["health.yaml"].endswith("# a comment changes the text, so the version\n")
    path.rename(folder / "health2.yaml")
    assert load_policy(folder).version not in (before.version, after.version)


def test_the_policy_is_immutable() -> None:
    policy = load_policy()
    with pytest.raises(AttributeError):
        policy.version = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        policy.files["vocabulary.yaml"] = ""  # type: ignore[index]


# --- the whole reference deployment (issue #3 item 1) ------------------------------------------------------------

# Every flow of the domain notes' table (flows.md, "Flows"); F2a/F2b, F9b and F14b are flows of their own there.
FLOWS_MD = {
    "F1", "F2a", "F2b", "F3", "F4", "F5", "F6", "F7", "F8", "F9", "F9b", "F10",
    "F11", "F12", "F13", "F14", "F14b", "F15", "F16", "F17", "F18",
}  # fmt: skip


def test_every_flow_of_the_domain_notes_is_encoded() -> None:
    policy = load_policy()
    assert {r.flow for r in policy.rules} | {p.flow for p in policy.portal} == FLOWS_MD
    assert {r.id: r.flow for r in policy.rules if r.id != r.flow} == {
        "F12a": "F12",
        "F12b": "F12",
        "F15a": "F15",
        "F15b": "F15",
    }


def test_the_persons_own_access_is_a_portal_entry_no_partner_request_can_match() -> None:
    policy = load_policy()
    [access] = policy.portal
    assert (access.id, access.flow, access.basis) == ("F17", "F17", "statute")
    assert access.categories == policy.categories
    assert "Art. 15" in access.secrecy_ground and "703/2023 11 §" in access.secrecy_ground
    assert "F17" not in policy.by_id
    assert all(r.id != "F17" for rules in policy.index.values() for r in rules)


def test_every_permit_names_what_the_register_needs() -> None:
    for r in load_policy().rules:
        if r.effect != "permit":
            continue
        assert r.requester_org_types and r.source_org_types and r.categories and r.purposes, r.id
        assert r.basis in ("statute", "consent", "consent_or_exception"), r.id
        assert r.lawful_basis.startswith("GDPR ") and "§" in r.secrecy_ground, r.id
        assert set(r.fields) == set(r.categories), r.id


def test_f14b_gives_outreach_youth_work_contact_details_of_a_young_person_told_first() -> None:
    rule = load_policy().rule("F14b")
    assert (rule.basis, rule.person_age_under, rule.relationship_required) == ("statute", 29, False)
    assert rule.requester_org_types == {"youth_outreach"}
    assert rule.source_org_types == {"employment_services", "employment_authority", "kela"}
    assert rule.obligations == ("tell_person_in_advance",)
    assert rule.secrecy_ground == "1285/2016 11 § 4 mom."
    assert set(rule.fields["contact_details"]) == {"name", "phone", "email"}


SOCIAL_SIDE = {"social_work", "employment_services", "third_sector_provider"}


def test_statutory_exceptions_are_listed_only_where_the_law_names_them() -> None:
    """703/2023 53 § 5–6 mom. and 56 § apply to social ↔ health flows; 1301/2014 35 § to contacting social
    services (flows.md)."""
    for r in load_policy().rules:
        for ground in r.exceptions:
            if ground == "manifestly_unable_to_look_after_self":
                assert r.requester_org_types == {"social_work"}, r.id
            else:
                health_asks = r.requester_org_types == {"health_care"} and r.source_org_types <= SOCIAL_SIDE
                health_gives = r.source_org_types == {"health_care"} and r.requester_org_types <= SOCIAL_SIDE
                assert health_asks or health_gives, (r.id, ground)
    assert {r.id for r in load_policy().rules if r.exceptions} == {"F7", "F8", "F11"}


JARGON = re.compile(
    r"§|GDPR|\bArt\.|recipient|disclos|secrecy|lawful|controller|processing|"
    r"luovut|vastaanottaj|rekisterinpit|salassapito|käsittely|"
    r"utlämn|mottagare|personuppgiftsansvar|sekretess|behandling",
    re.IGNORECASE,
)


def test_explanations_speak_plainly_in_three_languages() -> None:
    """glossary.md: plain language beats legal language ("who can see your information", not "recipients of
    disclosure"); the references live in the rule, not in what the person reads."""
    policy = load_policy()
    for entry in (*policy.rules, *policy.portal):
        assert set(entry.explanation) == {"fi", "sv", "en"}, entry.id
        for lang, text in entry.explanation.items():
            assert 40 <= len(text) <= 600, (entry.id, lang)
            assert not JARGON.search(text), (entry.id, lang, JARGON.search(text))


def test_a_stored_policy_loads_again_with_the_same_version() -> None:
    policy = load_policy()
    again = load_policy_files(policy.files)
    assert again.version == policy.version
    assert [r.id for r in again.rules] == [r.id for r in policy.rules]
    assert [p.id for p in again.portal] == ["F17"] and again.portal[0].file == "stored policy/access.yaml"
    changed = load_policy_files({**policy.files, "health.yaml": policy.files["health.yaml"] + "# note\n"})
    assert changed.version != policy.version
    with pytest.raises(PolicyError, match=r"old: no vocabulary\.yaml"):
        load_policy_files({"health.yaml": policy.files["health.yaml"]}, origin="old")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("basis", "consent", "portal entry F17: basis: Must be one of"),
        ("categories", ["horoscope"], "portal entry F17: categories: unknown category 'horoscope'"),
        ("fields", {"contact_details": ["name"]}, "portal entry F17: fields: Unknown field."),
        ("shows", "", "portal entry F17: shows: Shorter than minimum length 1."),
    ],
)
def test_a_bad_portal_entry_is_refused_naming_file_entry_and_field(
    tmp_path: Path, key: str, value: object, expected: str
) -> None:
    def mutate(data: dict[str, Any]) -> None:
        data["portal"][0][key] = value

    assert f"access.yaml: {expected}" in refusal(policy_copy(tmp_path, "access.yaml", mutate))


def test_a_portal_entry_cannot_reuse_a_rule_id(tmp_path: Path) -> None:
    def mutate(data: dict[str, Any]) -> None:
        data["portal"][0]["id"] = "F7"

    message = refusal(policy_copy(tmp_path, "access.yaml", mutate))
    assert "health.yaml: rule F7: id: duplicate rule id (also in " in message and "access.yaml)" in message


@pytest.mark.parametrize(
    ("file", "rule_id", "key", "value", "expected"),
    [
        ("protection.yaml", "F12b", "person_age_under", 29, "person_age_under: not allowed in a forbid"),
        ("youth.yaml", "F14b", "person_age_under", "29", "person_age_under: Not a valid integer."),
        ("youth.yaml", "F14b", "person_age_under", 0, "person_age_under: Must be greater than or equal to 1"),
        ("youth.yaml", "F14b", "flow", "youth", "flow: not a flow id"),
        ("youth.yaml", "F14b", "obligations", ["tell_later"], "obligations: unknown obligation 'tell_later'"),
    ],
)
def test_the_new_rule_keys_are_checked(
    tmp_path: Path, file: str, rule_id: str, key: str, value: object, expected: str
) -> None:
    def mutate(data: dict[str, Any]) -> None:
        rule(data, rule_id)[key] = value

    assert f"{file}: rule {rule_id}: {expected}" in refusal(policy_copy(tmp_path, file, mutate))


def test_a_rule_file_without_rules_or_portal_entries_is_refused(tmp_path: Path) -> None:
    folder = policy_copy(tmp_path)
    (folder / "empty.yaml").write_text("description: nothing here\n", encoding="utf-8")
    assert "empty.yaml: rules: a rule file holds rules, portal entries or both" in refusal(folder)


def test_a_folder_that_is_not_there_is_refused(tmp_path: Path) -> None:
    assert "not a folder of policy files" in refusal(tmp_path / "missing")
