"""Use cases. Each opens its own unit of work, commits it, and returns plain values."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from broker.adapters.database import Database
from broker.adapters.keystore import KeyStore
from broker.adapters.uow import CoreUnitOfWork, UnitOfWork, join_ambient
from broker.config import Settings
from broker.domain.clock import Clock
from policies import Policy


@dataclass
class Broker:
    """What every use case needs: settings, database, keys, the loaded policy and the clock."""

    settings: Settings
    db: Database
    keys: KeyStore
    policy: Policy
    clock: Clock
    # Organisation id → type; types never change once registered (see persons.organisation_type).
    org_types: dict[str, str] = field(default_factory=dict)
    # Small per-process caches that belong to this broker (e.g. when the log was last anchored, sequencer.py).
    runtime: dict[str, Any] = field(default_factory=dict)

    def uow(self, *, write: bool = True, core: bool = False, autocommit: bool = False) -> UnitOfWork:
        """The use case's unit of work. `core`: on a Core connection (`CoreUnitOfWork`), for a use case that runs
        only prebuilt `Prepared` statements; `autocommit` (with `core`, not `write`): each statement a transaction
        of its own."""
        # Inside an ambient unit of work (an Idempotency-Key request, broker/services/idempotency.py) the use
        # case joins it, so that its writes and the stored response commit together.
        joined = join_ambient(self.db)
        if joined is not None:
            return joined
        if autocommit:
            return CoreUnitOfWork(self.db, write=write, decision_lock=self.settings.decision_lock, autocommit=True)
        unit = CoreUnitOfWork if core else UnitOfWork
        return unit(self.db, write=write, decision_lock=self.settings.decision_lock)


def new_id(prefix: str) -> str:
    """Opaque identifiers: a type prefix and 128 random bits (never derived from personal data)."""
    return f"{prefix}_{secrets.token_hex(16)}"
