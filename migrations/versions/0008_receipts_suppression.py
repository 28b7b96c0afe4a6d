"""Receipts, suppression and one-click unsubscribe.

Revision ID: 0008_receipts_suppression
Revises: 0003_web (0002 on its own branch; the coordinator re-chains)
Create Date: 2026-12-02

* ``suppressions``: addresses never sent to again until an operator lifts
  them (one active row per channel and address: a partial unique index);
* ``email_unsubscribes``: (user, category) pairs opted out of email by the
  List-Unsubscribe one-click POST;
* ``receipt_counts``: provider reports by provider and by what applying them
  did (moved, recorded, duplicate, unknown);
* an index on ``notification_deliveries.provider_message_id``, by which a
  provider's report finds its delivery.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008_receipts_suppression"
down_revision: str | None = "0006_dlq_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHANNELS = ("email", "sms", "push", "in_app", "webhook")


def _channel_type() -> sa.types.TypeEngine[str]:
    # The type exists since 0001: PostgreSQL reuses it, SQLite gets a CHECK.
    return sa.Enum(*_CHANNELS, name="notification_channel", create_constraint=True).with_variant(
        postgresql.ENUM(*_CHANNELS, name="notification_channel", create_type=False),
        "postgresql",
    )


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "suppressions",
        sa.Column("suppression_id", sa.Uuid(), nullable=False),
        sa.Column("channel", _channel_type(), nullable=False),
        sa.Column("address", sa.String(length=2048), nullable=False),
        sa.Column("reason", sa.String(length=50), nullable=False),
        sa.Column("source", sa.String(length=50), nullable=False),
        sa.Column("source_receipt", _json(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.current_timestamp(),
            nullable=False,
        ),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lifted_reason", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("suppression_id", name="pk_suppressions"),
    )
    op.create_index(
        "uq_suppressions_active",
        "suppressions",
        ["channel", "address"],
        unique=True,
        postgresql_where=sa.text("lifted_at IS NULL"),
        sqlite_where=sa.text("lifted_at IS NULL"),
    )
    op.create_table(
        "email_unsubscribes",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("category", sa.String(length=50), nullable=False),
        sa.Column("source", sa.String(length=50), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.current_timestamp(),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("user_id", "category", name="pk_email_unsubscribes"),
    )
    op.create_table(
        "receipt_counts",
        sa.Column("provider", sa.String(length=50), nullable=False),
        sa.Column("result", sa.String(length=20), nullable=False),
        sa.Column("count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.current_timestamp(),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("provider", "result", name="pk_receipt_counts"),
    )
    op.create_index(
        "ix_notification_deliveries_provider_message_id",
        "notification_deliveries",
        ["provider_message_id"],
    )


def downgrade() -> None:
    op.drop_index(
        "ix_notification_deliveries_provider_message_id", table_name="notification_deliveries"
    )
    op.drop_table("receipt_counts")
    op.drop_table("email_unsubscribes")
    op.drop_index("uq_suppressions_active", table_name="suppressions")
    op.drop_table("suppressions")
