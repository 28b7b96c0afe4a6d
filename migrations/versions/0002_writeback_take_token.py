"""The take token: makes the workers' write-back idempotent.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

``notification_deliveries.take_token`` names the take that moved a delivery
from ``queued`` to ``sending``. The write-back applies only while the token
still matches and clears it, so a write-back retried after its COMMIT
succeeded but the acknowledgement was lost (the connection dropped after
commit) writes no second attempt row and counts no attempt twice. A nullable
column with no default: adding it rewrites nothing and takes no long lock.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("notification_deliveries", sa.Column("take_token", sa.Uuid(), nullable=True))


def downgrade() -> None:
    # Batch mode: SQLite (the demo's database) rebuilds the table where it
    # must; PostgreSQL gets a plain ALTER TABLE ... DROP COLUMN.
    with op.batch_alter_table("notification_deliveries") as batch:
        batch.drop_column("take_token")
