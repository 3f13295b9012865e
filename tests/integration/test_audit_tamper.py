"""The tamper corpus (issue #5 item 6): every change an attacker with write access to the database — but not the
checkpoint key — can make to the log is caught by `verify_broker_log`, and clean logs are never flagged.

One log is built per module (several sequencer rounds, so there are several signed checkpoints and an exported
one), kept as a pristine SQLite file; every generated attack runs on a fresh copy of it. Attacks: change any
column of any row of the log's tables (a bit flip in bytes, another value otherwise), delete the first, a middle
or the last entry, insert a forged entry, swap two entries, truncate the tail, rewrite an entry and recompute
every hash downstream (leaf, subtree nodes, head — all but the signatures), and restore an older copy of the
database. ATTACKS examples run in CI (≥ 200 required by the issue).
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

from audit import AuditVerificationError, Frontier, leaf_hash
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
    env.broker.db.dispose()
    size = verify_broker_log(env.broker).size
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
    "audit_actors": "entry_id",
    "audit_nodes": "rowid",
    "audit_checkpoints": "id",
    "audit_head": "id",
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
    if table == "audit_entries":
        columns.remove("id")  # the append id orders pending entries only
        columns.remove("split")  # None once sequenced; setting it changes nothing that is verified
    keys = [row[0] for row in db.execute(f"SELECT {key} FROM {table}")]
    target = data.draw(st.sampled_from(keys), label="row")
    column = data.draw(st.sampled_from(columns), label="column")
    (value,) = db.execute(f"SELECT {column} FROM {table} WHERE {key} = ?", (target,)).fetchone()
    new = _other(value, data)
    if column == "logged_at":
        # A time is stored as text; a flipped bit can leave a spelling that reads back as the same instant
        # (a fraction of ".000000" cut off), which changes nothing the broker knows. Move the time instead.
        moved = datetime.fromisoformat(value) + timedelta(microseconds=data.draw(st.integers(1, 10**9), label="us"))
        new = moved.isoformat(sep=" ", timespec="microseconds")
    if table == "audit_entries" and column == "idx" and new is not None:
        new = int(new) if int(new) >= 0 else 10**6
    if new == value:
        new = None if value is not None else "forged"
    if (
        table == "audit_entries"
        and column == "idx"
        and new in {r[0] for r in db.execute("SELECT idx FROM audit_entries")}
    ):
        new = 10**6  # a unique index stops a duplicate outright; move it past the end instead
    try:
        db.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?", (new, target))
    except sqlite3.IntegrityError:  # a key taken by another row: the attacker moves this one out of the way
        db.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?", (10**7, target))


def delete_entry(db: sqlite3.Connection, pristine: Pristine, data: st.DataObject) -> None:
    where = data.draw(st.sampled_from(["first", "middle", "last"]), label="which")
    index = {"first": 0, "middle": pristine.size // 2, "last": pristine.size - 1}[where]
    (entry_id,) = db.execute("SELECT id FROM audit_entries WHERE idx = ?", (index,)).fetchone()
    db.execute("DELETE FROM audit_actors WHERE entry_id = ?", (entry_id,))
    db.execute("DELETE FROM audit_entries WHERE id = ?", (entry_id,))


def insert_forged(db: sqlite3.Connection, pristine: Pristine, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, pristine.size), label="at")
    entry = json.dumps({"event": "disclosure:permit", "index": index, "v": 1}, separators=(",", ":")).encode()
    if index < pristine.size:  # make room, as an attacker inserting in the middle must
        db.execute("UPDATE audit_entries SET idx = idx + 1000000 WHERE idx >= ?", (index,))
        db.execute("UPDATE audit_entries SET idx = idx - 1000000 + 1 WHERE idx >= 1000000")
    db.execute(
        "INSERT INTO audit_entries (idx, entry, leaf_hash, logged_at, event) VALUES (?, ?, ?, ?, ?)",
        (index, entry, leaf_hash(entry), "2026-01-01 00:00:00.000000", "disclosure:permit"),
    )


def swap_entries(db: sqlite3.Connection, pristine: Pristine, data: st.DataObject) -> None:
    a = data.draw(st.integers(0, pristine.size - 2), label="a")
    b = data.draw(st.integers(a + 1, pristine.size - 1), label="b")
    db.execute("UPDATE audit_entries SET idx = -1 WHERE idx = ?", (a,))
    db.execute("UPDATE audit_entries SET idx = ? WHERE idx = ?", (a, b))
    db.execute("UPDATE audit_entries SET idx = ? WHERE idx = -1", (b,))


def truncate_tail(db: sqlite3.Connection, pristine: Pristine, data: st.DataObject) -> None:
    keep = data.draw(st.integers(0, pristine.size - 1), label="keep")
    db.execute("DELETE FROM audit_actors WHERE entry_id IN (SELECT id FROM audit_entries WHERE idx >= ?)", (keep,))
    db.execute("DELETE FROM audit_entries WHERE idx >= ?", (keep,))
    if data.draw(st.booleans(), label="fix the head too"):
        _recompute(db)


def rewrite_and_rehash(db: sqlite3.Connection, pristine: Pristine, data: st.DataObject) -> None:
    """The strongest attacker without the key: edit an entry, then make every hash and column consistent."""
    index = data.draw(st.integers(0, pristine.size - 1), label="index")
    (entry,) = db.execute("SELECT entry FROM audit_entries WHERE idx = ?", (index,)).fetchone()
    body = json.loads(entry)
    body["purpose"] = "forged_purpose"
    new = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    db.execute(
        "UPDATE audit_entries SET entry = ?, leaf_hash = ?, purpose = ? WHERE idx = ?",
        (new, leaf_hash(new), "forged_purpose", index),
    )
    _recompute(db)


def _recompute(db: sqlite3.Connection) -> None:
    """Recompute subtree nodes and the head from the (edited) entries, as an attacker can."""
    frontier = Frontier.empty()
    nodes = []
    for (leaf,) in db.execute("SELECT leaf_hash FROM audit_entries WHERE idx IS NOT NULL ORDER BY idx"):
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
