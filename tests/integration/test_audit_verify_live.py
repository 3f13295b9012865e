"""`broker audit verify` on a live log (issue #6; found by tests/e2e/test_crash.py, which verifies while partners
keep disclosing): the served sequencer may sign and export a checkpoint while a verification is reading. That is
the log growing, and must never be reported as a rolled-back or tampered database."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import event

from broker.services.audit_check import verify_broker_log
from broker.services.sequencer import Sequencer
from tests.support import Env


def _activity(env: Env, people: int = 3) -> None:
    for _ in range(people):
        env.serve(env.person(), "kisalli")


def test_a_checkpoint_signed_and_exported_while_the_log_is_verified_is_not_taken_for_a_rollback(env: Env) -> None:
    _activity(env)
    Sequencer(env.broker).run_once()
    _activity(env)  # waiting for the next round
    verifying = threading.current_thread()
    rounds: list[Any] = []

    def another_process_sequences(*_: Any) -> None:
        """Once the verification has read its first rows, the sequencer (here on a thread of its own, with its own
        connection) integrates the waiting entries, signs a checkpoint, commits it and exports it to the sink."""
        if threading.current_thread() is not verifying or rounds:
            return
        rounds.append(None)
        sequencer = threading.Thread(target=lambda: rounds.append(Sequencer(env.broker).run_once()))
        sequencer.start()
        sequencer.join()

    engine = env.broker.db.engine
    event.listen(engine, "after_cursor_execute", another_process_sequences)
    try:
        check = verify_broker_log(env.broker)
    finally:
        event.remove(engine, "after_cursor_execute", another_process_sequences)

    [_, during] = rounds
    assert during.integrated > 0 and during.exported  # the log did grow and reach the sink meanwhile
    # The verification saw one consistent state: the tree before that round, which the sink's newest checkpoint
    # (read first) does not pass.
    assert check.size == during.size - during.integrated
    assert check.exported_size is not None and check.exported_size <= check.size
    assert verify_broker_log(env.broker).size == during.size
