"""The register of flows and `broker policy explain` (issue #3 item 6): generated from the files, and the copy
in docs/policies.md kept up to date with them; the documented `eval` example works as written."""

from __future__ import annotations

import json
import re

import pytest

from policies import load_policy
from policies.cli import evaluate_json
from policies.loader import PACKAGE_DIR
from policies.register import (
    REGISTER_END,
    REGISTER_START,
    explain_all,
    explain_flow,
    find_flow,
    flow_key,
    flows,
    register_in,
    register_markdown,
    replace_register,
)

POLICY = load_policy()
DOCS = PACKAGE_DIR.parent / "docs" / "policies.md"


def squeeze(text: str) -> str:
    return " ".join(text.split())


def test_the_register_in_the_docs_is_up_to_date_with_the_files() -> None:
    assert register_in(DOCS.read_text(encoding="utf-8")) == register_markdown(POLICY), (
        "docs/policies.md is out of date: run `broker policy register --update docs/policies.md`"
    )


def test_the_register_has_a_row_per_rule_and_portal_entry_in_flow_order() -> None:
    lines = register_markdown(POLICY).splitlines()
    assert lines[0].startswith("| flow | rule | effect | who receives | from whom |")
    rows = [line.split(" | ") for line in lines[2:]]
    assert [row[1] for row in rows] == [e.id for entries in flows(POLICY).values() for e in entries]
    assert len(rows) == len(POLICY.rules) + len(POLICY.portal)
    by_rule = {row[1]: row for row in rows}
    assert by_rule["F17"][2] == "portal" and "never matched for a partner request" in by_rule["F17"][10]
    assert by_rule["F12b"][2] == "forbid" and by_rule["F12b"][3] == "any organisation type except social_work"
    assert "only for a person under 29" in by_rule["F14b"][10] and "`tell_person_in_advance`" in by_rule["F14b"][12]
    assert "explicit and written consent" in by_rule["F18"][10]
    assert "physician_notes" not in by_rule["F8"][11]


def test_flows_are_in_the_order_of_the_domain_notes() -> None:
    assert list(flows(POLICY))[:4] == ["F1", "F2a", "F2b", "F3"]
    assert sorted(["F10", "F9b", "F2b", "F9", "F2a", "F14b", "F14"], key=flow_key) == [
        "F2a",
        "F2b",
        "F9",
        "F9b",
        "F10",
        "F14",
        "F14b",
    ]


@pytest.mark.parametrize("lang", ["en", "fi", "sv"])
def test_every_flow_is_explained_with_its_references_fields_and_plain_words(lang: str) -> None:
    for flow, entries in flows(POLICY).items():
        text = explain_flow(POLICY, flow, lang)
        for entry in entries:
            assert squeeze(entry.explanation[lang]) in squeeze(text), (flow, entry.id)
            assert squeeze(entry.secrecy_ground) in squeeze(text), (flow, entry.id)
            if entry.id in POLICY.by_id and (rule := POLICY.rule(entry.id)).effect == "permit":
                assert squeeze(rule.lawful_basis) in squeeze(text)
                for category, fields in rule.fields.items():
                    assert all(f in text for f in fields), (flow, category)


def test_explain_says_who_receives_what_from_whom_on_which_basis() -> None:
    text = squeeze(explain_flow(POLICY, "F7"))
    assert "who receives: health_care — any role" in text
    assert "from whom: records deposited by employment_services" in text
    assert "basis: consent, or a statutory exception the requester asserts" in text
    assert "lacks_capacity_no_representative (703/2023 53 § 5–6 mom.)" in text
    assert "adds the obligations dpo_review, notify_person" in text
    assert "withheld: work_assessment: coach_recommendation" in text
    f14b = squeeze(explain_flow(POLICY, "f14B"))
    assert "only for a person under 29" in f14b and "tell_person_in_advance —" in f14b
    assert "never to a partner request" in explain_flow(POLICY, "F17")


def test_a_flow_of_two_rules_is_explained_by_both_and_a_rule_alone_by_its_id() -> None:
    assert [e.id for e in find_flow(POLICY, "F12")] == ["F12a", "F12b"]
    assert [e.id for e in find_flow(POLICY, "f12a")] == ["F12a"]
    text = explain_flow(POLICY, "F12")
    assert "rule F12a, permit" in text and "rule F12b, forbid" in text
    assert "no statute, consent or exception opens it" in text
    with pytest.raises(KeyError, match="no flow or rule 'F99'; the policy has F1, F2a"):
        find_flow(POLICY, "F99")
    with pytest.raises(ValueError, match="language"):
        explain_flow(POLICY, "F7", "de")
    assert explain_all(POLICY).count("\n\nF") == len(POLICY.rules) + len(POLICY.portal) - 1


def test_the_register_is_replaced_between_its_markers_only() -> None:
    document = f"# title\n\n{REGISTER_START}\nold\n{REGISTER_END}\n\nafter\n"
    updated = replace_register(document, "| new |\n")
    assert updated == f"# title\n\n{REGISTER_START}\n\n| new |\n\n{REGISTER_END}\n\nafter\n"
    assert register_in(updated) == "| new |\n"
    with pytest.raises(ValueError, match="markers"):
        register_in("# no markers")


def _json_after(marker: str, document: str) -> object:
    found = re.search(re.escape(marker) + r"\s*```json\n(.*?)```", document, re.DOTALL)
    assert found, marker
    return json.loads(found.group(1))


def test_the_documented_eval_example_works_as_written() -> None:
    document = DOCS.read_text(encoding="utf-8")
    given, printed = (
        _json_after("<!-- eval-example:input -->", document),
        _json_after("<!-- eval-example:output -->", document),
    )
    answer = evaluate_json(POLICY, given)
    assert isinstance(printed, dict)
    assert {**answer, "policy_version": None} == {**printed, "policy_version": None}


def test_the_docs_name_every_command_and_exit_code_of_diff() -> None:
    document = DOCS.read_text(encoding="utf-8")
    for command in ("check", "test", "eval", "explain", "register", "diff"):
        assert f"broker policy {command}" in document
    assert "**0** when nothing changes, **1** when something does" in document
