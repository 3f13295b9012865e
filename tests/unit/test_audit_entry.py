"""The audit entry: its exact format, what it refuses to hold, and the salted actor commitment."""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from audit import (
    ENTRY_VERSION,
    EVENT_TYPES,
    AuditError,
    CanonicalisationError,
    build_entry,
    canonical_json,
    commit_actor,
    entry_bytes,
    new_actor_salt,
    verify_actor_commitment,
)

LOGGED_AT = datetime(2025, 3, 4, 5, 6, 7, 89, tzinfo=UTC)
SALT = "5eed" * 16
COMMITMENT = commit_actor("coach-17", SALT)
PAYLOAD = hashlib.sha256(b"projected record content").hexdigest()
NOTHING: dict[str, Any] = {
    "request_id": None,
    "partner": None,
    "organisation": None,
    "actor_role": None,
    "actor_commitment": None,
    "person_id": None,
    "category": None,
    "purpose": None,
    "effect": None,
    "basis": None,
    "policy_version": None,
}


def disclosure(**changes: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "index": 7,
        "logged_at": LOGGED_AT,
        "event": "disclosure:permit",
        "request_id": "req-1",
        "partner": "kisalli",
        "organisation": "kisalli",
        "actor_role": "individual_coach",
        "actor_commitment": COMMITMENT,
        "person_id": "p-6f1c",
        "category": "employment_plan",
        "purpose": "service_planning",
        "effect": "permit",
        "basis": {"kind": "consent", "consent_id": "c-42"},
        "policy_version": "2025.1",
        "record_ids": ["r-1", "r-2"],
        "fields": ["goals", "next_meeting_at"],
        "payload_sha256": PAYLOAD,
        "detail": {"records": 2},
    }
    return build_entry(**(arguments | changes))


def test_a_disclosure_entry_has_this_exact_canonical_form() -> None:
    # The format is forever: a change here breaks every verifier of every existing log.
    assert (
        entry_bytes(disclosure())
        == (
            '{"actor_commitment":"' + COMMITMENT + '","actor_role":"individual_coach",'
            '"basis":{"consent_id":"c-42","kind":"consent"},"category":"employment_plan",'
            '"detail":{"records":2},"effect":"permit","event":"disclosure:permit",'
            '"fields":["goals","next_meeting_at"],"index":7,"logged_at":"2025-03-04T05:06:07.000089Z",'
            '"organisation":"kisalli","partner":"kisalli","payload_sha256":"' + PAYLOAD + '",'
            '"person_id":"p-6f1c","policy_version":"2025.1","purpose":"service_planning",'
            '"record_ids":["r-1","r-2"],"request_id":"req-1","v":1}'
        ).encode()
    )


def test_members_that_are_none_are_left_out() -> None:
    entry = build_entry(index=0, logged_at=LOGGED_AT, event="token:issue", **NOTHING)
    assert entry == {
        "v": ENTRY_VERSION,
        "index": 0,
        "logged_at": "2025-03-04T05:06:07.000089Z",
        "event": "token:issue",
        "record_ids": [],
        "fields": [],
    }


def test_the_entry_is_a_json_ready_copy_of_what_its_bytes_say() -> None:
    detail: dict[str, Any] = {"reasons": ("a", "b")}
    entry = disclosure(detail=detail, record_ids=("r-9",))
    detail["reasons"] = "changed later"
    assert entry["detail"] == {"reasons": ["a", "b"]}
    assert entry["record_ids"] == ["r-9"]
    assert json.loads(entry_bytes(entry)) == entry
    assert entry_bytes(entry) == canonical_json(entry)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2025, 3, 30, 3, 30, tzinfo=timezone(timedelta(hours=3))), "2025-03-30T00:30:00.000000Z"),
        (datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "2024-12-31T23:59:59.999999Z"),
        (datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00.000000Z"),
    ],
)
def test_time_is_rfc_3339_utc_with_microseconds(moment: datetime, expected: str) -> None:
    assert disclosure(logged_at=moment)["logged_at"] == expected


@pytest.mark.parametrize("moment", [datetime(2025, 1, 1), "2025-01-01T00:00:00Z", 1735689600])
def test_time_must_be_an_aware_datetime(moment: object) -> None:
    with pytest.raises(AuditError, match="logged_at"):
        disclosure(logged_at=moment)


def test_the_event_types_are_the_agreed_subject_action_pairs() -> None:
    assert {
        "disclosure:permit",
        "disclosure:deny",
        "decision:query",
        "consent:request",
        "consent:grant",
        "consent:withdraw",
        "consent:refuse",
        "consent:request_expire",
        "consent:expire",
        "consent:attest",
        "record:deposit",
        "notice:send",
        "notice:ack",
        "token:issue",
        "token:revoke",
        "relationship:start",
        "relationship:end",
        "person:resolve",
        "representation:register",
        "webhook:register",
        "webhook:disable",
        "record:erase",
        "dpo:review",
        "dpo:open_commitment",
        "dpo:report",
        "audit:query",
    } == EVENT_TYPES
    for event in EVENT_TYPES:
        assert disclosure(event=event)["event"] == event


@pytest.mark.parametrize("event", ["disclosure", "disclosure:allow", "DISCLOSURE:PERMIT", "", None])
def test_unknown_event_types_are_refused(event: object) -> None:
    with pytest.raises(AuditError, match="event type"):
        disclosure(event=event)


@pytest.mark.parametrize(
    "changes",
    [
        {"detail": {"note": "client 131052-308T called"}},
        {"detail": {"hetu": "010101A900X"}},
        {"detail": {"nested": [{"deeper": ["311299Y9010"]}]}},
        {"detail": {"150855+1234": "as a member name"}},
        {"detail": {"note": "hetu:131052-308T"}},
        {"basis": {"kind": "statute", "note": "131052-308T"}},
        {"person_id": "131052-308T"},
        {"request_id": "req 131052-308T"},
        {"record_ids": ["r-1", "131052-308T"]},
    ],
    ids=str,
)
def test_anything_that_looks_like_an_identity_code_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(AuditError, match="looks like a personal identity code") as caught:
        disclosure(**changes)
    assert not any(code in str(caught.value) for code in ("131052", "010101", "311299", "150855"))


def test_identifiers_that_merely_contain_digits_are_not_taken_for_identity_codes() -> None:
    # The bare pattern \d{6}[-+A-FU-Y]\d{3}[0-9A-Y] matches inside this UUID ("345678-1234"); about one random
    # UUID in a hundred looks like that, and refusing it would stop a disclosure for nothing.
    rng = random.Random(8)
    ids = ["c0345678-1234-4abc-8def-0123456789ab"] + [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(2000)]
    ids += [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)]
    entry = disclosure(record_ids=ids, detail={"consent_ids": ids[:50]})
    assert entry["record_ids"] == ids


@pytest.mark.parametrize(
    "changes",
    [
        {"index": -1},
        {"index": True},
        {"index": "7"},
        {"person_id": ""},
        {"person_id": 17},
        {"purpose": b"service_planning"},
        {"record_ids": "r-1"},
        {"record_ids": ["r-1", 2]},
        {"fields": [""]},
        {"payload_sha256": PAYLOAD.upper()},
        {"payload_sha256": PAYLOAD[:-1]},
        {"actor_commitment": "coach-17"},
        {"basis": ["consent"]},
        {"detail": "text"},
    ],
    ids=str,
)
def test_malformed_arguments_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(AuditError):
        disclosure(**changes)


@pytest.mark.parametrize(
    "detail", [{"ratio": 0.5}, {"count": 2**53}, {1: "non-string member name"}, {"text": "\ud800"}], ids=str
)
def test_detail_must_be_canonical_json(detail: dict[Any, Any]) -> None:
    with pytest.raises(CanonicalisationError):
        disclosure(detail=detail)


def test_the_actor_is_in_the_entry_only_as_a_salted_commitment() -> None:
    salt = new_actor_salt()
    data = entry_bytes(disclosure(actor_commitment=commit_actor("coach-17", salt)))
    assert b"coach-17" not in data
    assert commit_actor("coach-17", salt).encode() in data
    assert commit_actor("coach-17", new_actor_salt()) != commit_actor("coach-17", salt)


def test_the_commitment_is_sha256_of_salt_then_id() -> None:
    assert commit_actor("coach-17", SALT) == hashlib.sha256(bytes.fromhex(SALT) + b"coach-17").hexdigest()
    assert (
        commit_actor("työvalmentaja-ä", SALT)
        == hashlib.sha256(bytes.fromhex(SALT) + "työvalmentaja-ä".encode()).hexdigest()
    )


def test_a_new_salt_is_32_random_bytes_in_hex() -> None:
    salts = {new_actor_salt() for _ in range(100)}
    assert len(salts) == 100
    assert all(len(s) == 64 and bytes.fromhex(s).hex() == s for s in salts)


def test_the_dpo_can_open_a_commitment_with_the_salt_and_id() -> None:
    verify_actor_commitment(COMMITMENT, "coach-17", SALT)


@pytest.mark.parametrize(
    ("commitment", "actor_id", "salt"),
    [
        (COMMITMENT, "coach-18", SALT),
        (COMMITMENT, "coach-17", "00" * 32),
        (COMMITMENT.upper(), "coach-17", SALT),
        (COMMITMENT[:-1], "coach-17", SALT),
        ("ä" * 64, "coach-17", SALT),
        (None, "coach-17", SALT),
    ],
)
def test_a_commitment_that_does_not_open_raises(commitment: Any, actor_id: str, salt: str) -> None:
    with pytest.raises(AuditError, match="does not match"):
        verify_actor_commitment(commitment, actor_id, salt)


@pytest.mark.parametrize(("actor_id", "salt"), [("", SALT), ("coach-17", "abc"), ("coach-17", SALT.upper())])
def test_malformed_salts_and_ids_are_refused(actor_id: str, salt: str) -> None:
    with pytest.raises(AuditError):
        commit_actor(actor_id, salt)
    with pytest.raises(AuditError):
        verify_actor_commitment(COMMITMENT, actor_id, salt)
