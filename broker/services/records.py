"""Depositing records: validated by the category's strict schema, sealed with a fresh data key."""

from __future__ import annotations

import json
from typing import Any

from marshmallow import ValidationError

from broker.adapters.envelope import Sealed, open_sealed, record_aad, seal
from broker.adapters.orm import RecordRow
from broker.domain.clock import utc
from broker.domain.errors import InvalidRequestError, UnknownCategoryError
from broker.domain.model import Caller
from broker.services import Broker, new_id
from broker.services.audit_log import append_entry
from broker.services.persons import lock_person
from schemas.records import RECORD_SCHEMAS, load_record


def deposit_record(broker: Broker, caller: Caller, person_id: str, category: str, content: object) -> dict[str, Any]:
    if category not in RECORD_SCHEMAS:
        raise UnknownCategoryError(f"unknown category '{category}'", field="category")
    try:
        loaded = load_record(category, content)
    except ValidationError as error:
        raise InvalidRequestError(
            f"content does not match the '{category}' schema",
            field="content",
            extra={"errors": {"content": error.messages}},
        ) from None
    plaintext = json.dumps(loaded, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()
    with broker.uow() as uow:
        # Exclusive: a new record changes what a decision about the person reads (`lock_person`).
        lock_person(uow, person_id, exclusive=True)
        now = broker.clock.now()
        record_id = new_id("rec")
        sealed = seal(plaintext, record_aad(record_id, person_id, category), broker.keys)
        row = RecordRow(
            id=record_id,
            person_id=person_id,
            category=category,
            source_org=caller.organisation_id,
            deposited_at=now,
            deposited_by_role=caller.actor_role,
            kek_id=sealed.kek_id,
            wrapped_key=sealed.wrapped_key,
            nonce=sealed.nonce,
            ciphertext=sealed.ciphertext,
        )
        uow.session.add(row)
        append_entry(
            uow,
            event="record:deposit",
            now=now,
            caller=caller,
            person_id=person_id,
            category=category,
            record_ids=[record_id],
            fields=sorted(loaded),
        )
        uow.commit()
    return {
        "record_id": record_id,
        "person_id": person_id,
        "category": category,
        "source_organisation": caller.organisation_id,
        "deposited_at": utc(now),
    }


def open_record(broker: Broker, row: Any) -> dict[str, Any]:
    """Decrypt a record's content; the associated data binds it to its id, person and category. `row` is a
    RecordRow or a result row with the same column names."""
    assert row.ciphertext is not None
    sealed = Sealed(ciphertext=row.ciphertext, nonce=row.nonce, wrapped_key=row.wrapped_key, kek_id=row.kek_id)
    content: dict[str, Any] = json.loads(
        open_sealed(sealed, record_aad(row.id, row.person_id, row.category), broker.keys)
    )
    return content
