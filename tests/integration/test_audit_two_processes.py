"""Two broker processes on one database, each making disclosure requests (and the logged calls around them)
from several threads and each running the sequencer thread (issue #5: one sequencer elected with an advisory
lock on PostgreSQL, a file lock on SQLite), produce one consistent tree: every entry exactly once, indices
0..n-1 with no duplicate or gap, and every signed checkpoint a prefix of the same tree."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from sqlalchemy import func, select

from broker.adapters.orm import AuditCheckpointRow, AuditEntryRow, AuditLeafRow
from broker.services.audit_check import verify_broker_log
from broker.services.sequencer import Sequencer
from tests.support import Env

PROCESSES = 2
THREADS = 4
PERSONS_PER_THREAD = 12

WORKER = textwrap.dedent(
    """
    import sys, time
    from concurrent.futures import ThreadPoolExecutor
    from broker.app import build_broker
    from broker.config import Settings
    from broker.demo import caller
    from broker.domain.errors import NoLegalBasisError
    from broker.services import disclosures, persons
    from broker.services.sequencer import SequencerThread
    from broker.domain.hetu import make_hetu
    from datetime import date

    worker, threads, per_thread = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    broker = build_broker(Settings.from_env(audit_batch_size=7, audit_interval=0.05))
    sequencer = SequencerThread(broker)
    sequencer.start()
    kisalli, health = caller(broker, "kisalli"), caller(broker, "varha-health")

    def work(thread):
        for n in range(per_thread):
            number = (worker * threads + thread) * per_thread + n
            hetu = make_hetu(date(1950 + number // 300, 1 + number % 12, 1 + number % 28), 900 + number % 100)
            person = persons.resolve_person(broker, kisalli, hetu)
            persons.start_relationship(broker, health, person)
            ask = disclosures.DisclosureAsk(person, "work_assessment", "work_capacity_assessment")
            try:
                disclosures.request_disclosure(broker, health, ask)  # no consent: refused, and logged
            except NoLegalBasisError:
                pass

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    time.sleep(0.5)  # let a round or two of sequencing happen while the other process still appends
    sequencer.stop()
    broker.db.dispose()
    print("elected" if sequencer.elected else "standby")
    """
)


def test_two_processes_build_one_tree(env: Env) -> None:
    settings = env.broker.settings
    environment = {
        **os.environ,
        "BROKER_MODE": "test",
        "BROKER_DATABASE_URL": settings.database_url,
        "BROKER_INSTANCE_PATH": str(settings.instance_path),
        "BROKER_ISSUER": settings.issuer,
        "BROKER_AUDIT_ANCHOR_WINDOW": "off",
    }
    with env.broker.uow(write=False) as uow:
        before = uow.session.scalar(select(func.count()).select_from(AuditEntryRow)) or 0
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(n), str(THREADS), str(PERSONS_PER_THREAD)],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(PROCESSES)
    ]
    outputs = [worker.communicate(timeout=240) for worker in workers]
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-3000:]
    roles = sorted(out.strip().splitlines()[-1] for out, _ in outputs)
    assert "elected" in roles  # at least one process sequenced; the election makes it one at a time

    Sequencer(env.broker).run_once()  # whatever was appended after the last round of the workers' sequencers
    # Per person: resolve, relationship, and the disclosure request (refused without a consent, and logged).
    expected = before + PROCESSES * THREADS * PERSONS_PER_THREAD * 3
    with env.broker.uow(write=False) as uow:
        indices = list(
            uow.session.scalars(
                select(AuditLeafRow.idx)
                .select_from(AuditEntryRow)
                .outerjoin(AuditLeafRow, AuditLeafRow.entry_id == AuditEntryRow.id)
                .order_by(AuditEntryRow.id)
            )
        )
        sizes = list(uow.session.scalars(select(AuditCheckpointRow.size).order_by(AuditCheckpointRow.id)))
    assert len(indices) == expected
    assert None not in indices and sorted(indices) == list(range(expected))  # no duplicate, no gap
    assert sizes == sorted(sizes)  # checkpoints only ever grow
    check = verify_broker_log(env.broker)  # every checkpoint signs a prefix of this one tree
    assert check.size == expected and check.checkpoints == len(sizes)
