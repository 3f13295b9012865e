"""client portal: the person's log read by (person, time); representations looked up both ways; a notice the
broker itself sends (consent withdrawn in the portal) has no sender organisation

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The composite index serves every look-up by person as well, so it replaces the single-column one.
    with op.batch_alter_table('disclosures', schema=None) as batch_op:
        batch_op.create_index('ix_disclosures_person_created', ['person_id', 'created_at'], unique=False)
        batch_op.drop_index('ix_disclosures_person_id')

    with op.batch_alter_table('representations', schema=None) as batch_op:
        batch_op.create_index('ix_representations_person', ['person_id'], unique=False)
        batch_op.create_index('ix_representations_representative', ['representative_id'], unique=False)

    with op.batch_alter_table('notices', schema=None) as batch_op:
        batch_op.alter_column('sender_org', existing_type=sa.String(length=40), nullable=True)


def downgrade() -> None:
    # Notices the broker sent itself have no sender that could be restored, and deleting them would leave
    # organisations untold of a withdrawal: refuse rather than lose them.
    unsent = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM notices WHERE sender_org IS NULL")).scalar()
    if unsent:
        raise RuntimeError(f"{unsent} notices were sent by the broker itself; revision 0002 cannot hold them")
    with op.batch_alter_table('notices', schema=None) as batch_op:
        batch_op.alter_column('sender_org', existing_type=sa.String(length=40), nullable=False)

    with op.batch_alter_table('representations', schema=None) as batch_op:
        batch_op.drop_index('ix_representations_representative')
        batch_op.drop_index('ix_representations_person')

    with op.batch_alter_table('disclosures', schema=None) as batch_op:
        batch_op.create_index('ix_disclosures_person_id', ['person_id'], unique=False)
        batch_op.drop_index('ix_disclosures_person_created')
