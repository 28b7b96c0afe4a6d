"""The spec's foreign keys to the platform's tables, in both modes.

Standalone (the default): no constraint points at users, auctions, bids or
auction_items. Platform mode (``CLARION_PLATFORM_FOREIGN_KEYS=true``): the
migration creates the nine foreign keys of ``migrations/platform.py``, and
refuses to run when the platform's tables are missing.
"""

from __future__ import annotations

import gc
import sys
import uuid
import warnings
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from testdb import ADMIN_URL, create_database, drop_database

import clarion
from clarion import migrate
from clarion.core.db import make_engine
from clarion.core.settings import Settings, reset_settings
from migrations.platform import PLATFORM_FOREIGN_KEYS, PlatformTablesMissing, fk_name

pytestmark = pytest.mark.postgres

PLATFORM_DDL = (
    "CREATE TABLE users (user_id uuid PRIMARY KEY)",
    "CREATE TABLE auctions (auction_id uuid PRIMARY KEY)",
    "CREATE TABLE bids (bid_id uuid PRIMARY KEY)",
    "CREATE TABLE auction_items (item_id uuid PRIMARY KEY)",
)

#: The spec's foreign keys to platform tables, transcribed (table, column, referred table).
SPEC_PLATFORM_FOREIGN_KEYS = {
    ("notifications", "user_id", "users", "user_id"),
    ("notifications", "auction_id", "auctions", "auction_id"),
    ("notifications", "bid_id", "bids", "bid_id"),
    ("notifications", "item_id", "auction_items", "item_id"),
    ("websocket_connections", "user_id", "users", "user_id"),
    ("real_time_events", "auction_id", "auctions", "auction_id"),
    ("real_time_events", "user_id", "users", "user_id"),
    ("real_time_events", "bid_id", "bids", "bid_id"),
    ("real_time_events", "item_id", "auction_items", "item_id"),
}

FOREIGN_KEYS_SQL = sa.text(
    "SELECT c.conname AS name, t.relname AS table_name, a.attname AS column_name,"
    " r.relname AS referred_table, ra.attname AS referred_column, c.convalidated AS validated"
    " FROM pg_constraint c"
    " JOIN pg_class t ON t.oid = c.conrelid"
    " JOIN pg_class r ON r.oid = c.confrelid"
    " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]"
    " JOIN pg_attribute ra ON ra.attrelid = c.confrelid AND ra.attnum = c.confkey[1]"
    " WHERE c.contype = 'f'"
)


def _foreign_keys(engine: Engine) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(conn.execute(FOREIGN_KEYS_SQL))


def _platform_settings(url: str) -> Settings:
    return Settings.from_env({"CLARION_PLATFORM_FOREIGN_KEYS": "true", "CLARION_DATABASE_URL": url})


def _notify(session: Session, user: uuid.UUID, **kwargs: object) -> clarion.api.Notification:
    return clarion.notify(
        user,
        title="Auction started",
        message="Vintage Watch Collection is now live",
        category="auction",
        channels=["in_app"],
        session=session,
        **kwargs,  # type: ignore[arg-type]
    )


def test_platform_foreign_keys_list_is_the_spec() -> None:
    assert set(PLATFORM_FOREIGN_KEYS) == SPEC_PLATFORM_FOREIGN_KEYS
    assert len(PLATFORM_FOREIGN_KEYS) == 9


# --- standalone ---------------------------------------------------------------------------


@pytest.fixture
def standalone_db() -> Iterator[str]:
    url = create_database("clarion_standalone")
    reset_settings(Settings.from_env({"CLARION_DATABASE_URL": url}))
    try:
        migrate.upgrade(url)
        yield url
    finally:
        reset_settings(None)
        drop_database(url)


def test_standalone_has_no_platform_foreign_keys(standalone_db: str) -> None:
    engine = make_engine(standalone_db, poolclass=sa.NullPool)
    try:
        fks = _foreign_keys(engine)
        spec_tables = {"notifications", "websocket_connections", "real_time_events"}
        assert {(fk.table_name, fk.column_name, fk.referred_table) for fk in fks} == {
            ("notifications", "template_id", "notification_templates"),
            ("notification_deliveries", "notification_id", "notifications"),
            ("delivery_attempts", "delivery_id", "notification_deliveries"),
            ("status_callbacks", "notification_id", "notifications"),
        }
        template_fk = "fk_notifications_template_id_notification_templates"
        assert [fk.name for fk in fks if fk.table_name in spec_tables] == [template_fk]

        user, auction, bid, item = (uuid.uuid4() for _ in range(4))
        with Session(engine) as session:
            created = _notify(session, user, auction_id=auction, bid_id=bid, item_id=item)
            session.commit()
            notification_id = created.notification_id
        with engine.begin() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT user_id, auction_id, bid_id, item_id FROM notifications"
                    " WHERE notification_id = :id"
                ),
                {"id": notification_id},
            ).one()
            assert tuple(row) == (user, auction, bid, item)
            # The other spec tables accept unknown platform ids too.
            conn.execute(
                sa.text(
                    "INSERT INTO websocket_connections (user_id, session_id, socket_id,"
                    " connection_status, client_ip, user_agent, connected_at, subscriptions,"
                    " auction_subscriptions) VALUES (:u, 's', 'k', 'connected', '127.0.0.1',"
                    " 'ua', now(), '[]', '[]')"
                ),
                {"u": uuid.uuid4()},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO real_time_events (event_type, event_category, auction_id,"
                    " user_id, bid_id, item_id, event_data, visibility, broadcast_channels,"
                    " generated_at) VALUES ('bid_placed', 'bid', :a, :u, :b, :i, '{}',"
                    " 'public', '[]', now())"
                ),
                {"a": uuid.uuid4(), "u": uuid.uuid4(), "b": uuid.uuid4(), "i": uuid.uuid4()},
            )
    finally:
        engine.dispose()


def test_session_database_is_standalone(engine: Engine) -> None:
    """The shared test database (conftest's pg_url) was migrated standalone too."""
    referred = {fk.referred_table for fk in _foreign_keys(engine)}
    assert referred.isdisjoint({"users", "auctions", "bids", "auction_items"})


# --- platform mode ----------------------------------------------------------------------------


@pytest.fixture
def platform_db() -> Iterator[str]:
    url = create_database("clarion_platform")
    engine = make_engine(url, poolclass=sa.NullPool)
    try:
        with engine.begin() as conn:
            for ddl in PLATFORM_DDL:
                conn.exec_driver_sql(ddl)
        reset_settings(_platform_settings(url))
        yield url
    finally:
        engine.dispose()
        reset_settings(None)
        drop_database(url)


def test_platform_mode_creates_the_nine_foreign_keys(platform_db: str) -> None:
    migrate.upgrade(platform_db)
    engine = make_engine(platform_db, poolclass=sa.NullPool)
    try:
        fks = {fk.name: fk for fk in _foreign_keys(engine)}
        for table, column, referred, referred_column in SPEC_PLATFORM_FOREIGN_KEYS:
            name = fk_name(table, column, referred)
            assert name in fks, f"missing foreign key {name}"
            fk = fks[name]
            assert (fk.table_name, fk.column_name, fk.referred_table, fk.referred_column) == (
                table,
                column,
                referred,
                referred_column,
            )
            assert fk.validated is True
        platform = [
            fk
            for fk in fks.values()
            if fk.referred_table in {"users", "auctions", "bids", "auction_items"}
        ]
        assert len(platform) == 9
        # The models don't declare these foreign keys; the comparison must ignore them.
        migrate.check(platform_db)
    finally:
        engine.dispose()


def test_platform_mode_enforces_the_foreign_keys(platform_db: str) -> None:
    migrate.upgrade(platform_db)
    engine = make_engine(platform_db, poolclass=sa.NullPool)
    user, auction = uuid.uuid4(), uuid.uuid4()
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO users (user_id) VALUES (:u)"), {"u": user})
            conn.execute(sa.text("INSERT INTO auctions (auction_id) VALUES (:a)"), {"a": auction})

        with Session(engine) as session:
            with pytest.raises(sa.exc.IntegrityError, match="fk_notifications_user_id_users"):
                _notify(session, uuid.uuid4())
            session.rollback()
            with pytest.raises(sa.exc.IntegrityError, match="fk_notifications_auction_id_auctions"):
                _notify(session, user, auction_id=uuid.uuid4())
            session.rollback()

            created = _notify(session, user, auction_id=auction)
            session.commit()
            assert created.user_id == user

        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT user_id, auction_id FROM notifications")).all()
            assert [tuple(r) for r in rows] == [(user, auction)]
            with pytest.raises(
                sa.exc.IntegrityError, match="fk_websocket_connections_user_id_users"
            ):
                conn.execute(
                    sa.text(
                        "INSERT INTO websocket_connections (user_id, session_id, socket_id,"
                        " connection_status, client_ip, user_agent, connected_at,"
                        " subscriptions, auction_subscriptions) VALUES (:u, 's', 'k',"
                        " 'connected', '127.0.0.1', 'ua', now(), '[]', '[]')"
                    ),
                    {"u": uuid.uuid4()},
                )
            conn.rollback()
            with pytest.raises(sa.exc.IntegrityError, match="fk_real_time_events_bid_id_bids"):
                conn.execute(
                    sa.text(
                        "INSERT INTO real_time_events (event_type, event_category, bid_id,"
                        " event_data, visibility, broadcast_channels, generated_at)"
                        " VALUES ('bid_placed', 'bid', :b, '{}', 'public', '[]', now())"
                    ),
                    {"b": uuid.uuid4()},
                )
            conn.rollback()
    finally:
        engine.dispose()


def test_platform_mode_downgrade_to_base(platform_db: str) -> None:
    migrate.upgrade(platform_db)
    migrate.downgrade(platform_db, "base")
    assert migrate.current(platform_db) is None
    engine = make_engine(platform_db, poolclass=sa.NullPool)
    try:
        tables = set(sa.inspect(engine).get_table_names())
        assert tables == {"alembic_version", "users", "auctions", "bids", "auction_items"}
        assert _foreign_keys(engine) == []
    finally:
        engine.dispose()
    # And up again.
    migrate.upgrade(platform_db)
    engine = make_engine(platform_db, poolclass=sa.NullPool)
    try:
        referred = [fk.referred_table for fk in _foreign_keys(engine)]
        assert sum(r in {"users", "auctions", "bids", "auction_items"} for r in referred) == 9
    finally:
        engine.dispose()


@pytest.fixture
def bare_db() -> Iterator[str]:
    """A new database in platform mode, without the platform's tables."""
    url = create_database("clarion_noplatform")
    reset_settings(_platform_settings(url))
    try:
        yield url
    finally:
        reset_settings(None)
        drop_database(url)


@pytest.mark.parametrize(
    ("present", "missing"),
    [
        ((), "auction_items, auctions, bids, users"),
        ((0, 1), "auction_items, bids"),
    ],
    ids=["none", "users-and-auctions-only"],
)
def test_platform_mode_without_platform_tables_fails(
    bare_db: str, present: tuple[int, ...], missing: str
) -> None:
    engine = make_engine(bare_db, poolclass=sa.NullPool)
    try:
        with engine.begin() as conn:
            for index in present:
                conn.exec_driver_sql(PLATFORM_DDL[index])
        # The migration on a connection this test owns (see the leak test below for
        # migrate.upgrade(url), which opens its own).
        cfg = migrate.alembic_config(bare_db)
        with engine.connect() as conn:
            cfg.attributes["connection"] = conn
            with pytest.raises(PlatformTablesMissing) as info:
                command.upgrade(cfg, "head")
            conn.rollback()
        message = str(info.value)
        assert f"platform's tables {missing} do not exist" in message
        assert "CLARION_PLATFORM_FOREIGN_KEYS" in message
        # The failed migration left nothing half-done behind (transactional DDL).
        assert migrate.current(bare_db) is None
        tables = set(sa.inspect(engine).get_table_names())
        assert "notifications" not in tables
        assert "notification_templates" not in tables
    finally:
        engine.dispose()


def test_failed_migrate_upgrade_leaves_no_open_connection(
    bare_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = sa.make_url(bare_db).database
    unraisable: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda args: unraisable.append(repr(args.exc_value)))
    admin = make_engine(ADMIN_URL, poolclass=sa.NullPool)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(PlatformTablesMissing, match="auction_items, auctions, bids, users"):
                migrate.upgrade(bare_db)
            gc.collect()
        with admin.connect() as conn:
            open_backends = conn.execute(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
            ).scalar_one()
        leaks = unraisable + [str(w.message) for w in caught if w.category is ResourceWarning]
        assert (open_backends, leaks) == (0, [])
    finally:
        admin.dispose()
        # Don't let a leaked engine warn in some later test when it is collected.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            for obj in gc.get_objects():
                if isinstance(obj, Engine) and obj.url.database == name:
                    obj.dispose()
            gc.collect()
