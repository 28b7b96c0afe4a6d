"""Load the spec's auction notification templates into ``notification_templates``."""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from clarion.templating import load_seed_templates


def seed_templates(connection: Connection) -> int:
    """Insert the shipped templates that are not there yet; returns how many were added.

    Existing rows with the same (auction_type, event) are left as they are: an
    operator's edits to a template survive upgrades.
    """
    table = sa.table(
        "notification_templates",
        sa.column("template_id", sa.Uuid),
        sa.column("auction_type", sa.String),
        sa.column("event", sa.String),
        sa.column("category", sa.String),
        sa.column("title", sa.String),
        sa.column("message", sa.Text),
        sa.column("priority", sa.String),
        sa.column("channels", sa.JSON),
        sa.column("body_format", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    # The shipped texts are English; translations are rows of their own
    # (migration 0004), keyed by locale too.
    existing = {
        (row.auction_type, row.event)
        for row in connection.execute(
            sa.select(table.c.auction_type, table.c.event).where(sa.column("locale") == "en")
        )
    }
    now = dt.datetime.now(dt.UTC)
    rows = [
        {
            "template_id": uuid.uuid4(),
            "auction_type": t.auction_type,
            "event": t.event,
            "category": t.category.value,
            "title": t.title,
            "message": t.message,
            "priority": t.priority.value,
            "channels": [c.value for c in t.channels],
            "body_format": t.body_format,
            "created_at": now,
            "updated_at": now,
        }
        for t in load_seed_templates()
        if (t.auction_type, t.event) not in existing
    ]
    if rows:
        if connection.dialect.name == "postgresql":
            # The enum columns need a cast from the plain strings used here.
            stmt = sa.text(
                "INSERT INTO notification_templates (template_id, auction_type, event,"
                " category, title, message, priority, channels, body_format, created_at,"
                " updated_at) VALUES (:template_id, :auction_type, :event,"
                " CAST(:category AS notification_category), :title, :message,"
                " CAST(:priority AS notification_priority), CAST(:channels AS jsonb),"
                " :body_format, :created_at, :updated_at)"
                " ON CONFLICT (auction_type, event, locale) DO NOTHING"
            ).bindparams(sa.bindparam("channels", type_=sa.JSON))
            connection.execute(stmt, rows)
        else:
            connection.execute(table.insert(), rows)
    return len(rows)
