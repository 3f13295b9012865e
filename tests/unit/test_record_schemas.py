"""The record schemas hold the field contract of records.md and reject everything else."""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError, fields

from schemas.records import (
    CATEGORIES,
    RECORD_SCHEMAS,
    field_names,
    field_sensitivity,
    load_record,
    project,
)
from schemas.records._fields import short_text
from schemas.records.examples import EXAMPLES

# records.md, "Record categories", transcribed: category -> (required fields, optional fields).
CONTRACT: dict[str, tuple[set[str], set[str]]] = {
    "activation_plan": (
        {"plan_date", "goals", "measures"},
        {
            "education_and_work_history",
            "earlier_measures_assessment",
            "activity_place",
            "hours_per_week",
            "start_date",
            "end_date",
            "support_and_guidance",
            "review_date",
            "own_social_worker",
        },
    ),
    "activity_decision": (
        {
            "decision_date",
            "start_date",
            "days_per_week",
            "hours_per_day",
            "activity_place",
            "goals",
            "own_social_worker",
        },
        {"end_date", "support_and_guidance", "work_restrictions"},
    ),
    "attendance_report": (
        {"period_start", "period_end", "days_planned", "days_attended"},
        {"progress_against_goals", "next_step"},
    ),
    "interruption_notice": (
        {"interruption_date", "reason_category"},
        {"results_summary", "proposed_next_step"},
    ),
    "work_assessment": (
        {"assessment_date", "tasks_tried"},
        {
            "hours_tolerated_per_day",
            "observed_limitations",
            "attendance_rate",
            "client_view",
            "coach_recommendation",
        },
    ),
    "health_check_summary": (
        {"check_date", "attended"},
        {"work_restrictions", "recommended_services", "physician_notes"},
    ),
    "service_need_assessment": (
        {"assessment_date", "service_needs"},
        {
            "identity_and_contact",
            "education_and_work_history",
            "social_situation",
            "health_and_work_capacity",
            "proposed_measures",
        },
    ),
    "concern_notification": (
        {"observed_at", "concern", "facts", "client_informed"},
        {"urgent"},
    ),
    "substance_incident": ({"incident_date", "observed_facts", "action_taken"}, set()),
    "rehabilitation_statement": (
        {"statement_date", "functional_capacity", "rehabilitation_need"},
        {"proposed_rehabilitation", "author_role"},
    ),
    "benefit_status": ({"threshold_reached_on", "benefit"}, set()),
    "cofinancing_entry": ({"month", "benefit_day_band"}, {"amount_band", "current_service_status"}),
    "youth_referral": (
        {"referral_date", "situation", "support_need", "young_person_informed"},
        {"guardian_informed"},
    ),
    "contact_details": ({"name"}, {"title", "phone", "email"}),
}

# records.md's closed code lists.
ENUMS = {
    ("interruption_notice", "reason_category"): {
        "own_reason",
        "external_reason",
        "health",
        "substance_rules",
        "other",
    },
    ("benefit_status", "benefit"): {
        "labour_market_subsidy",
        "basic_unemployment_allowance",
        "earnings_related_allowance",
        "social_assistance",
    },
    ("cofinancing_entry", "benefit_day_band"): {"300-499", "500-999", "1000+"},
}

# Fields the brief and flows.md name as special-category (GDPR Art. 9) content.
KNOWN_SPECIAL = {
    ("work_assessment", "observed_limitations"),
    ("health_check_summary", "physician_notes"),
    ("health_check_summary", "work_restrictions"),
    ("activity_decision", "work_restrictions"),
    ("substance_incident", "incident_date"),
    ("substance_incident", "observed_facts"),
    ("substance_incident", "action_taken"),
    ("rehabilitation_statement", "functional_capacity"),
    ("service_need_assessment", "health_and_work_capacity"),
}
KNOWN_IDENTIFYING = {
    ("contact_details", "name"),
    ("contact_details", "phone"),
    ("contact_details", "email"),
    ("activation_plan", "own_social_worker"),
    ("activity_decision", "own_social_worker"),
    ("service_need_assessment", "identity_and_contact"),
}

CONTROL_CHARACTERS = ["\x00", "\x07", "\x08", "\x0b", "\x0c", "\r", "\x1b", "\x1f", "\x7f", "\x85", "\ud800"]


def _fields(category: str) -> dict[str, fields.Field]:
    return dict(RECORD_SCHEMAS[category]().fields)


def _all(kind: type[fields.Field]) -> list[tuple[str, str]]:
    """Every (category, field) whose field is of ``kind``, for parametrising."""
    return [
        (category, name)
        for category in sorted(CATEGORIES)
        for name, field in _fields(category).items()
        if isinstance(field, kind)
    ]


def _text_paths() -> list[tuple[str, str, str]]:
    """(category, field, shape) for every text value: a plain string, a list item, or a nested name."""
    paths = []
    for category in sorted(CATEGORIES):
        for name, field in _fields(category).items():
            if isinstance(field, fields.String):
                paths.append((category, name, "string"))
            elif isinstance(field, fields.List):
                paths.append((category, name, "list"))
            elif isinstance(field, fields.Nested):
                paths.append((category, name, "nested"))
    return paths


def _example(category: str) -> dict[str, Any]:
    return copy.deepcopy(EXAMPLES[category])


def _with_text(category: str, name: str, shape: str, text: str) -> dict[str, Any]:
    content = _example(category)
    if shape == "string":
        content[name] = text
    elif shape == "list":
        content[name] = [*content[name][:1], text]
    else:
        content[name]["name"] = text
    return content


def _messages(category: str, content: object) -> dict[str, Any]:
    with pytest.raises(ValidationError) as raised:
        load_record(category, content)
    messages = raised.value.messages
    assert isinstance(messages, dict)
    return messages


# --- the contract -------------------------------------------------------------------------------------


def test_there_is_one_schema_for_each_category_of_records_md() -> None:
    assert set(RECORD_SCHEMAS) == set(CONTRACT)
    assert frozenset(CONTRACT) == CATEGORIES


@pytest.mark.parametrize("category", sorted(CONTRACT))
def test_field_names_equal_the_records_md_table(category: str) -> None:
    required, optional = CONTRACT[category]
    assert set(field_names(category)) == required | optional
    assert len(field_names(category)) == len(required | optional)


@pytest.mark.parametrize("category", sorted(CONTRACT))
def test_required_fields_are_those_records_md_marks(category: str) -> None:
    required, _ = CONTRACT[category]
    assert {name for name, field in _fields(category).items() if field.required} == required


@pytest.mark.parametrize("category", sorted(CATEGORIES))
def test_every_schema_raises_on_unknown_fields(category: str) -> None:
    schema = RECORD_SCHEMAS[category]
    assert schema.Meta.unknown == "raise"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("category", "name"), sorted(ENUMS))
def test_code_lists_are_exactly_those_of_records_md(category: str, name: str) -> None:
    for code in ENUMS[(category, name)]:
        load_record(category, {**_example(category), name: code})
    assert name in _messages(category, {**_example(category), name: "Health"})


@pytest.mark.parametrize("category", sorted(CATEGORIES))
def test_every_field_has_a_sensitivity_and_a_description(category: str) -> None:
    for name, field in _fields(category).items():
        assert field.metadata["sensitivity"] in {"special", "identifying", "ordinary"}, name
        assert field.metadata["description"].strip(), name
    assert set(field_sensitivity(category)) == set(field_names(category))


def test_health_substance_and_capacity_content_is_special() -> None:
    for category, name in KNOWN_SPECIAL:
        assert field_sensitivity(category)[name] == "special", (category, name)


def test_names_and_contact_data_are_identifying() -> None:
    for category, name in KNOWN_IDENTIFYING:
        assert field_sensitivity(category)[name] == "identifying", (category, name)


def test_every_substance_incident_field_is_special() -> None:
    assert set(field_sensitivity("substance_incident").values()) == {"special"}


def test_categories_the_flows_table_marks_not_special_hold_no_special_field() -> None:
    for category in ("attendance_report", "interruption_notice", "benefit_status", "cofinancing_entry"):
        assert "special" not in field_sensitivity(category).values(), category


# --- valid content ------------------------------------------------------------------------------------


def test_there_is_a_complete_example_for_every_category() -> None:
    assert set(EXAMPLES) == CATEGORIES
    for category, example in EXAMPLES.items():
        assert set(example) == set(field_names(category)), category


@pytest.mark.parametrize("category", sorted(CATEGORIES))
def test_a_valid_example_round_trips_as_json(category: str) -> None:
    loaded = load_record(category, _example(category))
    assert loaded == EXAMPLES[category]
    assert json.loads(json.dumps(loaded)) == loaded
    assert load_record(category, loaded) == loaded


@pytest.mark.parametrize("category", sorted(CATEGORIES))
def test_only_the_required_fields_are_enough(category: str) -> None:
    required, _ = CONTRACT[category]
    minimal = {name: value for name, value in _example(category).items() if name in required}
    assert load_record(category, minimal) == minimal


def test_dates_come_back_as_iso_strings() -> None:
    content = {**_example("benefit_status"), "threshold_reached_on": dt.date(2025, 8, 29)}
    assert load_record("benefit_status", content)["threshold_reached_on"] == "2025-08-29"


def test_load_record_does_not_change_its_input() -> None:
    content = _example("activation_plan")
    load_record("activation_plan", content)
    assert content == EXAMPLES["activation_plan"]


def test_newlines_and_tabs_are_allowed_in_text() -> None:
    content = {**_example("attendance_report"), "next_step": "Ensin:\n\t- työkokeilu\n\t- koulutus"}
    assert load_record("attendance_report", content)["next_step"] == content["next_step"]


def test_fractional_hours_are_allowed() -> None:
    assert load_record("activity_decision", {**_example("activity_decision"), "hours_per_day": 3.5})


def test_an_optional_list_may_be_empty() -> None:
    assert load_record("health_check_summary", {**_example("health_check_summary"), "work_restrictions": []})


# --- what is rejected ---------------------------------------------------------------------------------


def test_an_unknown_category_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown category 'diagnosis'"):
        load_record("diagnosis", {})
    for call in (field_names, field_sensitivity):
        with pytest.raises(ValueError, match="unknown category"):
            call("diagnosis")
    with pytest.raises(ValueError, match="unknown category"):
        project("diagnosis", {}, [])


@pytest.mark.parametrize("category", [None, 3, ["activation_plan"], ("activation_plan",)])
def test_a_category_that_is_not_a_string_is_a_value_error(category: Any) -> None:
    with pytest.raises(ValueError, match="unknown category"):
        load_record(category, {})


@pytest.mark.parametrize("content", [None, [], "plan", 3, [{"plan_date": "2025-01-01"}]])
def test_content_that_is_not_an_object_is_rejected(content: object) -> None:
    assert "_schema" in _messages("activation_plan", content)


@pytest.mark.parametrize("category", sorted(CATEGORIES))
def test_every_category_rejects_an_unknown_field(category: str) -> None:
    assert _messages(category, {**_example(category), "diagnosis": "F32.1"}) == {"diagnosis": ["Unknown field."]}


@pytest.mark.parametrize(("category", "name"), _all(fields.Nested))
def test_a_nested_contact_rejects_an_unknown_field(category: str, name: str) -> None:
    content = _example(category)
    content[name]["personal_identity_code"] = "010190-123A"
    assert _messages(category, content) == {name: {"personal_identity_code": ["Unknown field."]}}


@pytest.mark.parametrize(("category", "name"), _all(fields.Nested))
def test_a_nested_contact_needs_a_name(category: str, name: str) -> None:
    content = _example(category)
    del content[name]["name"]
    assert _messages(category, content) == {name: {"name": ["Missing data for required field."]}}


@pytest.mark.parametrize(
    ("category", "name"),
    [(category, name) for category in sorted(CONTRACT) for name in sorted(CONTRACT[category][0])],
)
def test_every_category_rejects_a_missing_required_field(category: str, name: str) -> None:
    content = _example(category)
    del content[name]
    assert _messages(category, content) == {name: ["Missing data for required field."]}


@pytest.mark.parametrize(("category", "name"), [(c, n) for c in sorted(CATEGORIES) for n in field_names(c)])
def test_null_is_rejected_for_every_field(category: str, name: str) -> None:
    assert name in _messages(category, {**_example(category), name: None})


@pytest.mark.parametrize(("category", "name"), _all(fields.Boolean))
@pytest.mark.parametrize("value", ["yes", "true", 1, 0, 1.0, "on", [True]])
def test_booleans_accept_only_true_and_false(category: str, name: str, value: object) -> None:
    assert _messages(category, {**_example(category), name: value}) == {name: ["Not a valid boolean."]}


@pytest.mark.parametrize(("category", "name"), _all(fields.Date))
@pytest.mark.parametrize(
    "value",
    [
        "2026-13-01",
        "2026-02-30",
        "20260101",
        "2026-W01-1",
        "2026-1-5",
        "2026-01-01T00:00:00",
        "01.02.2026",
        20260101,
    ],
)
def test_dates_accept_only_yyyy_mm_dd(category: str, name: str, value: object) -> None:
    assert _messages(category, {**_example(category), name: value}) == {name: ["Not a valid date."]}


def test_a_datetime_is_not_a_date() -> None:
    content = {**_example("benefit_status"), "threshold_reached_on": dt.datetime(2025, 8, 29, 12, 0)}
    assert "threshold_reached_on" in _messages("benefit_status", content)


@pytest.mark.parametrize(("category", "name"), _all(fields.Float))
@pytest.mark.parametrize("value", ["4", "4,5", True, float("nan"), float("inf"), [4]])
def test_numbers_must_be_json_numbers(category: str, name: str, value: object) -> None:
    assert name in _messages(category, {**_example(category), name: value})


@pytest.mark.parametrize(("category", "name"), _all(fields.Integer))
@pytest.mark.parametrize("value", ["3", 3.5, 3.0, True])
def test_counts_must_be_json_integers(category: str, name: str, value: object) -> None:
    assert name in _messages(category, {**_example(category), name: value})


@pytest.mark.parametrize(
    ("category", "name", "too_low", "lowest", "highest", "too_high"),
    [
        ("activation_plan", "hours_per_week", -0.5, 0, 60, 60.5),
        ("activity_decision", "days_per_week", 0, 1, 7, 8),
        ("activity_decision", "hours_per_day", 0.5, 1, 12, 12.5),
        ("work_assessment", "hours_tolerated_per_day", -1, 0, 12, 12.5),
        ("work_assessment", "attendance_rate", -0.1, 0, 100, 100.1),
    ],
)
def test_numbers_are_range_checked(
    category: str, name: str, too_low: float, lowest: float, highest: float, too_high: float
) -> None:
    for value in (lowest, highest):
        load_record(category, {**_example(category), name: value})
    for value in (too_low, too_high):
        assert name in _messages(category, {**_example(category), name: value})


@pytest.mark.parametrize(("category", "name"), _all(fields.String))
@pytest.mark.parametrize("value", [42, 4.5, True, ["text"], {"fi": "text"}, b"text"])
def test_text_must_be_a_string(category: str, name: str, value: object) -> None:
    assert name in _messages(category, {**_example(category), name: value})


@pytest.mark.parametrize(("category", "name"), _all(fields.List))
@pytest.mark.parametrize("value", ["a single string", {"0": "item"}, [42], [""]])
def test_lists_must_be_lists_of_text(category: str, name: str, value: object) -> None:
    assert name in _messages(category, {**_example(category), name: value})


@pytest.mark.parametrize(("category", "name"), _all(fields.List))
def test_lists_hold_at_most_fifty_items(category: str, name: str) -> None:
    load_record(category, {**_example(category), name: [f"kohta {i}" for i in range(50)]})
    messages = _messages(category, {**_example(category), name: [f"kohta {i}" for i in range(51)]})
    assert set(messages) == {name}
    assert "50" in messages[name][0]


@pytest.mark.parametrize(("category", "name"), _all(fields.Nested))
@pytest.mark.parametrize("value", ["Sanna Virtanen", ["Sanna Virtanen"], 42])
def test_a_nested_contact_must_be_an_object(category: str, name: str, value: object) -> None:
    assert name in _messages(category, {**_example(category), name: value})


@pytest.mark.parametrize(("category", "name", "shape"), _text_paths())
def test_every_category_rejects_too_long_text(category: str, name: str, shape: str) -> None:
    assert name in _messages(category, _with_text(category, name, shape, "a" * 4001))


@pytest.mark.parametrize(("category", "name", "shape"), _text_paths())
def test_every_category_rejects_empty_text(category: str, name: str, shape: str) -> None:
    assert name in _messages(category, _with_text(category, name, shape, ""))


@pytest.mark.parametrize(("category", "name", "shape"), _text_paths())
@pytest.mark.parametrize("character", CONTROL_CHARACTERS)
def test_every_category_rejects_control_characters(category: str, name: str, shape: str, character: str) -> None:
    assert name in _messages(category, _with_text(category, name, shape, f"Sanna{character}Virtanen"))


@pytest.mark.parametrize(
    ("category", "name", "limit"),
    [
        ("activation_plan", "activity_place", 200),
        ("contact_details", "name", 200),
        ("rehabilitation_statement", "author_role", 200),
        ("work_assessment", "observed_limitations", 4000),
        ("health_check_summary", "physician_notes", 4000),
        ("interruption_notice", "results_summary", 4000),
    ],
)
def test_short_text_ends_at_200_and_long_text_at_4000_characters(category: str, name: str, limit: int) -> None:
    load_record(category, {**_example(category), name: "ä" * limit})
    assert name in _messages(category, {**_example(category), name: "ä" * (limit + 1)})


def test_list_items_are_short_text() -> None:
    load_record("work_assessment", {**_example("work_assessment"), "tasks_tried": ["a" * 200]})
    assert "tasks_tried" in _messages("work_assessment", {**_example("work_assessment"), "tasks_tried": ["a" * 201]})


@pytest.mark.parametrize("value", ["sanna.virtanen", "sanna@", "@varha.example", "sanna virtanen@varha.example"])
def test_an_email_address_is_validated(value: str) -> None:
    assert "email" in _messages("contact_details", {"name": "Sanna Virtanen", "email": value})


@pytest.mark.parametrize("value", ["puh. 040 000 0101", "040", "+358 40 000 0101 ext", "040\n000"])
def test_a_telephone_number_is_validated(value: str) -> None:
    assert "phone" in _messages("contact_details", {"name": "Sanna Virtanen", "phone": value})


@pytest.mark.parametrize("value", ["2025-13", "2025-00", "2025-1", "2025-11-01", "11/2025", "2025-11\n"])
def test_a_month_is_yyyy_mm(value: str) -> None:
    assert "month" in _messages("cofinancing_entry", {**_example("cofinancing_entry"), "month": value})


# --- checks across fields -----------------------------------------------------------------------------


@pytest.mark.parametrize("category", ["activation_plan", "activity_decision"])
def test_end_date_must_not_be_before_start_date(category: str) -> None:
    content = {**_example(category), "start_date": "2026-03-01", "end_date": "2026-02-28"}
    assert _messages(category, content) == {"end_date": ["Must not be before start_date."]}
    load_record(category, {**content, "end_date": "2026-03-01"})


def test_period_end_must_not_be_before_period_start() -> None:
    content = {**_example("attendance_report"), "period_start": "2025-10-31", "period_end": "2025-10-01"}
    assert _messages("attendance_report", content) == {"period_end": ["Must not be before period_start."]}


def test_days_attended_must_not_exceed_days_planned() -> None:
    content = {**_example("attendance_report"), "days_planned": 10, "days_attended": 11}
    assert _messages("attendance_report", content) == {"days_attended": ["Must not exceed days_planned."]}
    load_record("attendance_report", {**content, "days_attended": 10})


def test_days_planned_must_fit_in_the_period() -> None:
    content = {
        **_example("attendance_report"),
        "period_start": "2025-10-01",
        "period_end": "2025-10-07",
        "days_planned": 8,
        "days_attended": 0,
    }
    assert "days_planned" in _messages("attendance_report", content)
    load_record("attendance_report", {**content, "days_planned": 7})


# --- projection ---------------------------------------------------------------------------------------


def test_the_employment_authority_sees_only_date_and_reason_category_of_an_interruption() -> None:
    # flows.md F6: "fact, date, reason category only".
    content = load_record("interruption_notice", _example("interruption_notice"))
    assert project("interruption_notice", content, ["interruption_date", "reason_category"]) == {
        "interruption_date": "2026-02-10",
        "reason_category": "own_reason",
    }


def test_employment_services_see_a_health_check_without_physician_notes() -> None:
    # flows.md F8: "attended, relevant restrictions, recommended services".
    content = load_record("health_check_summary", _example("health_check_summary"))
    projected = project("health_check_summary", content, ["attended", "work_restrictions", "recommended_services"])
    assert set(projected) == {"attended", "work_restrictions", "recommended_services"}
    assert "physician_notes" not in projected


def test_project_leaves_out_allowed_fields_the_content_does_not_have() -> None:
    assert project("contact_details", {"name": "Sanna Virtanen"}, ["name", "email"]) == {"name": "Sanna Virtanen"}


def test_project_ignores_names_the_category_does_not_define() -> None:
    content = {"name": "Sanna Virtanen", "smuggled": "x"}
    assert project("contact_details", content, ["smuggled", "physician_notes"]) == {}


def test_project_returns_a_copy() -> None:
    content = load_record("activation_plan", _example("activation_plan"))
    projected = project("activation_plan", content, ["goals", "own_social_worker"])
    projected["goals"].append("lisätty")
    projected["own_social_worker"]["name"] = "muutettu"
    assert content == EXAMPLES["activation_plan"]


def test_project_refuses_content_that_is_not_a_mapping() -> None:
    with pytest.raises(TypeError):
        project("contact_details", [("name", "Sanna Virtanen")], ["name"])  # type: ignore[arg-type]


def test_a_field_cannot_be_declared_without_a_known_sensitivity_and_a_description() -> None:
    with pytest.raises(ValueError, match="unknown sensitivity"):
        short_text(description="Name.", sensitivity="secret")
    with pytest.raises(ValueError, match="description"):
        short_text(description="", sensitivity="ordinary")


def test_project_refuses_a_bare_string_as_the_allow_list() -> None:
    with pytest.raises(TypeError):
        project("contact_details", {"name": "Sanna Virtanen"}, "name")


_names = st.sampled_from(sorted({name for category in CATEGORIES for name in field_names(category)}))
_keys = st.one_of(_names, st.text(max_size=20))
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)


@settings(database=None, max_examples=300)
@given(
    category=st.sampled_from(sorted(CATEGORIES)),
    content=st.dictionaries(_keys, _json, max_size=12),
    allowed=st.lists(_keys, max_size=12),
)
def test_project_never_returns_a_field_outside_the_allow_list(
    category: str, content: dict[str, Any], allowed: list[str]
) -> None:
    projected = project(category, content, allowed)
    assert set(projected) <= set(allowed)
    assert set(projected) <= set(content)
    assert set(projected) <= set(field_names(category))
    for name, value in projected.items():
        assert value == content[name]


@settings(database=None, max_examples=100)
@given(category=st.sampled_from(sorted(CATEGORIES)), allowed=st.sets(_names, max_size=8))
def test_project_of_a_valid_record_returns_exactly_the_allowed_fields_it_has(category: str, allowed: set[str]) -> None:
    content = load_record(category, _example(category))
    assert set(project(category, content, allowed)) == allowed & set(content)


@settings(database=None, max_examples=300)
@given(category=st.sampled_from(sorted(CATEGORIES)), content=st.dictionaries(_keys, _json, max_size=12))
def test_arbitrary_json_content_either_loads_or_raises_validation_error(category: str, content: dict[str, Any]) -> None:
    try:
        loaded = load_record(category, content)
    except ValidationError as error:
        assert isinstance(error.messages, dict)
        assert set(error.messages) <= set(content) | set(field_names(category)) | {"_schema"}
    else:
        assert set(loaded) <= set(field_names(category))
        json.dumps(loaded)


@settings(database=None, max_examples=200)
@given(text=st.text(max_size=300))
def test_text_is_accepted_exactly_when_it_has_no_forbidden_characters(text: str) -> None:
    forbidden = any(
        (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF for c in text
    )
    content = {**_example("attendance_report"), "next_step": text}
    if forbidden or not text:
        assert "next_step" in _messages("attendance_report", content)
    else:
        assert load_record("attendance_report", content)["next_step"] == text


def test_schemas_are_marshmallow_schemas() -> None:
    for schema in RECORD_SCHEMAS.values():
        assert issubclass(schema, Schema)
