"""`broker audit export DIR [--from I --to J]`: the log as an export directory (DESIGN.md, "Audit export
format"; audit/export.py), verifiable offline with `python -m audit verify DIR`.

A whole export holds every entry up to the newest signed checkpoint and every signed checkpoint. A slice holds
the entries [from, to), the checkpoints of sizes within it, and the newest checkpoint with the subtree hashes
that tie the slice to it (range.json), so that a slice handed to an auditor still verifies against a signed
root. Entries appended after the newest checkpoint are left out: nothing has signed them yet.

Each entry is written as its final canonical bytes (RFC 8785, with its index member), derived from the stored
pending bytes and the index beside them (`audit.place_index`): the same bytes its leaf hashes.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from audit.entry import place_index
from audit.errors import AuditError
from audit.export import ExportWriter, range_plan
from broker.adapters.orm import AuditCheckpointRow, AuditEntryRow, AuditLeafRow
from broker.services import Broker
from broker.services.sequencer import load_nodes, verifier_keys


class ExportError(Exception):
    pass


def export_log(broker: Broker, directory: Path, *, first: int | None = None, end: int | None = None) -> str:
    with broker.uow(write=False) as uow:
        session = uow.session
        notes: dict[int, str] = {}
        for size, note in session.execute(
            select(AuditCheckpointRow.size, AuditCheckpointRow.note).order_by(AuditCheckpointRow.id)
        ):
            notes.setdefault(size, note)
        if not notes:
            raise ExportError("no checkpoint has been signed yet: nothing can be verified")
        signed = max(notes)
        start = 0 if first is None else first
        stop = signed if end is None else end
        if not 0 <= start <= stop <= signed:
            raise ExportError(
                f"--from and --to must satisfy 0 <= from <= to <= {signed}, the size of the newest checkpoint"
            )
        included = {s: n for s, n in notes.items() if start <= s <= stop}
        included[signed] = notes[signed]
        try:
            with ExportWriter(directory, first=start) as writer:
                result = session.execute(
                    select(AuditLeafRow.idx, AuditEntryRow.entry, AuditEntryRow.split)
                    .join(AuditEntryRow, AuditEntryRow.id == AuditLeafRow.entry_id)
                    .where(AuditLeafRow.idx >= start, AuditLeafRow.idx < stop)
                    .order_by(AuditLeafRow.idx)
                    .execution_options(yield_per=5000)
                )
                try:
                    for index, data, split in result:
                        writer.write_entry(place_index(bytes(data), split, index))
                finally:
                    result.close()
                if writer.count != stop - start:
                    raise ExportError(f"the database holds {writer.count} of the entries {start}..{stop - 1}")
                for size in sorted(included):
                    writer.write_checkpoint(included[size])
                writer.write_verifier_keys(verifier_keys(broker))
                if start or signed > stop:
                    plan = range_plan(start, stop, included)
                    wanted = [*plan.left, *(node for nodes in plan.right.values() for node in nodes)]
                    hashes = load_nodes(uow, wanted)
                    writer.write_range(
                        [hashes[node] for node in plan.left],
                        {size: [hashes[node] for node in nodes] for size, nodes in plan.right.items()},
                    )
        except AuditError as error:
            raise ExportError(str(error)) from None
    kind = "the whole log" if start == 0 and stop == signed else f"entries {start}..{stop - 1}"
    return f"exported {kind}: {stop - start} entries, {len(included)} signed checkpoints, to {directory}"
