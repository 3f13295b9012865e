"""The sequencer (issue #5 items 1–2): entries appended inside their transactions get gap-free tree positions,
stored subtree hashes, signed checkpoints exported outside the database; disclosures stop (503) when no
checkpoint has reached the sink within the anchoring window, while withdrawal keeps working; a database that no
longer extends the exported checkpoint stops the sequencer."""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, update
from werkzeug.test import TestResponse

from audit import encode_entry, leaf_hash, place_index
from audit.note import open_note, parse_checkpoint, parse_verifier_key
from broker.adapters.orm import (
    AuditActorRow,
    AuditCheckpointRow,
    AuditEntryRow,
    AuditHeadRow,
    AuditLeafRow,
    AuditNodeRow,
    AuditPendingRow,
)
from broker.services.audit_check import verify_broker_log
from broker.services.audit_read import final_bytes, positioned
from broker.services.sequencer import Sequencer, SequencerHalted, verifiers
from tests.oracle.rfc9162 import mth, root_from_path, roots_from_proof
from tests.oracle.rfc9162 import path as rfc_path
from tests.oracle.rfc9162 import proof as rfc_proof
from tests.support import Env


@dataclass(frozen=True)
class Stored:
    """An entry as stored: its row's bytes and offset, and its position and leaf hash once sequenced."""

    id: int
    event: str
    stored: bytes  # the pending bytes, without "index", written once at the append
    split: int
    idx: int | None
    leaf_hash: bytes | None

    @property
    def entry(self) -> bytes:
        """The entry's final canonical bytes once sequenced (what its leaf hashes), the pending bytes before."""
        return final_bytes(self.stored, self.split, self.idx)


def _entries(env: Env) -> list[Stored]:
    with env.broker.uow(write=False) as uow:
        rows = uow.session.execute(positioned().order_by(AuditEntryRow.id))
        found = [(r.AuditEntryRow, r.idx, r.leaf_hash) for r in rows]
        return [
            Stored(row.id, row.event, bytes(row.entry), row.split, idx, bytes(leaf) if leaf is not None else None)
            for row, idx, leaf in found
        ]


def _activity(env: Env, people: int = 3) -> None:
    for _ in range(people):
        person = env.person()
        env.serve(person, "kisalli")


def test_appended_entries_wait_without_a_position_until_sequenced(env: Env) -> None:
    _activity(env)
    pending = _entries(env)
    assert pending and all(row.idx is None and row.leaf_hash is None for row in pending)
    assert all("index" not in json.loads(row.entry) for row in pending)

    with env.broker.uow(write=False) as uow:
        queued = list(uow.session.scalars(select(AuditPendingRow.entry_id).order_by(AuditPendingRow.entry_id)))
    assert queued == [row.id for row in pending]  # every append is queued for the sequencer

    result = Sequencer(env.broker).run_once()

    assert result.integrated == len(pending) and result.size == len(pending) and result.exported
    rows = _entries(env)
    assert [row.idx for row in rows] == list(range(len(rows)))  # gap-free, in append order
    # The entries' rows are not written again: the position and leaf hash are stored beside them.
    assert [(row.stored, row.split) for row in rows] == [(row.stored, row.split) for row in pending]
    for row in rows:
        entry = json.loads(row.entry)
        assert entry["index"] == row.idx
        assert encode_entry(**_arguments(entry)) == row.entry  # exactly the canonical entry bytes
        assert row.leaf_hash == leaf_hash(row.entry)
    with env.broker.uow(write=False) as uow:
        assert uow.session.scalar(select(func.count()).select_from(AuditPendingRow)) == 0


def _arguments(entry: dict) -> dict:
    names = [
        "request_id",
        "partner",
        "organisation",
        "actor_role",
        "actor_commitment",
        "person_id",
        "category",
        "purpose",
        "effect",
        "basis",
        "policy_version",
        "payload_sha256",
        "detail",
    ]
    from datetime import datetime

    return {
        "index": entry["index"],
        "logged_at": datetime.fromisoformat(entry["logged_at"].replace("Z", "+00:00")),
        "event": entry["event"],
        **{name: entry.get(name) for name in names},
        "record_ids": entry.get("record_ids", []),
        "fields": entry.get("fields", []),
    }


def test_each_batch_signs_a_checkpoint_of_its_tree(env: Env) -> None:
    _activity(env, people=4)
    broker = dataclasses.replace(env.broker, settings=dataclasses.replace(env.broker.settings, audit_batch_size=3))
    sequencer = Sequencer(broker)
    result = sequencer.run_once()
    rows = _entries(env)
    with env.broker.uow(write=False) as uow:
        checkpoints = list(uow.session.scalars(select(AuditCheckpointRow).order_by(AuditCheckpointRow.id)))
        stored_nodes = uow.session.scalar(select(func.count()).select_from(AuditNodeRow))
    sizes = [c.size for c in checkpoints]
    assert sizes == [*range(3, len(rows), 3), len(rows)] if len(rows) % 3 else list(range(3, len(rows) + 1, 3))
    assert result.size == len(rows)
    entries = [row.entry for row in rows]
    for checkpoint in checkpoints:
        text, names = open_note(checkpoint.note, verifiers(env.broker))
        parsed = parse_checkpoint(text)
        assert parsed.size == checkpoint.size and names
        assert parsed.root == mth(entries[: checkpoint.size]) == checkpoint.root
    # One stored node per perfect subtree above the leaves: n minus the number of perfect subtrees in n.
    assert stored_nodes == len(rows) - len(rows).bit_count()


def test_the_newest_checkpoint_reaches_the_sink(env: Env) -> None:
    _activity(env)
    Sequencer(env.broker).run_once()
    sink = env.broker.settings.instance_path / "checkpoints"
    latest = (sink / "latest.note").read_text()
    size = parse_checkpoint(open_note(latest, verifiers(env.broker))[0]).size
    assert (sink / f"{size:020d}.note").read_text() == latest
    with env.broker.uow(write=False) as uow:
        head = uow.session.get(AuditHeadRow, 1)
    assert head is not None and head.exported_size == size == head.size


def _with_gate(env: Env, window: int = 300) -> None:
    env.broker.settings = dataclasses.replace(env.broker.settings, audit_anchor_window=window)


def _disclose(env: Env, person: str):  # type: ignore[no-untyped-def]
    return env.post(
        "varha-health",
        "/disclosures",
        {"person_id": person, "category": "work_assessment", "purpose": "work_capacity_assessment"},
    )


def test_disclosures_stop_when_no_checkpoint_was_exported_within_the_window(env: Env) -> None:
    person = env.person()
    env.serve(person, "kisalli", "varha-health")
    _with_gate(env)
    refused = _disclose(env, person)
    assert refused.status_code == 503, refused.get_data(as_text=True)
    assert refused.get_json()["code"] == "audit_unavailable"

    Sequencer(env.broker).run_once()
    env.clock.advance(seconds=2)
    assert _disclose(env, person).status_code in (200, 403)  # decided again: permit or no_legal_basis

    env.clock.advance(seconds=301)
    env._tokens.clear()  # the access token has expired meanwhile
    assert _disclose(env, person).status_code == 503


def test_withdrawal_keeps_working_while_disclosures_are_refused(env: Env) -> None:
    person = env.person()
    env.serve(person, "kisalli")
    consent = env.post(
        "kisalli",
        "/consents",
        {
            "person_id": person,
            "recipients": ["varha-health"],
            "categories": ["work_assessment"],
            "purposes": ["work_capacity_assessment"],
            "method": "in_person",
            "witness": "witness",
        },
    )
    assert consent.status_code in (200, 201), consent.get_data(as_text=True)
    _with_gate(env)
    withdrawn = env.post("kisalli", f"/consents/{consent.get_json()['consent_id']}/withdraw", {})
    assert withdrawn.status_code == 200, withdrawn.get_data(as_text=True)


def test_a_quiet_log_is_re_exported_every_half_window(env: Env) -> None:
    _activity(env, people=1)
    sequencer = Sequencer(env.broker)
    assert sequencer.run_once().exported
    env.clock.advance(seconds=60)
    assert not sequencer.run_once().exported
    env.clock.advance(seconds=100)
    assert sequencer.run_once().exported  # 160 s > 150 s: a heartbeat, same checkpoint


def test_a_truncated_database_stops_the_sequencer(env: Env) -> None:
    _activity(env)
    Sequencer(env.broker).run_once()
    with env.broker.uow() as uow:
        size = uow.session.get(AuditHeadRow, 1).size
        uow.session.execute(delete(AuditNodeRow))
        uow.session.execute(update(AuditHeadRow).values(size=0, frontier=b"", root=b"\0" * 32))
        uow.session.execute(delete(AuditActorRow))
        uow.session.execute(delete(AuditLeafRow))
        uow.session.execute(delete(AuditEntryRow))
        uow.commit()
    with pytest.raises(SequencerHalted, match=f"checkpoint of {size} was exported"):
        Sequencer(env.broker).check_against_sink()


def test_a_rewritten_history_stops_the_sequencer(env: Env) -> None:
    _activity(env)
    Sequencer(env.broker).run_once()
    with env.broker.uow() as uow:
        head = uow.session.get(AuditHeadRow, 1)
        head.root = b"\1" * 32
        uow.commit()
    with pytest.raises(SequencerHalted, match=r"does not extend|changed"):
        Sequencer(env.broker).check_against_sink()


def test_the_sequenced_log_verifies_and_a_forged_entry_is_named(env: Env) -> None:
    _activity(env)
    Sequencer(env.broker).run_once()
    check = verify_broker_log(env.broker)
    assert check.size == len(_entries(env)) and check.pending == 0 and check.exported_size == check.size
    with env.broker.uow() as uow:
        leaf = uow.session.scalars(select(AuditLeafRow).where(AuditLeafRow.idx == 1)).one()
        row = uow.session.get(AuditEntryRow, leaf.entry_id)
        forged = row.entry.replace(b'"event":"', b'"event":"x', 1)  # before the index member: its offset moves
        row.entry, row.split = forged, row.split + 1
        leaf.leaf_hash = leaf_hash(place_index(forged, row.split, 1))
        uow.commit()
    from audit import AuditVerificationError

    with pytest.raises(AuditVerificationError) as failure:
        verify_broker_log(env.broker)
    assert failure.value.index == 1


def test_proofs_from_the_api_verify_against_the_signed_checkpoint(env: Env) -> None:
    from audit.proofs import verify_consistency, verify_inclusion

    _activity(env, people=6)
    Sequencer(env.broker).run_once()
    first_size = len(_entries(env))
    _activity(env, people=5)
    Sequencer(env.broker).run_once()
    checkpoint = _dpo_get(env, "/api/v1/audit/checkpoint")
    assert checkpoint.status_code == 200, checkpoint.get_data(as_text=True)
    body = checkpoint.get_json()
    text, _ = open_note(body["note"], [parse_verifier_key(k) for k in body["verifier_keys"]])
    signed = parse_checkpoint(text)
    rows = [row for row in _entries(env) if row.idx is not None]  # the token's own entry is not sequenced yet
    assert signed.size == len(rows)
    for index in (0, 1, len(rows) // 2, len(rows) - 1):
        proof = _dpo_get(env, f"/api/v1/audit/proofs/inclusion?index={index}&tree_size={signed.size}").get_json()
        path = [base64.b64decode(h) for h in proof["inclusion_path"]]
        verify_inclusion(leaf_hash(rows[index].entry), index, signed.size, path, signed.root)
        # ... and by the independent, recursive RFC 9162 implementation of the test suite.
        assert root_from_path(leaf_hash(rows[index].entry), index, signed.size, path) == signed.root
        assert path == rfc_path(index, [row.entry for row in rows[: signed.size]])
    consistency = _dpo_get(env, f"/api/v1/audit/proofs/consistency?first={first_size}&second={signed.size}").get_json()
    path = [base64.b64decode(h) for h in consistency["consistency_path"]]
    old_root = mth([row.entry for row in rows[:first_size]])
    verify_consistency(first_size, signed.size, old_root, signed.root, path)
    assert roots_from_proof(first_size, signed.size, old_root, path) == (old_root, signed.root)
    assert path == rfc_proof(first_size, [row.entry for row in rows[: signed.size]])


def test_the_audit_api_is_for_dpo_systems_only(env: Env) -> None:
    denied = env.get("kisalli", "/audit/checkpoint")
    assert denied.status_code == 403
    bad = _dpo_get(env, "/api/v1/audit/proofs/inclusion?index=5&tree_size=2")
    assert bad.status_code == 400


def test_entry_search_pages_with_a_cursor_and_is_itself_logged(env: Env) -> None:
    _activity(env, people=4)
    seen: list[int] = []
    cursor = None
    while True:
        query = "/api/v1/audit/entries?limit=3&event=relationship:start" + (f"&cursor={cursor}" if cursor else "")
        page = _dpo_get(env, query).get_json()
        seen += [e["entry_id"] for e in page["entries"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 4 and seen == sorted(seen)
    events = [row.event for row in _entries(env)]
    assert events.count("audit:query") == 2


def _dpo_get(env: Env, path: str) -> TestResponse:
    """A GET by the DPO's system, with its DPoP-bound token and a fresh proof."""
    from broker.demo import DPO_PARTNER

    return env.call(DPO_PARTNER, "GET", path)


def test_a_database_restored_from_an_older_copy_is_caught(env: Env, tmp_path: Path) -> None:
    if not env.broker.settings.database_url.startswith("sqlite"):
        pytest.skip("copies the SQLite file")
    _activity(env)
    Sequencer(env.broker).run_once()
    database = Path(env.broker.settings.database_url.removeprefix("sqlite:///"))
    env.broker.db.dispose()
    shutil.copy(database, tmp_path / "old.db")
    _activity(env)
    Sequencer(env.broker).run_once()
    env.broker.db.dispose()
    shutil.copy(tmp_path / "old.db", database)
    for suffix in ("-wal", "-shm"):
        Path(str(database) + suffix).unlink(missing_ok=True)
    with pytest.raises(SequencerHalted, match="rolled back"):
        Sequencer(env.broker).check_against_sink()
    from audit import AuditVerificationError

    with pytest.raises(AuditVerificationError, match="rolled back"):
        verify_broker_log(env.broker)


def test_after_a_key_rotation_old_and_new_checkpoints_verify_against_the_key_set(env: Env) -> None:
    _activity(env)
    Sequencer(env.broker).run_once()
    old_keys = verifiers(env.broker)
    env.broker.keys.add_log_key()  # what `broker keys rotate --checkpoint-key` does
    _activity(env)
    Sequencer(env.broker).run_once()
    keys = verifiers(env.broker)
    assert len(keys) == len(old_keys) + 1
    with env.broker.uow(write=False) as uow:
        notes = list(uow.session.scalars(select(AuditCheckpointRow.note).order_by(AuditCheckpointRow.id)))
    signers = {next(key.key_hash for key in keys if _signed_by(note, key)) for note in notes}
    assert signers == {old_keys[-1].key_hash, keys[-1].key_hash}  # the new key signs from the rotation on
    check = verify_broker_log(env.broker)
    assert check.checkpoints == len(notes)


def _signed_by(note: str, key) -> bool:  # type: ignore[no-untyped-def]
    from audit.errors import AuditError

    try:
        open_note(note, [key])
    except AuditError:
        return False
    return True


def test_a_log_whose_sink_holds_only_the_empty_checkpoint_goes_on(env: Env) -> None:
    Sequencer(env.broker).run_once()  # a new log: the checkpoint of the empty tree is exported
    _activity(env)
    sequencer = Sequencer(env.broker)  # as after a restart: checks the database against the sink first
    sequencer.integrate_batch(env.clock.now())
    sequencer.check_against_sink()
    assert sequencer.run_once().exported


@pytest.mark.parametrize(
    "query",
    [
        "/proofs/inclusion?index=0&tree_size=99999999999999999999999",
        "/proofs/inclusion?index=99999999999999999999999&tree_size=1",
        "/proofs/consistency?first=1&second=99999999999999999999999",
        "/entries?entry_id=99999999999999999999999",
        # Beyond I-JSON's integers (RFC 7493 §2.2): the search's own log entry could not hold it (was a 500).
        "/entries?entry_id=9007199254740992",
        "/entries?cursor=abc",
        "/entries?cursor=9999999999999999999",
        "/entries?limit=100000",
        "/entries?unknown=1",
    ],
)
def test_the_audit_api_answers_malformed_and_oversized_queries_with_400(env: Env, query: str) -> None:
    response = _dpo_get(env, f"/api/v1/audit{query}")
    assert response.status_code == 400, response.get_data(as_text=True)


def test_an_index_beyond_the_column_is_not_found(env: Env) -> None:
    response = _dpo_get(env, "/api/v1/audit/entries/99999999999999999999999")
    assert response.status_code == 404


def test_every_row_a_bulk_insert_appends_is_queued_for_the_sequencer(env: Env) -> None:
    # A load that inserts many entries in one statement (`broker bench seed`; COPY on PostgreSQL fires the same
    # statement trigger) leaves none of them outside the queue.
    from broker.services.audit_log import pending_entry

    rows = [
        pending_entry(event="consent:grant", now=env.clock.now(), salt=None, person_id=f"per_bulk{i}")[0]
        for i in range(3)
    ]
    with env.broker.uow() as uow:
        uow.session.execute(AuditEntryRow.__table__.insert(), rows)
        uow.commit()
    with env.broker.uow(write=False) as uow:
        queued = uow.session.scalars(
            select(AuditPendingRow.entry_id)
            .join(AuditEntryRow, AuditEntryRow.id == AuditPendingRow.entry_id)
            .where(AuditEntryRow.person_id.like("per_bulk%"))
        ).all()
    assert len(queued) == 3
    assert Sequencer(env.broker).run_once().integrated == 3
    assert verify_broker_log(env.broker).pending == 0


def test_a_batch_whose_entry_left_the_queue_meanwhile_writes_nothing(env: Env) -> None:
    from audit import Frontier
    from broker.services.sequencer import place_entries, read_pending, write_placed

    _activity(env, people=1)
    Sequencer(env.broker).run_once()
    _activity(env, people=1)
    with env.broker.uow(write=False) as uow:
        head = uow.session.get(AuditHeadRow, 1)
        pending = read_pending(uow, 100)
    frontier = Frontier.from_bytes(head.size, bytes(head.frontier))
    placed = place_entries(frontier, pending)
    assert len(placed.leaves) == len(pending) > 1
    with env.broker.uow() as uow:  # as if another sequencer had placed the last one
        uow.session.execute(delete(AuditPendingRow).where(AuditPendingRow.entry_id == pending[-1][0]))
        uow.commit()
    with pytest.raises(RuntimeError, match="left the queue"), env.broker.uow() as uow:
        write_placed(uow, placed)
        uow.commit()
    with env.broker.uow(write=False) as uow:
        assert uow.session.scalar(select(func.count()).select_from(AuditLeafRow)) == head.size
        assert uow.session.scalar(select(func.count()).select_from(AuditPendingRow)) == len(pending) - 1
