"""The tamper corpus (issue #5 item 6): every change an attacker with write access to the database — but not the
checkpoint key — can make to the log is caught by `verify_broker_log`, and clean logs are never flagged.

One log is built per module (several sequencer rounds, so there are several signed checkpoints and an exported
one, and a few entries appended after the last round, still queued), kept as a pristine SQLite file; every
generated attack runs on a fresh copy of it. Attacks: change any column of any row of the log's tables that the
tree covers (a bit flip in bytes, another value otherwise) — an entry's stored bytes and the offset of its index
member among them, its leaf row (index, entry id, leaf hash), actor openings, subtree hashes, checkpoints, the
head — delete the first, a middle or the last entry, insert a forged entry, swap two entries, truncate the tail,
rewrite an entry and recompute every hash downstream (leaf, subtree nodes, head — all but the signatures), take
a queued entry off the sequencer's queue, and restore an older copy of the database. ATTACKS examples run in CI
(≥ 200 required by the issue).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from hashlib import sha256
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit import AuditVerificationError, Frontier, leaf_hash, place_index
from broker.app import build_broker
from broker.config import Settings
from broker.domain.clock import FixedClock
from broker.services.audit_check import verify_broker_log
from broker.services.sequencer import Sequencer
from tests.support import make_env

ATTACKS = 240


@dataclass(frozen=True)
class Pristine:
    settings: Settings
    database: Path  # the log after every round
    older: Path  # the same database after the first rounds only
    size: int


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pristine]:
    from broker.adapters.database import Database
    from broker.adapters.orm import Base

    folder = tmp_path_factory.mktemp("tamper")
    url = f"sqlite:///{folder / 'broker.db'}"
    db = Database(url)
    Base.metadata.create_all(db.engine)
    db.dispose()
    settings = Settings(
        instance_path=folder / "instance",
        database_url=url,
        issuer="http://broker.test",
        mode="test",
        audit_anchor_window=None,
        audit_batch_size=5,
    )
    env = make_env(settings, FixedClock())
    for round_ in range(3):
        for _ in range(4):
            person = env.person()
            env.serve(person, "kisalli", "varha-social-work")
        env.clock.advance(seconds=60)
        Sequencer(env.broker).run_once()
        if round_ == 1:
            env.broker.db.dispose()
            shutil.copy(folder / "broker.db", folder / "older.db")
    env.serve(env.person(), "kisalli")  # appended after the last round: queued, not yet in the tree
    env.broker.db.dispose()
    check = verify_broker_log(env.broker)
    assert check.pending > 0
    size = check.size
    env.broker.db.dispose()
    yield Pristine(settings, folder / "broker.db", folder / "older.db", size)


Attack = Callable[[sqlite3.Connection, Pristine, st.DataObject], None]


def _flip(value: bytes | str, data: st.DataObject) -> bytes | str:
    raw = value.encode() if isinstance(value, str) else bytes(value)
    if not raw:
        return b"x" if isinstance(value, bytes) else "x"
    at = data.draw(st.integers(0, len(raw) - 1), label="byte")
    bit = data.draw(st.integers(0, 7), label="bit")
    changed = raw[:at] + bytes([raw[at] ^ (1 << bit)]) + raw[at + 1 :]
    if isinstance(value, str):
        return changed.decode("utf-8", errors="replace") if changed.decode("utf-8", "replace") != value else value + "x"
    return changed


def _other(value: object, data: st.DataObject) -> object:
    if isinstance(value, bytes | str):
        return _flip(value, data)
    if isinstance(value, int):
        return value + data.draw(st.sampled_from([-1, 1, 7]), label="delta")
    if value is None:
        return "forged"
    return None


TABLE_KEYS = {
    "audit_entries": "id",
    "audit_leaves": "idx",
    "audit_actors": "entry_id",
    "audit_nodes": "rowid",
    "audit_checkpoints": "id",
    "audit_head": "id",
}
# Rows of entries still queued are not yet covered by any signed root: nothing can show that they were changed
# (docs/audit.md). The attacks on their queue itself are `dequeue`'s.
SEQUENCED = "SELECT entry_id FROM audit_leaves"
ROWS = {
    "audit_entries": f"SELECT id FROM audit_entries WHERE id IN ({SEQUENCED})",
    "audit_actors": f"SELECT entry_id FROM audit_actors WHERE entry_id IN ({SEQUENCED})",
}


def change_any_field(db: sqlite3.Connection, _: Pristine, data: st.DataObject) -> None:
    table = data.draw(st.sampled_from(sorted(TABLE_KEYS)), label="table")
    key = TABLE_KEYS[table]
    columns = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
    if table == "audit_checkpoints":
        columns.remove("signed_at")  # when it was signed is not part of what it signs
        columns.remove("exported_at")
        columns.remove("id")
    if table == "audit_head":
        columns = ["size", "frontier", "root"]  # exported_* are the sequencer's bookkeeping
    keys = [row[0] for row in db.execute(ROWS.get(table, f"SELECT {key} FROM {table}"))]
    target = data.draw(st.sampled_from(keys), label="row")
    column = data.draw(st.sampled_from(columns), label="column")
    (value,) = db.execute(f"SELECT {column} FROM {table} WHERE {key} = ?", (target,)).fetchone()
    new = _other(value, data)
    if column == "logged_at":
        # A time is stored as text; a flipped bit can leave a spelling that reads back as the same instant
        # (a fraction of ".000000" cut off), which changes nothing the broker knows. Move the time instead.
        moved = datetime.fromisoformat(value) + timedelta(microseconds=data.draw(st.integers(1, 10**9), label="us"))
        new = moved.isoformat(sep=" ", timespec="microseconds")
    if table == "audit_leaves" and column == "idx" and new is not None:
        new = int(new) if int(new) >= 0 else 10**6
    if new == value:
        new = None if value is not None else "forged"
    if (
        table == "audit_leaves"
        and column == "idx"
        and new in {r[0] for r in db.execute("SELECT idx FROM audit_leaves")}
    ):
        new = 10**6  # the primary key stops a duplicate outright; move it past the end instead
    try:
        db.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?", (new, target))
    except sqlite3.IntegrityError:  # a key taken by another row: the attacker moves this one out of the way
        db.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?", (10**7, target))


def _entry_at(db: sqlite3.Connection, index: int) -> int:
    (entry_id,) = db.execute("SELECT entry_id FROM audit_leaves WHERE idx = ?", (index,)).fetchone()
    return int(entry_id)


def delete_entry(db: sqlite3.Connection, pristine: Pristine, data: st.DataObject) -> None:
    where = data.draw(st.sampled_from(["first", "middle", "last"]), label="which")
    index = {"first": 0, "middle": pristine.size // 2, "last": pristine.size - 1}[where]
    entry_id = _entry_at(db, index)
    db.execute("DELETE FROM audit_actors WHERE entry_id = ?", (entry_id,))
    db.execute("DELETE FROM audit_entries WHERE id = ?", (entry_id,))
    if data.draw(st.booleans(), label="its leaf too"):
        db.execute("DELETE FROM audit_leaves WHERE idx = ?", (index,))


def _pending_form(body: dict[str, object]) -> tuple[bytes, int]:
    """The stored form of an entry without "index" (audit.encode_pending), as an attacker can write it."""
    before = json.dumps({k: v for k, v in body.items() if k < "index"}, sort_keys=True, separators=(",", ":"))
    after = json.dumps({k: v for k, v in body.items() if k > "index"}, sort_keys=True, separators=(",", ":"))
    return (before[:-1] + "," + after[1:]).encode(), len(before)


def insert_forged(db: sqlite3.Connection, pristine: Pristine, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, pristine.size), label="at")
    entry, split = _pending_form({"event": "disclosure:permit", "v": 1})
    if index < pristine.size:  # make room, as an attacker inserting in the middle must
        db.execute("UPDATE audit_leaves SET idx = idx + 1000000 WHERE idx >= ?", (index,))
        db.execute("UPDATE audit_leaves SET idx = idx - 1000000 + 1 WHERE idx >= 1000000")
    entry_id = db.execute(
        "INSERT INTO audit_entries (entry, split, logged_at, event) VALUES (?, ?, ?, ?)",
        (entry, split, "2026-01-01 00:00:00.000000", "disclosure:permit"),
    ).lastrowid
    db.execute("DELETE FROM audit_pending WHERE entry_id = ?", (entry_id,))  # the trigger queued it
    db.execute(
        "INSERT INTO audit_leaves (idx, entry_id, leaf_hash) VALUES (?, ?, ?)",
        (index, entry_id, leaf_hash(place_index(entry, split, index))),
    )


def swap_entries(db: sqlite3.Connection, pristine: Pristine, data: st.DataObject) -> None:
    a = data.draw(st.integers(0, pristine.size - 2), label="a")
    b = data.draw(st.integers(a + 1, pristine.size - 1), label="b")
    if data.draw(st.booleans(), label="swap their leaf rows"):
        db.execute("UPDATE audit_leaves SET idx = -1 WHERE idx = ?", (a,))
        db.execute("UPDATE audit_leaves SET idx = ? WHERE idx = ?", (a, b))
        db.execute("UPDATE audit_leaves SET idx = ? WHERE idx = -1", (b,))
    else:  # swap the entries the leaves point to, leaving the leaf hashes where they are
        first, second = _entry_at(db, a), _entry_at(db, b)
        db.execute("UPDATE audit_leaves SET entry_id = -1 WHERE idx = ?", (a,))
        db.execute("UPDATE audit_leaves SET entry_id = ? WHERE idx = ?", (first, b))
        db.execute("UPDATE audit_leaves SET entry_id = ? WHERE idx = ?", (second, a))


def truncate_tail(db: sqlite3.Connection, pristine: Pristine, data: st.DataObject) -> None:
    keep = data.draw(st.integers(0, pristine.size - 1), label="keep")
    gone = "SELECT entry_id FROM audit_leaves WHERE idx >= ?"
    db.execute(f"DELETE FROM audit_actors WHERE entry_id IN ({gone})", (keep,))
    db.execute(f"DELETE FROM audit_entries WHERE id IN ({gone})", (keep,))
    db.execute("DELETE FROM audit_leaves WHERE idx >= ?", (keep,))
    if data.draw(st.booleans(), label="fix the head too"):
        _recompute(db)


def rewrite_and_rehash(db: sqlite3.Connection, pristine: Pristine, data: st.DataObject) -> None:
    """The strongest attacker without the key: edit an entry, then make every hash and column consistent."""
    index = data.draw(st.integers(0, pristine.size - 1), label="index")
    entry_id = _entry_at(db, index)
    (entry,) = db.execute("SELECT entry FROM audit_entries WHERE id = ?", (entry_id,)).fetchone()
    body = json.loads(entry)
    body[data.draw(st.sampled_from(["purpose", "effect"]), label="member")] = "forged"  # after "index" …
    if data.draw(st.booleans(), label="and one before it"):
        body["category"] = "forged_category"  # … and before it: the offset moves too
    new, split = _pending_form(body)
    db.execute(
        "UPDATE audit_entries SET entry = ?, split = ?, category = ?, purpose = ?, effect = ? WHERE id = ?",
        (new, split, body.get("category"), body.get("purpose"), body.get("effect"), entry_id),
    )
    db.execute(
        "UPDATE audit_leaves SET leaf_hash = ? WHERE idx = ?", (leaf_hash(place_index(new, split, index)), index)
    )
    _recompute(db)


def dequeue(db: sqlite3.Connection, pristine: Pristine, data: st.DataObject) -> None:
    """Take an entry that awaits the sequencer off its queue, so that it would never be placed in the tree."""
    queued = [row[0] for row in db.execute("SELECT entry_id FROM audit_pending")]
    entry_id = data.draw(st.sampled_from(queued), label="entry")
    how = data.draw(st.sampled_from(["delete", "point elsewhere", "point at a placed entry"]), label="how")
    if how == "delete":
        db.execute("DELETE FROM audit_pending WHERE entry_id = ?", (entry_id,))
    elif how == "point elsewhere":
        db.execute("UPDATE audit_pending SET entry_id = 10000000 WHERE entry_id = ?", (entry_id,))
    else:
        db.execute("UPDATE audit_pending SET entry_id = ? WHERE entry_id = ?", (_entry_at(db, 0), entry_id))


def _recompute(db: sqlite3.Connection) -> None:
    """Recompute subtree nodes and the head from the (edited) leaves, as an attacker can."""
    frontier = Frontier.empty()
    nodes = []
    for (leaf,) in db.execute("SELECT leaf_hash FROM audit_leaves ORDER BY idx"):
        nodes.extend(frontier.append_collect(bytes(leaf)))
    db.execute("DELETE FROM audit_nodes")
    db.executemany("INSERT INTO audit_nodes (level, idx, hash) VALUES (?, ?, ?)", nodes)
    db.execute(
        "UPDATE audit_head SET size = ?, frontier = ?, root = ?", (frontier.size, frontier.to_bytes(), frontier.root())
    )


def restore_older(db: sqlite3.Connection, pristine: Pristine, data: st.DataObject) -> None:
    older = sqlite3.connect(pristine.older)
    try:
        older.backup(db)
    finally:
        older.close()


ALL_ATTACKS: list[Attack] = [
    change_any_field,
    delete_entry,
    insert_forged,
    swap_entries,
    truncate_tail,
    rewrite_and_rehash,
    dequeue,
    restore_older,
]


@settings(max_examples=ATTACKS, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_attack_is_detected(pristine: Pristine, tmp_path_factory: pytest.TempPathFactory, data) -> None:  # type: ignore[no-untyped-def]
    attack = data.draw(st.sampled_from(ALL_ATTACKS), label="attack")
    folder = tmp_path_factory.mktemp("attack")
    copy = folder / "broker.db"
    shutil.copy(pristine.database, copy)
    db = sqlite3.connect(copy)
    try:
        attack(db, pristine, data)
        db.commit()
    finally:
        db.close()
    broker = build_broker(dataclasses.replace(pristine.settings, database_url=f"sqlite:///{copy}"))
    try:
        with pytest.raises(AuditVerificationError):
            verify_broker_log(broker)
    finally:
        broker.db.dispose()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rounds=st.lists(st.integers(0, 6), min_size=1, max_size=5), batch=st.integers(1, 9))
def test_clean_logs_are_never_flagged(tmp_path_factory: pytest.TempPathFactory, rounds: list[int], batch: int) -> None:
    from broker.adapters.database import Database
    from broker.adapters.orm import Base

    folder = tmp_path_factory.mktemp("clean")
    url = f"sqlite:///{folder / 'broker.db'}"
    db = Database(url)
    Base.metadata.create_all(db.engine)
    db.dispose()
    settings_ = Settings(
        instance_path=folder / "instance",
        database_url=url,
        issuer="http://broker.test",
        mode="test",
        audit_anchor_window=None,
        audit_batch_size=batch,
    )
    env = make_env(settings_, FixedClock())
    try:
        for people in rounds:
            for _ in range(people):
                env.serve(env.person(), "kisalli")
            Sequencer(env.broker).run_once()
            check = verify_broker_log(env.broker)
            assert check.pending == 0
    finally:
        env.broker.db.dispose()


def test_the_corpus_hashes_like_rfc_9162() -> None:
    # A guard on the attacker's own rehashing above: it must build the tree the verifier builds, or the
    # "recompute every hash" attack would be weaker than it claims.
    entries = [sha256(bytes([i])).digest() for i in range(11)]
    frontier = Frontier.empty()
    for entry in entries:
        frontier.append_collect(leaf_hash(entry))
    from tests.oracle.rfc9162 import mth

    assert frontier.root() == mth(entries)
