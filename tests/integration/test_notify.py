"""``clarion.notify`` against PostgreSQL: rendering, storage, transactions,
idempotency (also when two transactions race) and validation."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

import clarion
from clarion.core.errors import MissingVariableError, NotFoundError, TemplateError, ValidationError
from clarion.core.settings import Settings
from models import Notification, NotificationTemplate

pytestmark = pytest.mark.postgres

UTC = dt.UTC


def _now() -> dt.datetime:
    return dt.datetime.now(UTC)


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM notifications")).scalar_one()


def _row(engine: Engine, notification_id: uuid.UUID) -> sa.RowMapping:
    with engine.connect() as conn:
        return (
            conn.execute(
                sa.text(
                    "SELECT *, notification_type::text AS type_text, status::text AS status_text,"
                    " priority::text AS priority_text, category::text AS category_text"
                    " FROM notifications WHERE notification_id = :id"
                ),
                {"id": notification_id},
            )
            .mappings()
            .one()
        )


def _plain(**overrides: Any) -> dict[str, Any]:
    """Valid arguments of a notification without a template."""
    arguments: dict[str, Any] = {
        "title": "Auction started",
        "message": "Vintage Watch Collection is now live",
        "category": "auction",
        "channels": ["in_app"],
    }
    arguments.update(overrides)
    return arguments


# --- templates ---------------------------------------------------------------------------


def test_notify_from_template(session: Session, clean_db: Engine) -> None:
    user = uuid.uuid4()
    template_id = session.scalars(
        sa.select(NotificationTemplate.template_id).where(
            NotificationTemplate.auction_type == "english",
            NotificationTemplate.event == "outbid",
            NotificationTemplate.locale == "en",  # a user without a locale: the default
        )
    ).one()

    created = clarion.notify(
        user, template="english/outbid", template_data={"amount": "$150"}, session=session
    )
    session.commit()

    assert created.title == "You've been outbid"
    assert created.message == "Someone bid higher than your $150 bid"
    row = _row(clean_db, created.notification_id)
    assert row["user_id"] == user
    assert row["title"] == "You've been outbid"
    assert row["message"] == "Someone bid higher than your $150 bid"
    assert row["priority_text"] == "high"
    assert row["category_text"] == "bid"
    assert row["delivery_channels"] == ["in_app", "push", "email"]
    assert row["type_text"] == "in_app"
    assert row["template_id"] == template_id
    assert row["template_data"] == {"amount": "$150"}
    assert row["status_text"] == "pending"
    assert row["delivery_attempts"] == 0
    assert row["max_attempts"] == 3
    assert row["is_read"] is False
    assert row["is_archived"] is False
    assert row["created_at"] is not None
    assert row["updated_at"] is not None
    assert row["scheduled_at"] is None
    assert row["expires_at"] is None


def test_template_defaults_can_be_overridden(session: Session, clean_db: Engine) -> None:
    created = clarion.notify(
        uuid.uuid4(),
        template="penny/auction_ending",
        template_data={"auction_title": "Lot 7", "time_remaining": "30s"},
        priority="normal",
        channels=["sms"],
        category="marketing",
        session=session,
    )
    session.commit()
    row = _row(clean_db, created.notification_id)
    assert row["title"] == "Auction ending soon!"
    assert row["message"] == "Lot 7 ends in 30s"
    assert row["priority_text"] == "normal"
    assert row["delivery_channels"] == ["sms"]
    assert row["type_text"] == "sms"
    assert row["category_text"] == "marketing"


# --- title and message, every optional field ---------------------------------------------------


def test_notify_stores_every_optional_field(session: Session, clean_db: Engine) -> None:
    user, auction, bid, item = (uuid.uuid4() for _ in range(4))
    scheduled = _now() + dt.timedelta(hours=1)
    # Another offset: stored as the same instant.
    expires = (_now() + dt.timedelta(days=2)).astimezone(dt.timezone(dt.timedelta(hours=2)))
    rich = {"image": "https://cdn.example.com/watch.jpg", "buttons": [{"label": "Bid"}]}

    created = clarion.notify(
        str(user),
        title="New bid on Vintage Watch Collection",
        message="alice bid $150 on Rolex 1965",
        category="bid",
        priority="urgent",
        channels=["email", "sms", "email", "webhook"],
        scheduled_at=scheduled,
        expires_at=expires,
        auction_id=str(auction),
        bid_id=bid,
        item_id=item,
        action_url="https://auctions.example.com/a/123",
        action_label="View auction",
        rich_content=rich,
        tags=["english", "bid"],
        metadata={"source": "bidding-service", "attempt": 1},
        max_attempts=5,
        session=session,
    )
    session.commit()

    row = _row(clean_db, created.notification_id)
    assert row["user_id"] == user
    assert row["title"] == "New bid on Vintage Watch Collection"
    assert row["message"] == "alice bid $150 on Rolex 1965"
    assert row["category_text"] == "bid"
    assert row["priority_text"] == "urgent"
    # Duplicates dropped, order kept; the first channel is the notification_type.
    assert row["delivery_channels"] == ["email", "sms", "webhook"]
    assert row["type_text"] == "email"
    assert row["scheduled_at"] == scheduled
    assert row["expires_at"] == expires
    assert (row["auction_id"], row["bid_id"], row["item_id"]) == (auction, bid, item)
    assert row["action_url"] == "https://auctions.example.com/a/123"
    assert row["action_label"] == "View auction"
    assert row["rich_content"] == rich
    assert row["tags"] == ["english", "bid"]
    assert row["metadata"] == {"source": "bidding-service", "attempt": 1}
    assert row["max_attempts"] == 5
    assert row["template_id"] is None
    assert row["template_data"] is None
    assert row["idempotency_key"] is None
    assert row["status_text"] == "pending"
    # The returned object is the stored row.
    assert created.metadata_ == {"source": "bidding-service", "attempt": 1}
    assert created.user_id == user


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title", "x" * 255),
        ("action_url", "https://e.com/" + "a" * 486),
        ("action_label", "y" * 100),
    ],
)
def test_values_at_the_length_limit_are_accepted(
    session: Session, clean_db: Engine, field: str, value: str
) -> None:
    assert len(value) in (255, 500, 100)
    created = clarion.notify(uuid.uuid4(), session=session, **_plain(**{field: value}))
    session.commit()
    assert _row(clean_db, created.notification_id)[field] == value


def test_notify_without_session_commits_in_its_own_transaction(
    settings: Settings, clean_db: Engine
) -> None:
    created = clarion.notify(uuid.uuid4(), **_plain())
    row = _row(clean_db, created.notification_id)
    assert row["title"] == "Auction started"
    assert _count(clean_db) == 1


# --- the caller's transaction ------------------------------------------------------------------


def test_rollback_of_the_callers_session_leaves_no_row(session: Session, clean_db: Engine) -> None:
    clarion.notify(uuid.uuid4(), session=session, **_plain())
    # Flushed inside the caller's transaction: visible there, nowhere else.
    assert session.scalar(sa.select(sa.func.count()).select_from(Notification)) == 1
    assert _count(clean_db) == 0
    session.rollback()
    assert _count(clean_db) == 0


def test_commit_of_the_callers_session_leaves_one_row(session: Session, clean_db: Engine) -> None:
    created = clarion.notify(uuid.uuid4(), session=session, **_plain())
    assert _count(clean_db) == 0
    session.commit()
    assert _count(clean_db) == 1
    assert _row(clean_db, created.notification_id)["status_text"] == "pending"


# --- idempotency -------------------------------------------------------------------------------


def test_same_idempotency_key_returns_the_same_notification(
    settings: Settings, clean_db: Engine
) -> None:
    user = uuid.uuid4()
    first = clarion.notify(user, idempotency_key="order-42-outbid", **_plain())
    second = clarion.notify(
        user, idempotency_key="order-42-outbid", **_plain(title="A different title")
    )
    assert second.notification_id == first.notification_id
    assert second.title == "Auction started"
    assert _count(clean_db) == 1
    assert _row(clean_db, first.notification_id)["idempotency_key"] == "order-42-outbid"


def test_same_idempotency_key_twice_in_one_session(session: Session, clean_db: Engine) -> None:
    user = uuid.uuid4()
    first = clarion.notify(user, idempotency_key="k-1", session=session, **_plain())
    second = clarion.notify(user, idempotency_key="k-1", session=session, **_plain())
    session.commit()
    assert second.notification_id == first.notification_id
    assert _count(clean_db) == 1


def test_idempotency_key_of_another_user_is_refused(settings: Settings, clean_db: Engine) -> None:
    first = clarion.notify(uuid.uuid4(), idempotency_key="shared-key", **_plain())
    with pytest.raises(ValidationError) as info:
        clarion.notify(uuid.uuid4(), idempotency_key="shared-key", **_plain())
    assert info.value.field == "idempotency_key"
    assert _count(clean_db) == 1
    assert _row(clean_db, first.notification_id)["idempotency_key"] == "shared-key"


def _wait_for_lock_wait(engine: Engine, timeout: float = 10.0) -> None:
    """Until some backend of this database waits on a lock (B on A's index entry)."""
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    " AND query ILIKE 'INSERT INTO notifications%'"
                )
            ).scalar_one()
            conn.rollback()
            if waiting:
                return
            time.sleep(0.02)
    raise AssertionError("the second notify() never waited for the first transaction")


def _race(
    engine: Engine, finish_first: Callable[[Session], None]
) -> tuple[uuid.UUID, uuid.UUID, bool]:
    """A inserts with a key and holds its transaction; B calls notify with the same
    key in its own transaction; A then finishes. Returns (A's id, B's id, whether B
    had returned before A finished)."""
    user = uuid.uuid4()
    key = f"race-{uuid.uuid4()}"

    def second() -> uuid.UUID:
        with Session(engine, expire_on_commit=False) as b:
            created = clarion.notify(user, idempotency_key=key, session=b, **_plain())
            b.commit()
            return created.notification_id

    with Session(engine, expire_on_commit=False) as a, ThreadPoolExecutor(1) as pool:
        a_id = clarion.notify(user, idempotency_key=key, session=a, **_plain()).notification_id
        future = pool.submit(second)
        _wait_for_lock_wait(engine)
        returned_early = future.done()
        finish_first(a)
        b_id = future.result(timeout=30)
    return a_id, b_id, returned_early


def test_idempotency_race_both_get_the_first_notification(clean_db: Engine) -> None:
    a_id, b_id, returned_early = _race(clean_db, lambda a: a.commit())
    assert returned_early is False
    assert b_id == a_id
    assert _count(clean_db) == 1
    assert _row(clean_db, a_id)["notification_id"] == a_id


def test_idempotency_race_after_first_rolls_back_the_second_inserts(clean_db: Engine) -> None:
    a_id, b_id, returned_early = _race(clean_db, lambda a: a.rollback())
    assert returned_early is False
    assert b_id != a_id
    assert _count(clean_db) == 1
    assert _row(clean_db, b_id)["notification_id"] == b_id


def test_concurrent_notifies_with_one_key_make_one_row(
    settings: Settings, clean_db: Engine
) -> None:
    """Eight threads, one key, no coordination beyond a start barrier."""
    user, key = uuid.uuid4(), f"burst-{uuid.uuid4()}"
    barrier = threading.Barrier(8)

    def call() -> uuid.UUID:
        barrier.wait(timeout=10)
        return clarion.notify(user, idempotency_key=key, **_plain()).notification_id

    with ThreadPoolExecutor(8) as pool:
        ids = [f.result(timeout=30) for f in [pool.submit(call) for _ in range(8)]]
    assert len(set(ids)) == 1
    assert _count(clean_db) == 1


# --- validation --------------------------------------------------------------------------------

NAIVE = dt.datetime(2099, 1, 1, 12, 0)

BAD_INPUTS = [
    pytest.param({"channels": ["in_app", "carrier_pigeon"]}, "channels", id="unknown-channel"),
    pytest.param({"channels": []}, "channels", id="empty-channels"),
    pytest.param({"channels": "email"}, "channels", id="channels-a-string"),
    pytest.param({"priority": "critical"}, "priority", id="unknown-priority"),
    pytest.param({"category": "spam"}, "category", id="unknown-category"),
    pytest.param({"title": "x" * 256}, "title", id="title-too-long"),
    pytest.param({"title": "   "}, "title", id="title-blank"),
    pytest.param(
        {"action_url": "https://e.com/" + "a" * 487}, "action_url", id="action-url-too-long"
    ),
    pytest.param({"action_label": "y" * 101}, "action_label", id="action-label-too-long"),
    pytest.param(
        {
            "scheduled_at": dt.datetime(2099, 1, 2, tzinfo=UTC),
            "expires_at": dt.datetime(2099, 1, 1, tzinfo=UTC),
        },
        "expires_at",
        id="expires-before-scheduled",
    ),
    pytest.param(
        {"expires_at": dt.datetime(2000, 1, 1, tzinfo=UTC)}, "expires_at", id="expires-in-past"
    ),
    pytest.param({"scheduled_at": NAIVE}, "scheduled_at", id="naive-scheduled_at"),
    pytest.param({"expires_at": NAIVE}, "expires_at", id="naive-expires_at"),
    pytest.param({"user_id": "not-a-uuid"}, "user_id", id="user-id-not-uuid"),
    pytest.param({"user_id": 42}, "user_id", id="user-id-int"),
    pytest.param({"auction_id": "nope"}, "auction_id", id="auction-id-not-uuid"),
    pytest.param({"metadata": {"seen": {1, 2}}}, "metadata", id="metadata-set"),
    pytest.param({"metadata": {"score": float("nan")}}, "metadata", id="metadata-nan"),
    pytest.param({"rich_content": object()}, "rich_content", id="rich-content-object"),
    pytest.param({"max_attempts": 0}, "max_attempts", id="max-attempts-zero"),
    pytest.param({"category": None}, "category", id="category-missing"),
    pytest.param({"channels": None}, "channels", id="channels-missing"),
]


@pytest.mark.parametrize(("overrides", "field"), BAD_INPUTS)
def test_bad_input_is_refused_naming_the_argument(
    settings: Settings, clean_db: Engine, overrides: dict[str, Any], field: str
) -> None:
    arguments = {"user_id": uuid.uuid4(), **_plain(**overrides)}
    with pytest.raises(ValidationError) as info:
        clarion.notify(**arguments)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert _count(clean_db) == 0


@pytest.mark.parametrize(("overrides", "field"), BAD_INPUTS)
def test_bad_input_in_callers_session_leaves_no_row(
    session: Session, clean_db: Engine, overrides: dict[str, Any], field: str
) -> None:
    arguments = {"user_id": uuid.uuid4(), **_plain(**overrides)}
    with pytest.raises(ValidationError) as info:
        clarion.notify(session=session, **arguments)
    assert info.value.field == field
    session.commit()  # whatever was flushed would now be stored
    assert _count(clean_db) == 0


def test_unknown_template_is_not_found(settings: Settings, clean_db: Engine) -> None:
    with pytest.raises(NotFoundError, match="english/no_such_event"):
        clarion.notify(uuid.uuid4(), template="english/no_such_event", template_data={})
    assert _count(clean_db) == 0


def test_malformed_template_key_is_a_validation_error(settings: Settings, clean_db: Engine) -> None:
    with pytest.raises(ValidationError) as info:
        clarion.notify(uuid.uuid4(), template="outbid", template_data={"amount": "$1"})
    assert info.value.field == "template"
    assert _count(clean_db) == 0


def test_template_and_title_together_are_refused(settings: Settings, clean_db: Engine) -> None:
    with pytest.raises(ValidationError) as info:
        clarion.notify(
            uuid.uuid4(), template="english/outbid", template_data={"amount": "$1"}, title="t"
        )
    assert info.value.field == "template"
    assert _count(clean_db) == 0


def test_missing_template_variable_is_refused(settings: Settings, clean_db: Engine) -> None:
    with pytest.raises(TemplateError, match="'item_title' is missing"):
        clarion.notify(
            uuid.uuid4(),
            template="english/new_bid",
            template_data={"auction_title": "Lot 7", "bidder": "alice", "amount": "$150"},
        )
    assert _count(clean_db) == 0


def test_missing_template_variable_is_named(settings: Settings, clean_db: Engine) -> None:
    with pytest.raises(MissingVariableError) as info:
        clarion.notify(
            uuid.uuid4(),
            template="english/new_bid",
            template_data={"auction_title": "Lot 7", "bidder": "alice", "amount": "$150"},
        )
    assert info.value.name == "item_title"
    assert "item_title" in str(info.value)
    assert _count(clean_db) == 0
