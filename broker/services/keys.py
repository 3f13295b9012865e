"""Key rotation without downtime: a new key-encryption key, then every data key re-wrapped in batches.

Record ciphertext is never touched — only the wrapped data keys change — and each batch is its own short
transaction, so disclosures keep running. Running workers pick the new key up from the key store folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from broker.adapters.database import Database
from broker.adapters.envelope import Sealed, rewrap
from broker.adapters.keystore import KeyStore
from broker.adapters.orm import IdempotencyKeyRow, NoticeRow, PersonRow, RecordRow
from broker.adapters.uow import UnitOfWork
from broker.config import Settings


@dataclass(frozen=True)
class RotationResult:
    kek_id: str
    records: int
    persons: int
    notices: int
    idempotent_responses: int = 0  # stored first responses of Idempotency-Key requests (services/idempotency.py)


def _rewrap_table(
    db: Database, keys: KeyStore, row_type: Any, columns: tuple[str, str, str, str], batch_size: int
) -> int:
    kek_col, wrapped_col, nonce_col, ciphertext_col = columns
    current = keys.current_kek()[0]
    done = 0
    while True:
        with UnitOfWork(db) as uow:
            rows = uow.session.scalars(
                select(row_type).where(getattr(row_type, kek_col) != current).limit(batch_size)
            ).all()
            if not rows:
                return done
            for row in rows:
                sealed = Sealed(
                    ciphertext=getattr(row, ciphertext_col) or b"",
                    nonce=getattr(row, nonce_col),
                    wrapped_key=getattr(row, wrapped_col),
                    kek_id=getattr(row, kek_col),
                )
                fresh = rewrap(sealed, keys)
                setattr(row, wrapped_col, fresh.wrapped_key)
                setattr(row, kek_col, fresh.kek_id)
            uow.commit()
            done += len(rows)


def rotate_keys(settings: Settings, *, batch_size: int = 500) -> RotationResult:
    keys = KeyStore.open(settings.keys_path)
    kek_id = keys.add_kek()
    db = Database(settings.database_url)
    try:
        records = _rewrap_table(db, keys, RecordRow, ("kek_id", "wrapped_key", "nonce", "ciphertext"), batch_size)
        persons = _rewrap_table(
            db, keys, PersonRow, ("hetu_kek_id", "hetu_wrapped_key", "hetu_nonce", "hetu_ciphertext"), batch_size
        )
        notices = _rewrap_table(db, keys, NoticeRow, ("kek_id", "wrapped_key", "nonce", "ciphertext"), batch_size)
        # Short-lived, but they may hold disclosed records: an old key can be retired only once none uses it.
        responses = _rewrap_table(
            db, keys, IdempotencyKeyRow, ("kek_id", "wrapped_key", "nonce", "ciphertext"), batch_size
        )
    finally:
        db.dispose()
    return RotationResult(
        kek_id=kek_id, records=records, persons=persons, notices=notices, idempotent_responses=responses
    )
