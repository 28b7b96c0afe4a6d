"""The delivery policy: users' settings, collapse windows, rate counters, decisions.

Revision ID: 0005_delivery_policy
Revises: 0002
Create Date: 2026-12-02

New tables (ours): ``user_opt_outs``, ``user_quiet_hours``,
``collapse_windows``, ``rate_counters``. Beside the existing ones, nullable
columns or columns with a constant default (no table rewrite, no long lock):
``notification_deliveries.held_until``, ``.policy_reason``, ``.folded_into``;
``notifications.cancellation_key``; ``notification_templates.required``,
``.collapsible``, ``.collapse_window_seconds``, ``.collapse_title``,
``.collapse_message``. The seeded ``english/outbid`` and ``english/new_bid``
become collapsible, with the follow-up texts the README shows.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_delivery_policy"
down_revision: str | None = "0004_email_layouts_locales"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANNELS = ("email", "sms", "push", "in_app", "webhook")

#: (auction_type, event) -> (collapse_title, collapse_message)
COLLAPSIBLE = {
    ("english", "outbid"): (
        "You've been outbid {count} times",
        "Outbid {count} times, current price {amount}",
    ),
    ("english", "new_bid"): (
        "{count} new bids on {auction_title}",
        "{count} bids; latest: {bidder} bid {amount} on {item_title}",
    ),
}


def _channel_type() -> sa.Enum:
    # The enum type exists since 0001: refer to it, never create it again.
    return sa.Enum(*CHANNELS, name="notification_channel", create_type=False)


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "user_opt_outs",
        sa.Column("opt_out_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("channel", _channel_type(), nullable=False),
        sa.Column("category", sa.String(length=20), nullable=False),
        sa.Column("created_at", ts, server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.PrimaryKeyConstraint("opt_out_id", name=op.f("pk_user_opt_outs")),
        sa.UniqueConstraint("user_id", "channel", "category", name="uq_user_opt_outs_scope"),
    )
    op.create_table(
        "user_quiet_hours",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        sa.Column("starts_at", sa.Time(), nullable=False),
        sa.Column("ends_at", sa.Time(), nullable=False),
        sa.Column("updated_at", ts, server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_quiet_hours")),
    )
    op.create_table(
        "collapse_windows",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("auction_id", sa.Uuid(), nullable=False),
        sa.Column("collapse_key", sa.String(length=200), nullable=False),
        sa.Column("opened_at", ts, nullable=True),
        sa.Column("closes_at", ts, nullable=True),
        sa.Column("first_notification_id", sa.Uuid(), nullable=True),
        sa.Column("carrier_notification_id", sa.Uuid(), nullable=True),
        sa.Column("latest_notification_id", sa.Uuid(), nullable=True),
        sa.Column("event_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated_at", ts, server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.PrimaryKeyConstraint(
            "user_id", "auction_id", "collapse_key", name=op.f("pk_collapse_windows")
        ),
    )
    op.create_index("ix_collapse_windows_closes_at", "collapse_windows", ["closes_at"])
    op.create_table(
        "rate_counters",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("channel", _channel_type(), nullable=False),
        sa.Column("hour_start", ts, nullable=False),
        sa.Column("sent", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("user_id", "channel", "hour_start", name=op.f("pk_rate_counters")),
    )
    op.create_index("ix_rate_counters_hour", "rate_counters", ["hour_start"])

    op.add_column("notification_deliveries", sa.Column("held_until", ts, nullable=True))
    op.add_column("notification_deliveries", sa.Column("policy_reason", sa.Text(), nullable=True))
    op.add_column("notification_deliveries", sa.Column("folded_into", sa.Uuid(), nullable=True))
    op.create_index(
        "ix_notification_deliveries_held",
        "notification_deliveries",
        ["held_until"],
        postgresql_where=sa.text("held_until IS NOT NULL"),
        sqlite_where=sa.text("held_until IS NOT NULL"),
    )
    op.create_index(
        "ix_notification_deliveries_folded_into", "notification_deliveries", ["folded_into"]
    )
    op.add_column(
        "notifications", sa.Column("cancellation_key", sa.String(length=255), nullable=True)
    )
    op.create_index(
        "ix_notifications_cancellation_key",
        "notifications",
        ["cancellation_key"],
        postgresql_where=sa.text("cancellation_key IS NOT NULL"),
        sqlite_where=sa.text("cancellation_key IS NOT NULL"),
    )
    op.add_column(
        "notification_templates",
        sa.Column("required", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column(
        "notification_templates",
        sa.Column("collapsible", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column(
        "notification_templates",
        sa.Column("collapse_window_seconds", sa.Integer(), nullable=True),
    )
    op.add_column(
        "notification_templates",
        sa.Column("collapse_title", sa.String(length=255), nullable=True),
    )
    op.add_column("notification_templates", sa.Column("collapse_message", sa.Text(), nullable=True))
    templates = sa.table(
        "notification_templates",
        sa.column("auction_type", sa.String),
        sa.column("event", sa.String),
        sa.column("collapsible", sa.Boolean),
        sa.column("collapse_title", sa.String),
        sa.column("collapse_message", sa.Text),
    )
    for (auction_type, event), (title, message) in COLLAPSIBLE.items():
        op.execute(
            templates.update()
            .where(templates.c.auction_type == auction_type, templates.c.event == event)
            .values(collapsible=True, collapse_title=title, collapse_message=message)
        )


def downgrade() -> None:
    with op.batch_alter_table("notification_templates") as batch:
        for column in (
            "collapse_message",
            "collapse_title",
            "collapse_window_seconds",
            "collapsible",
            "required",
        ):
            batch.drop_column(column)
    op.drop_index("ix_notifications_cancellation_key", table_name="notifications")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("cancellation_key")
    op.drop_index("ix_notification_deliveries_folded_into", table_name="notification_deliveries")
    op.drop_index("ix_notification_deliveries_held", table_name="notification_deliveries")
    with op.batch_alter_table("notification_deliveries") as batch:
        for column in ("folded_into", "policy_reason", "held_until"):
            batch.drop_column(column)
    op.drop_index("ix_rate_counters_hour", table_name="rate_counters")
    op.drop_table("rate_counters")
    op.drop_index("ix_collapse_windows_closes_at", table_name="collapse_windows")
    op.drop_table("collapse_windows")
    op.drop_table("user_quiet_hours")
    op.drop_table("user_opt_outs")
