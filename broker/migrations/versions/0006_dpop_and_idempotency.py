"""sender-constrained tokens and idempotent writes: access tokens bound to a DPoP key, used DPoP proof ids, and the
stored first responses of requests sent with an Idempotency-Key

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('access_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('jkt', sa.String(length=43), nullable=True))
    op.create_table('dpop_proof_jtis',
    sa.Column('jkt', sa.String(length=43), nullable=False),
    sa.Column('jti', sa.String(length=200), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('jkt', 'jti')
    )
    with op.batch_alter_table('dpop_proof_jtis', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dpop_proof_jtis_expires_at'), ['expires_at'], unique=False)
    op.create_table('idempotency_keys',
    sa.Column('client_id', sa.String(length=40), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('status', sa.Integer(), nullable=False),
    sa.Column('headers', sa.JSON(), nullable=False),
    sa.Column('kek_id', sa.String(length=64), nullable=False),
    sa.Column('wrapped_key', sa.LargeBinary(), nullable=False),
    sa.Column('nonce', sa.LargeBinary(), nullable=False),
    sa.Column('ciphertext', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('client_id', 'key')
    )
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_idempotency_keys_expires_at'), ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_idempotency_keys_expires_at'))
    op.drop_table('idempotency_keys')
    with op.batch_alter_table('dpop_proof_jtis', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dpop_proof_jtis_expires_at'))
    op.drop_table('dpop_proof_jtis')
    with op.batch_alter_table('access_tokens', schema=None) as batch_op:
        batch_op.drop_column('jkt')
