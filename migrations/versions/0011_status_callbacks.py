"""Status callbacks to the platform: the outbox of delivery outcomes to post.

Revision ID: 0011_status_callbacks
Revises: 0008_receipts_suppression
Create Date: 2026-12-02

* ``status_callbacks``: one row per delivery outcome the platform asked to
  hear about (``CLARION_STATUS_CALLBACK_EVENTS``), written in the transaction
  that made the outcome; relayed by the scheduler, posted by the workers
  (``models.callbacks``, ``workers.callbacks``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011_status_callbacks"
down_revision: str | None = "0009_policy_locales"
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
        "status_callbacks",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("notification_id", sa.Uuid(), nullable=False),
        sa.Column("delivery_id", sa.Uuid(), nullable=False),
        sa.Column("channel", _channel_type(), nullable=False),
        sa.Column("event", sa.String(length=20), nullable=False),
        sa.Column("detail", _json(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.current_timestamp(),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.notification_id"],
            name="fk_status_callbacks_notification_id_notifications",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("event_id", name="pk_status_callbacks"),
    )
    op.create_index(
        "ix_status_callbacks_due",
        "status_callbacks",
        ["lease_expires_at"],
        postgresql_where=sa.text("state = 'pending'"),
        sqlite_where=sa.text("state = 'pending'"),
    )
    op.create_index("ix_status_callbacks_notification_id", "status_callbacks", ["notification_id"])


def downgrade() -> None:
    op.drop_index("ix_status_callbacks_notification_id", table_name="status_callbacks")
    op.drop_index("ix_status_callbacks_due", table_name="status_callbacks")
    op.drop_table("status_callbacks")
