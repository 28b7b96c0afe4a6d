"""The dead letters' index: ``clarion dlq list`` reads the database, newest first.

Revision ID: 0006_dlq_index
Revises: 0002
Create Date: 2026-12-02

``clarion dlq list`` lists dead-lettered deliveries from PostgreSQL (the system
of record) instead of the broker, whose RabbitMQ queues cannot be read by time
without taking every entry. A partial index on ``(dead_lettered_at,
delivery_id)`` over the rows with ``dead_lettered_at`` set holds only the dead
letters, so ``--limit 20`` reads twenty index entries however large the table,
and the workers' write-back, which never matches the predicate except when a
delivery dies, pays nothing for it.

On PostgreSQL the index is built ``CONCURRENTLY`` (outside the migration's
transaction): a plain build would block the write-back on a large table for as
long as the scan takes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_dlq_index"
down_revision: str | None = "0005_delivery_policy"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_notification_deliveries_dead_lettered"
TABLE = "notification_deliveries"
WHERE = sa.text("dead_lettered_at IS NOT NULL")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            # A build interrupted half-way leaves an INVALID index of this
            # name: drop it first so that a second run builds it afresh.
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
            op.create_index(
                INDEX,
                TABLE,
                ["dead_lettered_at", "delivery_id"],
                postgresql_where=WHERE,
                postgresql_concurrently=True,
            )
        return
    op.create_index(INDEX, TABLE, ["dead_lettered_at", "delivery_id"], sqlite_where=WHERE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
        return
    op.drop_index(INDEX, table_name=TABLE)
