"""The migrations on fresh databases: up, check, down to base, up again.

PostgreSQL (each test creates and drops its own database) and a SQLite file.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from testdb import create_database, drop_database

import models
from clarion import migrate
from clarion.core.db import make_engine
from clarion.core.settings import Settings, reset_settings
from clarion.seed import seed_templates

CLARION_TABLES = {
    "notifications",
    "websocket_connections",
    "real_time_events",
    "notification_templates",
    "user_addresses",
    "notification_deliveries",
    "delivery_attempts",
    "email_layouts",
    "user_locales",
    "api_keys",
    "idempotency_keys",
    "user_opt_outs",
    "user_quiet_hours",
    "collapse_windows",
    "rate_counters",
    "suppressions",
    "email_unsubscribes",
    "receipt_counts",
    "status_callbacks",
}
CLARION_ENUMS = {
    "attempt_outcome",
    "connection_status",
    "delivery_status",
    "event_category",
    "event_priority",
    "event_visibility",
    "notification_category",
    "notification_channel",
    "notification_priority",
    "notification_status",
}
SEQUENCE = "real_time_events_sequence_number_seq"
#: Backs the identity column delivery_attempts.attempt_id.
IDENTITY_SEQUENCE = "delivery_attempts_attempt_id_seq"
SEED_KEYS = {
    ("english", "new_bid"),
    ("english", "outbid"),
    ("penny", "bid_placed"),
    ("penny", "auction_ending"),
    ("system", "auction_started"),
    ("system", "auction_ended"),
}


@pytest.fixture(autouse=True)
def standalone_settings() -> Iterator[None]:
    """Standalone mode whatever the environment says (no platform tables here)."""
    reset_settings(Settings.from_env({}))
    yield
    reset_settings(None)


@pytest.fixture
def new_pg() -> Iterator[str]:
    url = create_database("clarion_mig")
    yield url
    drop_database(url)


def _engine(url: str) -> Engine:
    return make_engine(url, poolclass=sa.NullPool)


def _tables(url: str) -> set[str]:
    engine = _engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _templates(url: str) -> list[tuple[str, str]]:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return [
                (r.auction_type, r.event)
                for r in conn.execute(
                    sa.text("SELECT DISTINCT auction_type, event FROM notification_templates")
                )
            ]
    finally:
        engine.dispose()


def _seed_again(url: str) -> int:
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            return seed_templates(conn)
    finally:
        engine.dispose()


def _pg_objects(url: str) -> dict[str, set[str]]:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            enums = set(
                conn.execute(
                    sa.text(
                        "SELECT t.typname FROM pg_type t"
                        " JOIN pg_namespace n ON n.oid = t.typnamespace"
                        " WHERE t.typtype = 'e' AND n.nspname = 'public'"
                    )
                ).scalars()
            )
            sequences = set(
                conn.execute(
                    sa.text("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'")
                ).scalars()
            )
            functions = set(
                conn.execute(
                    sa.text(
                        "SELECT p.proname FROM pg_proc p"
                        " JOIN pg_namespace n ON n.oid = p.pronamespace"
                        " WHERE n.nspname = 'public'"
                    )
                ).scalars()
            )
    finally:
        engine.dispose()
    return {"enums": enums, "sequences": sequences, "functions": functions}


def test_revisions_form_one_chain_ending_at_the_head() -> None:
    """Every revision builds on the one before it (file order), and the last one is the head."""
    versions = Path(migrate.__file__).resolve().parent.parent / "migrations" / "versions"
    chain: list[tuple[str, str | None]] = []
    for path in sorted(versions.glob("[0-9][0-9][0-9][0-9]_*.py")):
        values = {}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign | ast.AnnAssign):
                target = node.targets[0] if isinstance(node, ast.Assign) else node.target
                if (
                    isinstance(target, ast.Name)
                    and target.id in ("revision", "down_revision")
                    and node.value is not None
                ):
                    values[target.id] = ast.literal_eval(node.value)
        chain.append((values["revision"], values["down_revision"]))
    assert chain[0][1] is None
    for (previous, _), (revision, down) in itertools.pairwise(chain):
        assert down == previous, f"{revision} builds on {down}, not on {previous}"
    assert migrate.head() == chain[-1][0]


def test_model_tables_are_the_clarion_tables() -> None:
    """Keeps CLARION_TABLES (what downgrade must remove) in step with the models."""
    assert set(models.metadata.tables) == CLARION_TABLES


@pytest.mark.postgres
def test_postgres_up_check_down_up(new_pg: str) -> None:
    assert migrate.current(new_pg) is None

    migrate.upgrade(new_pg)
    assert migrate.current(new_pg) == migrate.head()
    migrate.check(new_pg)  # raises AutogenerateDiffsDetected on any difference
    assert _tables(new_pg) >= CLARION_TABLES
    objects = _pg_objects(new_pg)
    assert objects["enums"] == CLARION_ENUMS
    assert objects["sequences"] == {SEQUENCE, IDENTITY_SEQUENCE}
    assert "clarion_notify_new_notification" in objects["functions"]
    assert sorted(_templates(new_pg)) == sorted(SEED_KEYS)

    migrate.downgrade(new_pg, "base")
    assert migrate.current(new_pg) is None
    assert _tables(new_pg) <= {"alembic_version"}
    objects = _pg_objects(new_pg)
    assert objects["enums"] == set()
    assert objects["sequences"] == set()
    assert objects["functions"] == set()

    migrate.upgrade(new_pg)
    assert migrate.current(new_pg) == migrate.head()
    migrate.check(new_pg)
    templates = _templates(new_pg)
    assert len(templates) == 6
    assert set(templates) == SEED_KEYS
    assert _seed_again(new_pg) == 0
    assert len(_templates(new_pg)) == 6


@pytest.mark.postgres
def test_postgres_upgrade_is_idempotent_at_head(new_pg: str) -> None:
    migrate.upgrade(new_pg)
    migrate.upgrade(new_pg)  # already at head: nothing to do, nothing seeded twice
    assert migrate.current(new_pg) == migrate.head()
    assert len(_templates(new_pg)) == 6


@pytest.mark.postgres
def test_postgres_downgrade_keeps_foreign_tables(new_pg: str) -> None:
    """Downgrade drops Clarion's objects only, not someone else's table in the database."""
    engine = _engine(new_pg)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE someone_elses (id integer PRIMARY KEY)")
    finally:
        engine.dispose()
    migrate.upgrade(new_pg)
    migrate.downgrade(new_pg, "base")
    assert _tables(new_pg) == {"alembic_version", "someone_elses"}


def test_sqlite_up_check_down_up(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'clarion.db'}"
    assert migrate.current(url) is None

    migrate.upgrade(url)
    assert migrate.current(url) == migrate.head()
    migrate.check(url)
    assert _tables(url) >= CLARION_TABLES
    assert sorted(_templates(url)) == sorted(SEED_KEYS)

    migrate.downgrade(url, "base")
    assert migrate.current(url) is None
    assert _tables(url) <= {"alembic_version"}

    migrate.upgrade(url)
    assert migrate.current(url) == migrate.head()
    migrate.check(url)
    assert len(_templates(url)) == 6
    assert _seed_again(url) == 0
    assert set(_templates(url)) == SEED_KEYS
