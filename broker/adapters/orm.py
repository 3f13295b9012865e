"""Every table the broker keeps, in one file, so that everything stored about a person is visible in one place.

SQLAlchemy 2.0 typed declarative mapping. Times are stored timezone-aware (PostgreSQL `timestamptz`); SQLite hands
them back naive, so repositories pass them through `broker.domain.clock.utc`.

What is never stored here: an identity code in the clear (only its keyed hash and its sealed form), record content
in the clear (only AES-256-GCM ciphertext), an access token (only its SHA-256).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

ID = String(40)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: DateTime(timezone=True),
        date: Date,
        dict[str, Any]: JSON,
        list[str]: JSON,
        bytes: LargeBinary,
    }


class OrganisationRow(Base):
    __tablename__ = "organisations"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    org_type: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime]


class PartnerRow(Base):
    """A partner system: an OAuth client authenticating with `private_key_jwt` (RFC 7523)."""

    __tablename__ = "partners"
    client_id: Mapped[str] = mapped_column(ID, primary_key=True)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    name: Mapped[str] = mapped_column(String(200))
    jwks: Mapped[dict[str, Any]]  # public keys only
    alg: Mapped[str] = mapped_column(String(16))  # pinned: one algorithm per partner
    scopes: Mapped[list[str]]
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]


class PersonRow(Base):
    __tablename__ = "persons"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    # Keyed hash (HMAC-SHA256) of the identity code: the look-up index (DESIGN.md invariant 6).
    hetu_index: Mapped[str] = mapped_column(String(64), unique=True)
    hetu_kek_id: Mapped[str] = mapped_column(String(64))
    hetu_wrapped_key: Mapped[bytes]
    hetu_nonce: Mapped[bytes]
    hetu_ciphertext: Mapped[bytes]
    birth_date: Mapped[date]
    display_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]
    # SQLite only: how many times what a decision about the person reads — their consents, relationships,
    # representations, records, birth date — has changed, counted by triggers (`FACTS_VERSION_DDL`). A disclosure
    # decides on a snapshot without the write lock and commits under it only if this is unchanged
    # (services/disclosures.py). PostgreSQL's disclosures hold the person's row lock instead; it stays 0 there.
    facts_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class RelationshipRow(Base):
    """A service relationship: an organisation serves the person from `started_at` until `ended_at`."""

    __tablename__ = "relationships"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id"))
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    __table_args__ = (Index("ix_relationships_person", "person_id", "organisation_id"),)


class RepresentationRow(Base):
    """A verified mandate to act for a person (custodian, guardian for personal matters, continuing power of
    attorney covering personal matters), registered by an organisation that verified it."""

    __tablename__ = "representations"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id"))
    representative_id: Mapped[str] = mapped_column(ForeignKey("persons.id"))
    mandate: Mapped[str] = mapped_column(String(40))
    valid_from: Mapped[datetime]
    valid_until: Mapped[datetime | None]
    registered_by: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    created_at: Mapped[datetime]
    # Both directions are looked up: whom the logged-in person may act for (portal), and whether a person has a
    # legal representative (read in every disclosure transaction, `Facts.has_legal_representative`).
    __table_args__ = (
        Index("ix_representations_person", "person_id"),
        Index("ix_representations_representative", "representative_id"),
    )


class ConsentTextRow(Base):
    """The exact text shown to the person, stored once and referenced by its SHA-256 (GDPR 7(1))."""

    __tablename__ = "consent_texts"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str] = mapped_column(String(40))
    language: Mapped[str] = mapped_column(String(8))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class ConsentRequestRow(Base):
    __tablename__ = "consent_requests"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id"), index=True)
    requester_org: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    requested_by_role: Mapped[str] = mapped_column(String(40))
    recipients: Mapped[list[str]]
    categories: Mapped[list[str]]
    purposes: Mapped[list[str]]
    valid_days: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # pending | granted | refused | expired
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    answered_at: Mapped[datetime | None]
    consent_id: Mapped[str | None] = mapped_column(ID)
    # The expiry job (broker/services/jobs.py) looks for pending requests past their deadline.
    __table_args__ = (Index("ix_consent_requests_status_expires", "status", "expires_at"),)


class ConsentRow(Base):
    """A consent as it stands now. Every change also appends a ConsentEventRow (the history)."""

    __tablename__ = "consents"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # active | withdrawn | expired
    requester_org: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    recipients: Mapped[list[str]]
    categories: Mapped[list[str]]
    purposes: Mapped[list[str]]
    valid_from: Mapped[datetime]
    valid_until: Mapped[datetime | None]
    bound_to_org: Mapped[str | None] = mapped_column(ID)
    explicit: Mapped[bool] = mapped_column(Boolean)
    written: Mapped[bool] = mapped_column(Boolean)
    method: Mapped[str] = mapped_column(String(16))  # portal | in_person | paper
    given_by: Mapped[str] = mapped_column(String(16))  # person | representative
    representative_id: Mapped[str | None] = mapped_column(ID)
    mandate: Mapped[str | None] = mapped_column(String(40))
    recorded_by_org: Mapped[str | None] = mapped_column(ID)
    recorded_by_actor: Mapped[str | None] = mapped_column(String(120))
    recorded_by_role: Mapped[str | None] = mapped_column(String(40))
    witness: Mapped[str | None] = mapped_column(String(200))
    text_sha256: Mapped[str] = mapped_column(ForeignKey("consent_texts.sha256"))
    language: Mapped[str] = mapped_column(String(8))
    request_id: Mapped[str | None] = mapped_column(ID)
    created_at: Mapped[datetime]
    withdrawn_at: Mapped[datetime | None]
    # The expiry job looks for active consents past `valid_until`, and for consents bound to a service relationship
    # (a small share of all, NULL for the rest): without these, each run would scan every consent.
    __table_args__ = (
        Index("ix_consents_status_valid_until", "status", "valid_until"),
        Index("ix_consents_bound_to_org", "bound_to_org", "status"),
    )


class ConsentEventRow(Base):
    """Append-only history of a consent: who changed it, how, when (703/2023 10 § and 39 §)."""

    __tablename__ = "consent_events"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    consent_id: Mapped[str] = mapped_column(ForeignKey("consents.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(16))  # grant | withdraw | expire
    at: Mapped[datetime]
    by_kind: Mapped[str] = mapped_column(String(16))  # person | representative | professional | system
    by_org: Mapped[str | None] = mapped_column(ID)
    by_actor: Mapped[str | None] = mapped_column(String(120))
    detail: Mapped[dict[str, Any]]


class RecordRow(Base):
    """A deposited record; content is AES-256-GCM under a per-record data key (DESIGN.md invariant 7)."""

    __tablename__ = "records"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id"))
    category: Mapped[str] = mapped_column(String(40))
    source_org: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    deposited_at: Mapped[datetime]
    deposited_by_role: Mapped[str] = mapped_column(String(40))
    kek_id: Mapped[str] = mapped_column(String(64))
    wrapped_key: Mapped[bytes]
    nonce: Mapped[bytes]
    ciphertext: Mapped[bytes | None]  # None once erased at the end of its retention period
    __table_args__ = (Index("ix_records_person_category", "person_id", "category"),)


class DisclosureRow(Base):
    """Every decided request for records, permitted or denied, and every notice: what the person sees."""

    __tablename__ = "disclosures"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id"))
    kind: Mapped[str] = mapped_column(String(16))  # request (pulled by the recipient) | notice (pushed to it)
    recipient_org: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    partner: Mapped[str] = mapped_column(ID)  # the partner system that made the request or sent the notice
    category: Mapped[str] = mapped_column(String(40))
    purpose: Mapped[str] = mapped_column(String(40))
    effect: Mapped[str] = mapped_column(String(8))
    basis: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    record_ids: Mapped[list[str]]
    fields: Mapped[list[str]]
    payload_sha256: Mapped[str | None] = mapped_column(String(64))
    policy_version: Mapped[str] = mapped_column(String(64))
    # The append id of the audit entry that records this decision (AuditEntryRow.id); its tree index follows
    # once the sequencer has integrated it.
    audit_entry_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]
    # The person's log in the portal reads one person's disclosures newest first, a page at a time; the index
    # serves that and every other look-up by person.
    __table_args__ = (Index("ix_disclosures_person_created", "person_id", "created_at"),)


class NoticeRow(Base):
    __tablename__ = "notices"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id"))
    kind: Mapped[str] = mapped_column(String(40))
    # None when the broker itself is the sender (kind `consent_withdrawn`: the person withdrew in the portal).
    sender_org: Mapped[str | None] = mapped_column(ForeignKey("organisations.id"))
    recipient_org: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    basis: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    kek_id: Mapped[str] = mapped_column(String(64))
    wrapped_key: Mapped[bytes]
    nonce: Mapped[bytes]
    ciphertext: Mapped[bytes]
    created_at: Mapped[datetime]
    acked_at: Mapped[datetime | None]
    __table_args__ = (Index("ix_notices_recipient", "recipient_org", "acked_at"),)


class AuditEntryRow(Base):
    """One log entry, written once. Appended inside the transaction of the event it records, with an append id
    and no tree position: `entry` holds the canonical bytes (RFC 8785) without the index member, and `split`
    the offset where it goes (audit.encode_pending). The sequencer gives the entry its position and leaf hash in
    a row of its own (`AuditLeafRow`) and never writes this row again; the entry's final bytes — what the leaf
    hashes and exports hold — are `audit.place_index(entry, split, idx)` wherever they are read. Inserting a row
    queues it for the sequencer (`audit_pending`, by trigger). The plain columns beside the bytes serve the
    DPO's searches."""

    __tablename__ = "audit_entries"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    entry: Mapped[bytes]
    split: Mapped[int] = mapped_column(Integer)
    logged_at: Mapped[datetime] = mapped_column(index=True)
    event: Mapped[str] = mapped_column(String(40))
    person_id: Mapped[str | None] = mapped_column(ID, index=True)
    organisation: Mapped[str | None] = mapped_column(ID)
    category: Mapped[str | None] = mapped_column(String(40))
    purpose: Mapped[str | None] = mapped_column(String(40))
    effect: Mapped[str | None] = mapped_column(String(8))
    basis_kind: Mapped[str | None] = mapped_column(String(20))
    actor: Mapped[AuditActorRow | None] = relationship(lazy="raise")
    __table_args__ = (Index("ix_audit_entries_organisation_logged", "organisation", "logged_at"),)


class AuditLeafRow(Base):
    """An entry's place in the Merkle tree: its gap-free index and its leaf hash, SHA-256(0x00 || final bytes)
    (RFC 9162 §2.1.1). Inserted once by the sequencer — never an update of the entry's row, which would write
    the entry a second time (docs/audit.md, "Storage"). No foreign key to the entry: on PostgreSQL its check
    locks the entry's row, which writes to the entry's page again; `broker audit verify` checks every leaf
    against its entry instead."""

    __tablename__ = "audit_leaves"
    idx: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    entry_id: Mapped[int] = mapped_column(BigInteger, unique=True)  # an entry has one position at most
    leaf_hash: Mapped[bytes]


class AuditPendingRow(Base):
    """The sequencer's work queue: the appended entries without a position, by append id. A row is added by a
    trigger on audit_entries (`AUDIT_QUEUE_DDL`), so that no way of appending — the broker's, a bulk load, a
    restore — can leave an entry outside the queue, and the sequencer deletes it when it places the entry."""

    __tablename__ = "audit_pending"
    entry_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )


# The queueing trigger, per dialect. PostgreSQL runs it once per statement over the statement's new rows (a
# transition table), so that a bulk insert or COPY queues its rows in one set-based insert; its function keeps
# the search path it was created with, so that it always fills the audit_pending beside its audit_entries.
# Alembic's batch mode on SQLite recreates a table to alter it and drops its triggers with it: a migration that
# alters audit_entries must create the trigger again (tests/integration/test_migrations.py checks it).
AUDIT_QUEUE_DDL: dict[str, tuple[str, ...]] = {
    "sqlite": (
        "CREATE TRIGGER audit_entries_queue AFTER INSERT ON audit_entries "
        "BEGIN INSERT INTO audit_pending (entry_id) VALUES (NEW.id); END",
    ),
    "postgresql": (
        "CREATE OR REPLACE FUNCTION audit_entries_queue() RETURNS trigger LANGUAGE plpgsql "
        "SET search_path FROM CURRENT AS $$ "
        "BEGIN INSERT INTO audit_pending (entry_id) SELECT id FROM appended; RETURN NULL; END $$",
        "CREATE TRIGGER audit_entries_queue AFTER INSERT ON audit_entries REFERENCING NEW TABLE AS appended "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_entries_queue()",
    ),
}


@event.listens_for(AuditEntryRow.__table__, "after_create")
def _create_audit_queue_trigger(_table: Any, connection: Any, **_: Any) -> None:
    """`metadata.create_all` (the test suite's schema) makes the trigger too; migrations make it themselves."""
    for statement in AUDIT_QUEUE_DDL.get(connection.dialect.name, ()):
        connection.exec_driver_sql(statement)


# The triggers that count changes to a person's facts in persons.facts_version, per dialect: a disclosure decides on
# a snapshot and records its decision only if the version it read is still the person's (services/disclosures.py).
# An update counts for the old and the new person. On SQLite one trigger per table and operation, counting once per
# row changed. On PostgreSQL one per table and operation too, run once per statement over its rows (transition
# tables, as the audit queue's), counting once per person a statement changes — so that a bulk load or COPY bumps
# each person once, in one set-based update; the functions keep the search path they were created with, so that
# they update the persons beside their tables. A birth date counts too (a decision reads the person's age): on
# PostgreSQL in the updated row itself, before it is written.
# Alembic's batch mode on SQLite drops a table's triggers when it recreates the table: a migration that alters one
# of these tables must create its triggers again (tests/integration/test_migrations.py checks that they exist).
FACTS_TABLES = ("consents", "relationships", "representations", "records")


def _facts_version_triggers(table: str) -> tuple[str, ...]:
    bump = "UPDATE persons SET facts_version = facts_version + 1 WHERE id"
    return (
        f"CREATE TRIGGER {table}_facts_insert AFTER INSERT ON {table} BEGIN {bump} = NEW.person_id; END",
        f"CREATE TRIGGER {table}_facts_update AFTER UPDATE ON {table} "
        f"BEGIN {bump} IN (OLD.person_id, NEW.person_id); END",
        f"CREATE TRIGGER {table}_facts_delete AFTER DELETE ON {table} BEGIN {bump} = OLD.person_id; END",
    )


def _postgres_facts_function(name: str, persons: str) -> str:
    bump = "UPDATE persons SET facts_version = facts_version + 1 WHERE id IN"
    return (
        f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$ "
        f"BEGIN {bump} ({persons}); RETURN NULL; END $$"
    )


def _postgres_facts_triggers(table: str) -> tuple[str, ...]:
    each = "FOR EACH STATEMENT EXECUTE FUNCTION"
    return (
        f"CREATE TRIGGER {table}_facts_insert AFTER INSERT ON {table} REFERENCING NEW TABLE AS changed "
        f"{each} persons_facts_inserted()",
        f"CREATE TRIGGER {table}_facts_update AFTER UPDATE ON {table} REFERENCING OLD TABLE AS earlier NEW TABLE AS "
        f"changed {each} persons_facts_updated()",
        f"CREATE TRIGGER {table}_facts_delete AFTER DELETE ON {table} REFERENCING OLD TABLE AS changed "
        f"{each} persons_facts_deleted()",
    )


FACTS_VERSION_DDL: dict[str, dict[str, tuple[str, ...]]] = {
    "sqlite": {
        **{table: _facts_version_triggers(table) for table in FACTS_TABLES},
        "persons": (
            "CREATE TRIGGER persons_facts_birth_date AFTER UPDATE OF birth_date ON persons "
            "BEGIN UPDATE persons SET facts_version = facts_version + 1 WHERE id = NEW.id; END",
        ),
    },
    "postgresql": {
        # The functions first: persons is created before the tables that refer to it.
        "persons": (
            _postgres_facts_function("persons_facts_inserted", "SELECT person_id FROM changed"),
            _postgres_facts_function(
                "persons_facts_updated", "SELECT person_id FROM earlier UNION SELECT person_id FROM changed"
            ),
            _postgres_facts_function("persons_facts_deleted", "SELECT person_id FROM changed"),
            "CREATE OR REPLACE FUNCTION persons_birth_date_counted() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN NEW.facts_version := OLD.facts_version + 1; RETURN NEW; END $$",
            "CREATE TRIGGER persons_facts_birth_date BEFORE UPDATE OF birth_date ON persons FOR EACH ROW "
            "EXECUTE FUNCTION persons_birth_date_counted()",
        ),
        **{table: _postgres_facts_triggers(table) for table in FACTS_TABLES},
    },
}


def _create_facts_version_triggers(table: Any, connection: Any, **_: Any) -> None:
    """`metadata.create_all` makes the triggers too; migrations make them themselves."""
    for statement in FACTS_VERSION_DDL.get(connection.dialect.name, {}).get(table.name, ()):
        connection.exec_driver_sql(statement)


class AuditActorRow(Base):
    """The opening of an entry's actor commitment: kept beside the log for the DPO, never in the leaf."""

    __tablename__ = "audit_actors"
    entry_id: Mapped[int] = mapped_column(ForeignKey("audit_entries.id"), primary_key=True)
    actor_id: Mapped[str] = mapped_column(String(120), index=True)
    salt: Mapped[str] = mapped_column(String(64))


class AuditNodeRow(Base):
    """The hash of a perfect subtree of the log (RFC 9162 §2.1.1) at `level` ≥ 1, covering leaves
    [idx·2^level, (idx+1)·2^level); level 0 is the entries' leaf hashes. Written once by the sequencer, so that
    an inclusion or consistency proof is O(log n) reads (RFC 9162 §2.1.3, §2.1.4)."""

    __tablename__ = "audit_nodes"
    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    hash: Mapped[bytes]


class AuditHeadRow(Base):
    """The tree as the sequencer left it: size and Merkle frontier, and the newest checkpoint known to have
    reached the sink outside the database. Only the sequencer writes it."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    frontier: Mapped[bytes]
    root: Mapped[bytes]
    exported_size: Mapped[int | None] = mapped_column(BigInteger)
    exported_at: Mapped[datetime | None]


class AuditCheckpointRow(Base):
    """A signed checkpoint (C2SP tlog-checkpoint in a C2SP signed-note) and when it reached the sink."""

    __tablename__ = "audit_checkpoints"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    size: Mapped[int] = mapped_column(BigInteger, index=True)
    root: Mapped[bytes]
    note: Mapped[str] = mapped_column(Text)
    signed_at: Mapped[datetime]
    exported_at: Mapped[datetime | None]


class AuditVerificationRow(Base):
    """The result of each full verification of the log (`broker audit verify`, the DPO's integrity page)."""

    __tablename__ = "audit_verifications"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    ok: Mapped[bool] = mapped_column(Boolean)
    size: Mapped[int] = mapped_column(BigInteger)
    exported_size: Mapped[int | None] = mapped_column(BigInteger)
    failure_index: Mapped[int | None] = mapped_column(BigInteger)
    failure_kind: Mapped[str | None] = mapped_column(String(40))
    message: Mapped[str | None] = mapped_column(Text)


class DpoReviewRow(Base):
    """The DPO's review of one anomaly-queue item: which rule flagged which entry, the note, who and when. The
    review is itself logged (event dpo:review)."""

    __tablename__ = "dpo_reviews"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("audit_entries.id"))
    rule: Mapped[str] = mapped_column(String(40))
    reviewer: Mapped[str] = mapped_column(String(120))
    note: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(20))  # justified | follow_up | reported
    reviewed_at: Mapped[datetime]
    __table_args__ = (Index("ix_dpo_reviews_entry_rule", "entry_id", "rule", unique=True),)


class AssertionJtiRow(Base):
    """Used client-assertion ids: a unique key makes 'use once' an atomic insert (RFC 7523 §3 item 7)."""

    __tablename__ = "assertion_jtis"
    client_id: Mapped[str] = mapped_column(ID, primary_key=True)
    jti: Mapped[str] = mapped_column(String(200), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class AccessTokenRow(Base):
    __tablename__ = "access_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("partners.client_id"))
    scope: Mapped[str] = mapped_column(String(400))
    actor_id: Mapped[str] = mapped_column(String(120))
    actor_role: Mapped[str] = mapped_column(String(40))
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    revoked_at: Mapped[datetime | None]
    # The JWK SHA-256 thumbprint (RFC 7638) of the key the token is bound to (RFC 9449 §6, `cnf.jkt`); None for a
    # token issued without a DPoP proof, which only a broker that does not require DPoP accepts.
    jkt: Mapped[str | None] = mapped_column(String(43))


class DpopProofJtiRow(Base):
    """Used DPoP proof ids: a unique key makes 'use once' an atomic insert (RFC 9449 §11.1). Keyed by the proof's
    key thumbprint, since a `jti` is unique only for its signer; kept until the proof's `iat` falls out of the
    accepted window."""

    __tablename__ = "dpop_proof_jtis"
    jkt: Mapped[str] = mapped_column(String(43), primary_key=True)
    jti: Mapped[str] = mapped_column(String(200), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class IdempotencyKeyRow(Base):
    """The first response to a write request sent with an `Idempotency-Key` header, stored in the same transaction
    as the write itself: a retry with the same key gets this response back and changes nothing.

    The body may hold disclosed record content, so it is sealed like a record (AES-256-GCM under its own data key,
    bound to the partner and the key; DESIGN.md invariant 7). Rows are forgotten after `expires_at`."""

    __tablename__ = "idempotency_keys"
    client_id: Mapped[str] = mapped_column(ID, primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # Keyed hash (HMAC-SHA256, hex) of the method, path, body and acting professional of the first request: the
    # same key with another request is refused. Keyed, because a body may hold an identity code (invariant 6).
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[int]
    headers: Mapped[list[list[str]]] = mapped_column(JSON)  # [name, value] pairs, in order
    kek_id: Mapped[str] = mapped_column(String(64))
    wrapped_key: Mapped[bytes]
    nonce: Mapped[bytes]
    ciphertext: Mapped[bytes]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class WebhookEndpointRow(Base):
    """An HTTPS endpoint where a partner system takes its organisation's events, pushed as signed Security Event
    Tokens (RFC 8417, RFC 8935). Registered by one partner system, serving its whole organisation; deactivated,
    never deleted, so that its deliveries keep their history."""

    __tablename__ = "webhook_endpoints"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("partners.client_id"))
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list[str]]
    active: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]


class OutboxEventRow(Base):
    """An event for one organisation, written in the same transaction as the change it reports (the transactional
    outbox): it exists exactly when the change committed. `id` is the event id that receivers de-duplicate on (the
    token's `jti`). An event that concerns three organisations is three rows, each addressed to one of them, so
    that each organisation sees only its own and its token names it as the audience. `data` holds identifiers and
    states only — never record content or an identity code (DESIGN.md invariants 6 and 8)."""

    __tablename__ = "outbox_events"
    # The order events were written in (a partner's feed reads its events by it); `id` is what others refer to.
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(ID, unique=True)
    type: Mapped[str] = mapped_column(String(40))
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    person_id: Mapped[str | None] = mapped_column(ID)
    data: Mapped[dict[str, Any]]
    occurred_at: Mapped[datetime]
    created_at: Mapped[datetime]
    __table_args__ = (
        Index("ix_outbox_events_organisation_seq", "organisation_id", "seq"),
        Index("ix_outbox_events_person", "person_id"),
    )


class WebhookDeliveryRow(Base):
    """The delivery of one event to one endpoint: created with the event (so that no committed event can miss its
    delivery), then worked by `broker worker` until delivered or given up. `next_attempt_at` is also the lease: a
    worker that takes a delivery moves it forward before sending, so that a worker that dies mid-send leaves the
    delivery to be taken again when the lease runs out (at-least-once)."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("outbox_events.id"))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id"))
    status: Mapped[str] = mapped_column(String(12))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None]
    last_attempt_at: Mapped[datetime | None]
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(400))
    delivered_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
        Index("ix_webhook_deliveries_event_endpoint", "event_id", "endpoint_id", unique=True),
    )


class WithdrawalAttestationRow(Base):
    """What an organisation that received data under a consent did with it after the consent was withdrawn: deleted
    it, or kept it because a statute requires keeping it (GDPR 17(1)(b) and 17(3)(b); GDPR 19 obliges the
    controller to tell each recipient). Asked for with the `consent.withdrawn` event; unanswered after `due_at` it
    goes to the data-protection officer's anomaly queue."""

    __tablename__ = "withdrawal_attestations"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    consent_id: Mapped[str] = mapped_column(ForeignKey("consents.id"))
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id"), index=True)
    event_id: Mapped[str | None] = mapped_column(ID)
    requested_at: Mapped[datetime]
    due_at: Mapped[datetime] = mapped_column(index=True)
    outcome: Mapped[str | None] = mapped_column(String(12))  # None (not answered) | deleted | retained
    statute: Mapped[str | None] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text)
    answered_at: Mapped[datetime | None]
    answered_by_client: Mapped[str | None] = mapped_column(ID)
    answered_by_actor: Mapped[str | None] = mapped_column(String(120))
    __table_args__ = (
        Index("ix_withdrawal_attestations_consent_org", "consent_id", "organisation_id", unique=True),
        Index("ix_withdrawal_attestations_org_outcome", "organisation_id", "outcome"),
        # The unanswered ones past their due date (`outcome IS NULL AND due_at < now`, /metrics) as one index range.
        Index("ix_withdrawal_attestations_outcome_due", "outcome", "due_at"),
    )


class PolicyVersionRow(Base):
    """Every policy version the broker has run, with its full text, so any past decision can be re-read."""

    __tablename__ = "policy_versions"
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    files: Mapped[dict[str, Any]]
    first_loaded_at: Mapped[datetime]


class DevIdpCodeRow(Base):
    """An authorization code of the development identity provider (`broker/devidp`, demo and test mode only).

    Only the code's SHA-256 is stored. Using a code is one atomic update of `used_at` (single use across worker
    processes); a second use sets `replayed_at`, which voids every token the code gave (RFC 6749 §4.1.2), so the
    row is kept until those tokens have expired. `login` names a demo persona, never a person's identity code."""

    __tablename__ = "dev_idp_codes"
    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ID)
    login: Mapped[str] = mapped_column(String(64))
    redirect_uri: Mapped[str] = mapped_column(String(400))
    scope: Mapped[str] = mapped_column(String(400))
    nonce: Mapped[str | None] = mapped_column(String(200))
    code_challenge: Mapped[str] = mapped_column(String(128))
    code_challenge_method: Mapped[str] = mapped_column(String(8))
    auth_time: Mapped[datetime]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None]
    replayed_at: Mapped[datetime | None]
    __table_args__ = (Index("ix_dev_idp_codes_nonce", "client_id", "nonce"),)


class DevIdpTokenRow(Base):
    """An access token of the development identity provider, for its userinfo endpoint: only its SHA-256. It is
    void once its code has been replayed (`DevIdpCodeRow.replayed_at`)."""

    __tablename__ = "dev_idp_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), index=True)
    client_id: Mapped[str] = mapped_column(ID)
    login: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(400))
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class PortalSessionRow(Base):
    """A client portal session (broker/http/portal). The browser's cookie holds a random 256-bit token; only its
    SHA-256 is stored, as the id. `data` holds what the portal keeps between requests: the verified login (the
    broker's person id, never the identity code or the ID token), the person chosen to act for, the CSRF token and
    the pending login's state. A session ends at logout, after 30 idle minutes (`expires_at`) or at its maximum
    age."""

    __tablename__ = "portal_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


__all__ = [name for name in dir() if name.endswith("Row")] + ["Base"]


for _table in (*FACTS_TABLES, "persons"):
    event.listen(Base.metadata.tables[_table], "after_create", _create_facts_version_triggers)
