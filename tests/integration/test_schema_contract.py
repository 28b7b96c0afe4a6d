"""The migrated PostgreSQL schema against the schema contract.

The contract (``/work/shared/spec/schema-notifications-realtime.md``) is
transcribed below as data, column by column, and compared with what the
migrations actually built (``information_schema`` and ``pg_catalog``), not
with the models: a model and a migration that agree on a wrong type would
both be wrong.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

pytestmark = pytest.mark.postgres

# --- the spec, transcribed ------------------------------------------------------

UUID = "uuid"
JSON = "jsonb"
TEXT = "text"
INT = "integer"
BIGINT = "bigint"
BOOL = "boolean"
INET = "inet"
TS = "timestamp with time zone"


def varchar(n: int) -> str:
    return f"character varying({n})"


def enum(*values: str) -> tuple[str, ...]:
    """A PostgreSQL enum type with exactly these labels, in this order."""
    return values


NOT_NULL = False
NULLABLE = True
NO_DEFAULT = None

# (column, type, nullable, default the spec gives as text of the value, or None)
NOTIFICATIONS: list[tuple[str, Any, bool, str | None]] = [
    ("notification_id", UUID, NOT_NULL, NO_DEFAULT),  # PRIMARY KEY
    ("user_id", UUID, NOT_NULL, NO_DEFAULT),
    ("notification_type", enum("email", "sms", "push", "in_app", "webhook"), NOT_NULL, NO_DEFAULT),
    ("category", enum("auction", "bid", "payment", "system", "marketing"), NOT_NULL, NO_DEFAULT),
    ("priority", enum("low", "normal", "high", "urgent"), NOT_NULL, NO_DEFAULT),
    ("auction_id", UUID, NULLABLE, NO_DEFAULT),
    ("bid_id", UUID, NULLABLE, NO_DEFAULT),
    ("item_id", UUID, NULLABLE, NO_DEFAULT),
    ("title", varchar(255), NOT_NULL, NO_DEFAULT),
    ("message", TEXT, NOT_NULL, NO_DEFAULT),
    ("rich_content", JSON, NULLABLE, NO_DEFAULT),
    ("action_url", varchar(500), NULLABLE, NO_DEFAULT),
    ("action_label", varchar(100), NULLABLE, NO_DEFAULT),
    ("template_id", UUID, NULLABLE, NO_DEFAULT),
    ("template_data", JSON, NULLABLE, NO_DEFAULT),
    ("delivery_channels", JSON, NOT_NULL, NO_DEFAULT),
    ("scheduled_at", TS, NULLABLE, NO_DEFAULT),
    ("sent_at", TS, NULLABLE, NO_DEFAULT),
    ("delivered_at", TS, NULLABLE, NO_DEFAULT),
    ("read_at", TS, NULLABLE, NO_DEFAULT),
    ("clicked_at", TS, NULLABLE, NO_DEFAULT),
    (
        "status",
        enum("pending", "sent", "delivered", "read", "clicked", "failed", "cancelled"),
        NOT_NULL,
        NO_DEFAULT,
    ),
    ("delivery_attempts", INT, NULLABLE, "0"),
    ("max_attempts", INT, NULLABLE, "3"),
    ("error_message", TEXT, NULLABLE, NO_DEFAULT),
    ("provider_response", JSON, NULLABLE, NO_DEFAULT),
    ("expires_at", TS, NULLABLE, NO_DEFAULT),
    ("is_read", BOOL, NULLABLE, "false"),
    ("is_archived", BOOL, NULLABLE, "false"),
    ("tags", JSON, NULLABLE, NO_DEFAULT),
    ("metadata", JSON, NULLABLE, NO_DEFAULT),
    ("created_at", TS, NOT_NULL, NO_DEFAULT),
    ("updated_at", TS, NOT_NULL, NO_DEFAULT),
]

WEBSOCKET_CONNECTIONS: list[tuple[str, Any, bool, str | None]] = [
    ("connection_id", UUID, NOT_NULL, NO_DEFAULT),  # PRIMARY KEY
    ("user_id", UUID, NOT_NULL, NO_DEFAULT),
    ("session_id", varchar(255), NOT_NULL, NO_DEFAULT),
    ("socket_id", varchar(255), NOT_NULL, NO_DEFAULT),
    (
        "connection_status",
        enum("connecting", "connected", "disconnecting", "disconnected"),
        NOT_NULL,
        NO_DEFAULT,
    ),
    ("client_ip", INET, NOT_NULL, NO_DEFAULT),
    ("user_agent", TEXT, NOT_NULL, NO_DEFAULT),
    ("protocol_version", varchar(20), NULLABLE, "1.0"),
    ("compression_enabled", BOOL, NULLABLE, "false"),
    ("heartbeat_interval", INT, NULLABLE, "30"),
    ("last_heartbeat", TS, NULLABLE, NO_DEFAULT),
    ("connected_at", TS, NOT_NULL, NO_DEFAULT),
    ("disconnected_at", TS, NULLABLE, NO_DEFAULT),
    ("disconnect_reason", varchar(255), NULLABLE, NO_DEFAULT),
    ("reconnect_count", INT, NULLABLE, "0"),
    ("bytes_sent", BIGINT, NULLABLE, "0"),
    ("bytes_received", BIGINT, NULLABLE, "0"),
    ("messages_sent", INT, NULLABLE, "0"),
    ("messages_received", INT, NULLABLE, "0"),
    ("subscriptions", JSON, NOT_NULL, NO_DEFAULT),
    ("auction_subscriptions", JSON, NOT_NULL, NO_DEFAULT),
    ("user_preferences", JSON, NULLABLE, NO_DEFAULT),
    ("geo_location", JSON, NULLABLE, NO_DEFAULT),
    ("device_info", JSON, NULLABLE, NO_DEFAULT),
    ("bandwidth_usage", JSON, NULLABLE, NO_DEFAULT),
    ("error_count", INT, NULLABLE, "0"),
    ("last_error", TEXT, NULLABLE, NO_DEFAULT),
    ("created_at", TS, NOT_NULL, NO_DEFAULT),
    ("updated_at", TS, NOT_NULL, NO_DEFAULT),
]

REAL_TIME_EVENTS: list[tuple[str, Any, bool, str | None]] = [
    ("event_id", UUID, NOT_NULL, NO_DEFAULT),  # PRIMARY KEY
    ("event_type", varchar(100), NOT_NULL, NO_DEFAULT),
    (
        "event_category",
        enum("auction", "bid", "user", "system", "notification"),
        NOT_NULL,
        NO_DEFAULT,
    ),
    ("auction_id", UUID, NULLABLE, NO_DEFAULT),
    ("user_id", UUID, NULLABLE, NO_DEFAULT),
    ("bid_id", UUID, NULLABLE, NO_DEFAULT),
    ("item_id", UUID, NULLABLE, NO_DEFAULT),
    ("event_data", JSON, NOT_NULL, NO_DEFAULT),
    ("event_metadata", JSON, NULLABLE, NO_DEFAULT),
    ("priority", enum("low", "normal", "high", "critical"), NULLABLE, "normal"),
    ("visibility", enum("public", "authenticated", "private", "targeted"), NOT_NULL, NO_DEFAULT),
    ("target_audience", JSON, NULLABLE, NO_DEFAULT),
    ("broadcast_channels", JSON, NOT_NULL, NO_DEFAULT),
    ("sequence_number", BIGINT, NOT_NULL, NO_DEFAULT),  # nextval(): tested separately
    ("previous_event_id", UUID, NULLABLE, NO_DEFAULT),
    ("correlation_id", varchar(255), NULLABLE, NO_DEFAULT),
    ("causal_events", JSON, NULLABLE, NO_DEFAULT),
    ("expected_impacts", JSON, NULLABLE, NO_DEFAULT),
    ("generated_at", TS, NOT_NULL, NO_DEFAULT),
    ("published_at", TS, NULLABLE, NO_DEFAULT),
    ("expires_at", TS, NULLABLE, NO_DEFAULT),
    ("retention_policy", varchar(50), NULLABLE, "standard"),
    ("delivery_status", JSON, NULLABLE, NO_DEFAULT),
    ("ack_required", BOOL, NULLABLE, "false"),
    ("ack_timeout", INT, NULLABLE, "30"),
    ("acknowledgments", JSON, NULLABLE, NO_DEFAULT),
    ("tags", JSON, NULLABLE, NO_DEFAULT),
    ("created_at", TS, NOT_NULL, NO_DEFAULT),
]

SPEC_COLUMNS = {
    "notifications": NOTIFICATIONS,
    "websocket_connections": WEBSOCKET_CONNECTIONS,
    "real_time_events": REAL_TIME_EVENTS,
}

#: Columns Clarion adds beside the contract (documented in models/notifications.py).
EXTRA_COLUMNS = {
    "notifications": {
        "idempotency_key",
        "dispatched_at",
        "locale",
        "template_version",
        "email_layout_version",
        "email_html",
        "email_text",
    },
    "websocket_connections": set(),
    "real_time_events": set(),
}

PRIMARY_KEYS = {
    "notifications": ["notification_id"],
    "websocket_connections": ["connection_id"],
    "real_time_events": ["event_id"],
}

# (index name, table, columns)
SPEC_INDEXES = [
    ("idx_notifications_user", "notifications", ["user_id"]),
    ("idx_notifications_type", "notifications", ["notification_type"]),
    ("idx_notifications_category", "notifications", ["category"]),
    ("idx_notifications_priority", "notifications", ["priority"]),
    ("idx_notifications_status", "notifications", ["status"]),
    ("idx_notifications_scheduled", "notifications", ["scheduled_at"]),
    ("idx_notifications_read", "notifications", ["is_read"]),
    ("idx_notifications_auction", "notifications", ["auction_id"]),
    ("idx_notifications_time", "notifications", ["created_at"]),
    ("idx_notifications_expiry", "notifications", ["expires_at"]),
    ("idx_ws_connections_user", "websocket_connections", ["user_id"]),
    ("idx_ws_connections_session", "websocket_connections", ["session_id"]),
    ("idx_ws_connections_socket", "websocket_connections", ["socket_id"]),
    ("idx_ws_connections_status", "websocket_connections", ["connection_status"]),
    ("idx_ws_connections_heartbeat", "websocket_connections", ["last_heartbeat"]),
    ("idx_ws_connections_time", "websocket_connections", ["connected_at"]),
    ("idx_rt_events_type", "real_time_events", ["event_type"]),
    ("idx_rt_events_category", "real_time_events", ["event_category"]),
    ("idx_rt_events_auction", "real_time_events", ["auction_id"]),
    ("idx_rt_events_user", "real_time_events", ["user_id"]),
    ("idx_rt_events_sequence", "real_time_events", ["sequence_number"]),
    ("idx_rt_events_time", "real_time_events", ["generated_at"]),
    ("idx_rt_events_priority", "real_time_events", ["priority"]),
    ("idx_rt_events_visibility", "real_time_events", ["visibility"]),
    ("idx_rt_events_expiry", "real_time_events", ["expires_at"]),
    ("idx_rt_events_correlation", "real_time_events", ["correlation_id"]),
]

ALL_COLUMNS = [
    pytest.param(table, *spec, id=f"{table}.{spec[0]}")
    for table, specs in SPEC_COLUMNS.items()
    for spec in specs
]


def test_transcription_is_complete() -> None:
    """Guards the table above against a dropped or duplicated line."""
    assert len(NOTIFICATIONS) == 33
    assert len(WEBSOCKET_CONNECTIONS) == 29
    assert len(REAL_TIME_EVENTS) == 28
    for specs in SPEC_COLUMNS.values():
        names = [name for name, *_ in specs]
        assert len(names) == len(set(names))
    assert len(SPEC_INDEXES) == 26
    assert len({name for name, _, _ in SPEC_INDEXES}) == 26


# --- catalog helpers ----------------------------------------------------------------


def _columns(conn: Connection, table: str) -> dict[str, dict[str, Any]]:
    rows = conn.execute(
        sa.text(
            "SELECT column_name, data_type, udt_name, character_maximum_length,"
            " is_nullable, column_default"
            " FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = :t"
        ),
        {"t": table},
    ).mappings()
    return {row["column_name"]: dict(row) for row in rows}


def _actual_type(conn: Connection, column: dict[str, Any]) -> Any:
    if column["data_type"] == "USER-DEFINED":
        labels = conn.execute(
            sa.text(
                "SELECT e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid"
                " WHERE t.typname = :name AND t.typtype = 'e' ORDER BY e.enumsortorder"
            ),
            {"name": column["udt_name"]},
        ).scalars()
        return tuple(labels)
    if column["data_type"] == "character varying":
        return f"character varying({column['character_maximum_length']})"
    return column["data_type"]


# --- columns ---------------------------------------------------------------------------


@pytest.mark.parametrize("table", list(SPEC_COLUMNS))
def test_table_has_exactly_the_spec_columns(engine: Engine, table: str) -> None:
    with engine.connect() as conn:
        actual = set(_columns(conn, table))
    expected = {name for name, *_ in SPEC_COLUMNS[table]}
    assert expected - actual == set(), f"spec columns missing from {table}"
    assert actual - expected == EXTRA_COLUMNS[table], f"unexpected columns in {table}"


@pytest.mark.parametrize(("table", "column", "type_", "nullable", "default"), ALL_COLUMNS)
def test_column_matches_spec(
    engine: Engine,
    table: str,
    column: str,
    type_: Any,
    nullable: bool,
    default: str | None,
) -> None:
    with engine.connect() as conn:
        columns = _columns(conn, table)
        assert column in columns, f"{table}.{column} does not exist"
        info = columns[column]
        assert _actual_type(conn, info) == type_
        assert info["is_nullable"] == ("YES" if nullable else "NO")
        if default is not None:
            assert info["column_default"] is not None, f"{table}.{column} has no DEFAULT"
            # Evaluate the stored default expression: '1.0'::character varying -> 1.0.
            value = conn.execute(sa.text(f"SELECT ({info['column_default']})::text")).scalar()
            assert value == default


def test_enum_columns_use_postgresql_enum_types(engine: Engine) -> None:
    """Spec ENUMs are native enum types, not VARCHAR with a CHECK."""
    with engine.connect() as conn:
        for table, specs in SPEC_COLUMNS.items():
            columns = _columns(conn, table)
            for name, type_, *_ in specs:
                if isinstance(type_, tuple):
                    assert columns[name]["data_type"] == "USER-DEFINED", f"{table}.{name}"


# --- keys and indexes ----------------------------------------------------------------------


@pytest.mark.parametrize("table", list(PRIMARY_KEYS))
def test_primary_key(engine: Engine, table: str) -> None:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT tc.constraint_name, kcu.column_name"
                " FROM information_schema.table_constraints tc"
                " JOIN information_schema.key_column_usage kcu"
                "   ON kcu.constraint_name = tc.constraint_name"
                "  AND kcu.table_schema = tc.table_schema AND kcu.table_name = tc.table_name"
                " WHERE tc.table_schema = current_schema() AND tc.table_name = :t"
                "   AND tc.constraint_type = 'PRIMARY KEY'"
                " ORDER BY kcu.ordinal_position"
            ),
            {"t": table},
        ).all()
    assert [r.column_name for r in rows] == PRIMARY_KEYS[table]
    assert {r.constraint_name for r in rows} == {f"pk_{table}"}


@pytest.mark.parametrize(
    ("name", "table", "columns"), [pytest.param(*ix, id=ix[0]) for ix in SPEC_INDEXES]
)
def test_spec_index(engine: Engine, name: str, table: str, columns: list[str]) -> None:
    with engine.connect() as conn:
        found = conn.execute(
            sa.text(
                "SELECT tablename, indexdef FROM pg_indexes"
                " WHERE schemaname = current_schema() AND indexname = :n"
            ),
            {"n": name},
        ).one_or_none()
        assert found is not None, f"index {name} does not exist"
        assert found.tablename == table
        detail = conn.execute(
            sa.text(
                "SELECT array_agg(a.attname ORDER BY k.ord) AS columns,"
                " bool_or(x.indpred IS NOT NULL) AS partial"
                " FROM pg_index x"
                " JOIN pg_class i ON i.oid = x.indexrelid"
                " CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)"
                " JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum"
                " WHERE i.relname = :n"
            ),
            {"n": name},
        ).one()
    assert list(detail.columns) == columns, found.indexdef
    assert detail.partial is False, f"{name} is a partial index: {found.indexdef}"


# --- sequence_number --------------------------------------------------------------------------

SEQUENCE = "real_time_events_sequence_number_seq"

INSERT_EVENT = sa.text(
    "INSERT INTO real_time_events"
    " (event_type, event_category, event_data, visibility, broadcast_channels, generated_at)"
    " VALUES (:event_type, 'bid', '{\"bid_amount\": 150.0}', 'authenticated', '[\"ws\"]', now())"
    " RETURNING sequence_number"
)


def test_sequence_number_defaults_to_nextval_of_its_sequence(engine: Engine) -> None:
    with engine.connect() as conn:
        default = _columns(conn, "real_time_events")["sequence_number"]["column_default"]
        owned = conn.execute(
            sa.text("SELECT pg_get_serial_sequence('real_time_events', 'sequence_number')")
        ).scalar()
        kind = conn.execute(
            sa.text("SELECT relkind FROM pg_class WHERE relname = :n"), {"n": SEQUENCE}
        ).scalar()
        seq_type = conn.execute(
            sa.text("SELECT data_type FROM pg_sequences WHERE sequencename = :n"), {"n": SEQUENCE}
        ).scalar()
    assert default == f"nextval('{SEQUENCE}'::regclass)"
    assert owned == f"public.{SEQUENCE}"
    assert kind == "S"
    assert seq_type == "bigint"


def test_plain_insert_into_real_time_events_gets_spec_defaults(clean_db: Engine) -> None:
    with clean_db.begin() as conn:
        row = conn.execute(
            sa.text(
                "INSERT INTO real_time_events"
                " (event_type, event_category, event_data, visibility, broadcast_channels,"
                "  generated_at)"
                " VALUES ('auction_status_changed', 'auction', '{}', 'public', '[]', now())"
                " RETURNING event_id, sequence_number, priority::text AS priority,"
                " retention_policy, ack_required, ack_timeout, created_at"
            )
        ).one()
    assert isinstance(row.event_id, uuid.UUID)
    assert isinstance(row.sequence_number, int)
    assert row.sequence_number > 0
    assert row.priority == "normal"
    assert row.retention_policy == "standard"
    assert row.ack_required is False
    assert row.ack_timeout == 30
    assert row.created_at is not None


def test_plain_insert_into_websocket_connections_gets_spec_defaults(clean_db: Engine) -> None:
    with clean_db.begin() as conn:
        row = conn.execute(
            sa.text(
                "INSERT INTO websocket_connections"
                " (user_id, session_id, socket_id, connection_status, client_ip, user_agent,"
                "  connected_at, subscriptions, auction_subscriptions)"
                " VALUES (gen_random_uuid(), 's-1', 'sock-1', 'connected', '203.0.113.7',"
                "  'Mozilla/5.0', now(), '[\"auction:1\"]', '[]')"
                " RETURNING connection_id, protocol_version, compression_enabled,"
                " heartbeat_interval, reconnect_count, bytes_sent, bytes_received,"
                " messages_sent, messages_received, error_count, host(client_ip) AS ip,"
                " created_at, updated_at"
            )
        ).one()
    assert isinstance(row.connection_id, uuid.UUID)
    assert row.protocol_version == "1.0"
    assert row.compression_enabled is False
    assert row.heartbeat_interval == 30
    assert (row.reconnect_count, row.bytes_sent, row.bytes_received) == (0, 0, 0)
    assert (row.messages_sent, row.messages_received, row.error_count) == (0, 0, 0)
    assert row.ip == "203.0.113.7"
    assert row.created_at is not None
    assert row.updated_at is not None


def test_sequence_number_is_monotonic_under_concurrent_inserts(clean_db: Engine) -> None:
    threads_count, per_thread = 4, 50
    barrier = threading.Barrier(threads_count)
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        numbers: list[int] = []
        try:
            barrier.wait(timeout=30)
            for i in range(per_thread):
                # One transaction per insert.
                with clean_db.begin() as conn:
                    numbers.append(
                        conn.execute(INSERT_EVENT, {"event_type": f"t{index}-{i}"}).scalar_one()
                    )
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)
        results[index] = numbers

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []

    everything = [n for numbers in results.values() for n in numbers]
    assert len(everything) == threads_count * per_thread
    assert len(set(everything)) == len(everything), "duplicate sequence numbers"
    for index, numbers in results.items():
        assert numbers == sorted(numbers), f"thread {index} saw numbers go backwards"
        assert all(a < b for a, b in itertools.pairwise(numbers))

    with clean_db.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT event_type, sequence_number FROM real_time_events")
        ).all()
    assert sorted(n for _, n in stored) == sorted(everything)
    # Each row kept the number its INSERT returned, in insertion order per thread.
    by_type = dict(stored)
    for index, numbers in results.items():
        assert [by_type[f"t{index}-{i}"] for i in range(per_thread)] == numbers


# --- notifications: a plain INSERT gets the spec's defaults ------------------------------------


def test_plain_insert_into_notifications_with_only_required_columns(clean_db: Engine) -> None:
    user = uuid.uuid4()
    with clean_db.begin() as conn:
        row = conn.execute(
            sa.text(
                "INSERT INTO notifications"
                " (user_id, notification_type, category, priority, title, message,"
                "  delivery_channels)"
                " VALUES (:user, 'email', 'auction', 'normal', 'Auction started',"
                "  'Vintage Watch Collection is now live', '[\"email\", \"in_app\"]')"
                " RETURNING notification_id"
            ),
            {"user": user},
        ).one()
    with clean_db.connect() as conn:
        stored = conn.execute(
            sa.text(
                "SELECT notification_id, user_id, status::text AS status, delivery_attempts,"
                " max_attempts, is_read, is_archived, created_at, updated_at,"
                " delivery_channels, now() - created_at AS age"
                " FROM notifications"
            )
        ).one()
    assert isinstance(row.notification_id, uuid.UUID)
    assert stored.notification_id == row.notification_id
    assert stored.user_id == user
    assert stored.status == "pending"
    assert stored.delivery_attempts == 0
    assert stored.max_attempts == 3
    assert stored.is_read is False
    assert stored.is_archived is False
    assert stored.created_at is not None
    assert stored.created_at.tzinfo is not None
    assert stored.updated_at is not None
    assert stored.age.total_seconds() < 60
    assert stored.delivery_channels == ["email", "in_app"]


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("notification_type", "fax"),
        ("category", "spam"),
        ("priority", "critical"),
    ],
)
def test_notification_enums_reject_values_outside_the_spec(
    clean_db: Engine, column: str, value: str
) -> None:
    good = {"notification_type": "email", "category": "auction", "priority": "normal"}
    good[column] = value
    with pytest.raises(sa.exc.DataError), clean_db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO notifications"
                " (user_id, notification_type, category, priority, title, message,"
                "  delivery_channels)"
                f" VALUES (gen_random_uuid(), '{good['notification_type']}',"
                f" '{good['category']}', '{good['priority']}', 't', 'm', '[]')"
            )
        )
