"""Real-time events: ``publish_event()`` writes a ``real_time_events`` row, then publishes it.

The row is the outbox. With the caller's ``session`` the row joins the
caller's transaction and goes to Redis only after that transaction commits
(a SQLAlchemy ``after_commit`` hook); nothing is published on rollback.
``published_at`` stays NULL until the publish succeeded, so an event whose
publisher crashed between commit and publish is published later by the
relay of any gateway (:func:`relay_unpublished`). A gateway drops an event
it has already seen, so the rare double publish of the relay is harmless.

Every gateway subscribes to the Redis channel ``CLARION_EVENTS_CHANNEL``
(default ``clarion:events``); the message is :func:`event_payload` as JSON.

``sequence_number`` comes from the PostgreSQL sequence
``real_time_events_sequence_number_seq``; on SQLite (the embedded default,
which has no sequences) it is ``max + 1`` read inside the inserting
transaction, which SQLite's single writer serialises.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import redis
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from clarion.core.db import get_engine, is_postgres, session_factory
from clarion.core.errors import ValidationError
from clarion.core.parse import as_enum, as_optional_uuid, as_uuid
from clarion.core.settings import get_settings
from models.enums import EventCategory, EventPriority, Visibility
from models.realtime import EVENT_SEQUENCE, RealTimeEvent

log = logging.getLogger("clarion.events")

UUIDLike = uuid.UUID | str

_PENDING_KEY = "clarion_pending_events"
_HOOKED_KEY = "clarion_events_hooked"


def publish_event(
    event_type: str,
    *,
    event_data: Mapping[str, Any],
    category: EventCategory | str | None = None,
    event_category: EventCategory | str | None = None,
    visibility: Visibility | str = Visibility.PUBLIC,
    priority: EventPriority | str = EventPriority.NORMAL,
    auction_id: UUIDLike | None = None,
    user_id: UUIDLike | None = None,
    bid_id: UUIDLike | None = None,
    item_id: UUIDLike | None = None,
    event_metadata: Any = None,
    target_audience: Sequence[UUIDLike] | None = None,
    broadcast_channels: Sequence[str] | None = None,
    previous_event_id: UUIDLike | None = None,
    correlation_id: str | None = None,
    causal_events: Sequence[UUIDLike] | None = None,
    expected_impacts: Any = None,
    expires_at: dt.datetime | None = None,
    retention_policy: str = "standard",
    ack_required: bool = False,
    ack_timeout: int = 30,
    tags: Any = None,
    session: Session | None = None,
) -> RealTimeEvent:
    """Record a real-time event and publish it to every gateway; return its row.

    ``category`` (alias ``event_category``) defaults from the event type's
    first word when that names a category (``bid_placed`` -> bid,
    ``auction_status_changed`` -> auction), else ``auction`` when
    ``auction_id`` is given, else ``system``. ``broadcast_channels`` are the
    topics clients subscribe to; default ``[category]``. ``target_audience``
    is the list of user ids of a ``targeted`` event; a ``private`` event
    needs ``user_id``.

    With ``session`` the row is flushed in the caller's transaction and
    published after it commits; without, Clarion commits and publishes it
    at once. Raises :class:`~clarion.core.errors.ValidationError` naming the bad
    argument.
    """
    if session is None:
        with session_factory(get_engine(get_settings().effective_database_url))() as own:
            with own.begin():
                row = _insert(own, **_strip(locals()))
            return row
    return _insert(session, **_strip(locals()))


def _strip(arguments: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in arguments.items() if k not in ("session", "own", "row")}


def _insert(session: Session, **a: Any) -> RealTimeEvent:
    event_type = a["event_type"]
    if not isinstance(event_type, str) or not event_type or len(event_type) > 100:
        raise ValidationError("event_type", "must be a non-empty string of at most 100 characters")
    if not isinstance(a["event_data"], Mapping):
        raise ValidationError("event_data", "must be a JSON object")
    visibility = as_enum(Visibility, a["visibility"], "visibility")
    priority = as_enum(EventPriority, a["priority"], "priority")
    category_arg = a["category"] if a["category"] is not None else a["event_category"]
    auction_id = as_optional_uuid(a["auction_id"], "auction_id")
    user_id = as_optional_uuid(a["user_id"], "user_id")
    category = (
        as_enum(EventCategory, category_arg, "category")
        if category_arg is not None
        else _default_category(event_type, auction_id)
    )
    audience = None
    if a["target_audience"] is not None:
        if isinstance(a["target_audience"], str | bytes) or not isinstance(
            a["target_audience"], Sequence
        ):
            raise ValidationError("target_audience", "must be a list of user ids")
        audience = [str(as_uuid(u, "target_audience")) for u in a["target_audience"]]
    if visibility is Visibility.TARGETED and not audience:
        raise ValidationError("target_audience", "a targeted event needs at least one user id")
    if visibility is Visibility.PRIVATE and user_id is None:
        raise ValidationError("user_id", "a private event needs the user it belongs to")
    channels = list(a["broadcast_channels"] or [category.value])
    if not all(isinstance(c, str) and c and not c.startswith("auction:") for c in channels):
        raise ValidationError(
            "broadcast_channels", "must be topic names (non-empty, not starting with 'auction:')"
        )
    ack_timeout = a["ack_timeout"]
    if not isinstance(ack_timeout, int) or ack_timeout <= 0:
        raise ValidationError("ack_timeout", "must be a positive number of seconds")
    expires_at = a["expires_at"]
    if expires_at is not None and expires_at.tzinfo is None:
        raise ValidationError("expires_at", "must be timezone-aware")
    causal = a["causal_events"]
    now = dt.datetime.now(dt.UTC)
    row = RealTimeEvent(
        event_id=uuid.uuid4(),
        event_type=event_type,
        event_category=category,
        auction_id=auction_id,
        user_id=user_id,
        bid_id=as_optional_uuid(a["bid_id"], "bid_id"),
        item_id=as_optional_uuid(a["item_id"], "item_id"),
        event_data=dict(a["event_data"]),
        event_metadata=a["event_metadata"],
        priority=priority,
        visibility=visibility,
        target_audience=audience,
        broadcast_channels=channels,
        sequence_number=_next_sequence(
            session, ([f"auction:{auction_id}"] if auction_id else []) + channels
        ),
        previous_event_id=as_optional_uuid(a["previous_event_id"], "previous_event_id"),
        correlation_id=a["correlation_id"],
        causal_events=[str(as_uuid(c, "causal_events")) for c in causal] if causal else None,
        expected_impacts=a["expected_impacts"],
        generated_at=now,
        expires_at=expires_at,
        retention_policy=a["retention_policy"],
        ack_required=bool(a["ack_required"]),
        ack_timeout=ack_timeout,
        tags=a["tags"],
        created_at=now,
    )
    session.add(row)
    session.flush()
    _after_commit(session, row)
    return row


def _next_sequence(session: Session, keys: Sequence[str]) -> int:
    """The event's sequence number, in commit order for each subscription key.

    A sequence hands out numbers in call order, but transactions commit in
    any order: a client resuming after number 11 would never see a 10 that
    committed later. So, on PostgreSQL, the number is taken under a
    transaction-level advisory lock per subscription key (its auction, its
    topics, in a fixed order: no deadlock between publishers): a second
    event for the same key waits until the first one's transaction ends.
    Publishers of one auction or topic take turns; events with no key in
    common do not wait for each other.
    """
    if is_postgres(session):
        for key in sorted(set(keys)):
            session.execute(
                sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                {"key": f"clarion:events:{key}"},
            )
        return int(session.execute(EVENT_SEQUENCE.next_value()).scalar_one())
    current = session.scalar(sa.select(sa.func.max(RealTimeEvent.sequence_number)))
    return int(current or 0) + 1


def _after_commit(session: Session, row: RealTimeEvent) -> None:
    session.info.setdefault(_PENDING_KEY, []).append(event_payload(row))
    if session.info.get(_HOOKED_KEY):
        return
    session.info[_HOOKED_KEY] = True
    sa_event.listen(session, "after_commit", _publish_pending)
    sa_event.listen(session, "after_rollback", _forget_pending)


def _forget_pending(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


def _publish_pending(session: Session) -> None:
    pending = session.info.pop(_PENDING_KEY, None)
    if not pending:
        return
    engine = session.get_bind()
    assert isinstance(engine, Engine | sa.Connection)
    bind = engine.engine if isinstance(engine, sa.Connection) else engine
    # The caller has committed: nothing here may raise. A failed publish
    # leaves published_at NULL and the relay publishes the event later.
    try:
        published = publish_payloads(pending)
        if published:
            mark_published(bind, published)
    except Exception:
        log.warning(
            "publishing %d event(s) after commit failed; the relay will",
            len(pending),
            exc_info=True,
        )


def publish_payloads(payloads: Sequence[dict[str, Any]]) -> list[str]:
    """Publish payloads to the events channel; return the ids that were published."""
    settings = get_settings()
    client = _redis(settings.redis_url)
    done: list[str] = []
    try:
        pipe = client.pipeline(transaction=False)
        for payload in payloads:
            pipe.publish(settings.events_channel, json.dumps(payload))
        pipe.execute()
        done = [p["event_id"] for p in payloads]
    except redis.RedisError as exc:
        log.warning("event publish to Redis failed: %s", type(exc).__name__)
    return done


def mark_published(engine: Engine, event_ids: Sequence[str]) -> None:
    """Set ``published_at`` on the given events (those still unmarked)."""
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.update(RealTimeEvent)
            .where(
                RealTimeEvent.event_id.in_([uuid.UUID(e) for e in event_ids]),
                RealTimeEvent.published_at.is_(None),
            )
            .values(published_at=now)
        )


def relay_unpublished(engine: Engine, *, older_than: float, window: float, limit: int = 500) -> int:
    """Publish events committed but still unpublished after ``older_than`` seconds.

    Rows are claimed ``FOR UPDATE SKIP LOCKED`` so that several gateways
    share the work; events older than the history ``window`` or expired are
    left alone (no client could still use them). Returns how many it published.
    """
    now = dt.datetime.now(dt.UTC)
    e = RealTimeEvent
    with Session(engine) as s, s.begin():
        rows = s.scalars(
            sa.select(e)
            .where(
                e.published_at.is_(None),
                e.generated_at < now - dt.timedelta(seconds=older_than),
                e.generated_at > now - dt.timedelta(seconds=window),
                sa.or_(e.expires_at.is_(None), e.expires_at > now),
            )
            .order_by(e.sequence_number)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        if not rows:
            return 0
        published = publish_payloads([event_payload(r) for r in rows])
        if published:
            s.execute(
                sa.update(e)
                .where(e.event_id.in_([uuid.UUID(i) for i in published]))
                .values(published_at=now)
                .execution_options(synchronize_session=False)
            )
        return len(published)


def event_payload(row: RealTimeEvent) -> dict[str, Any]:
    """The JSON message a gateway receives for ``row`` (all it needs to route it)."""

    def iso(value: dt.datetime | None) -> str | None:
        if value is None:
            return None
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()

    def text(value: object) -> str | None:
        return None if value is None else str(value)

    return {
        "event_id": str(row.event_id),
        "seq": int(row.sequence_number),
        "event_type": row.event_type,
        "category": EventCategory(row.event_category).value,
        "auction_id": text(row.auction_id),
        "user_id": text(row.user_id),
        "bid_id": text(row.bid_id),
        "item_id": text(row.item_id),
        "data": row.event_data,
        "metadata": row.event_metadata,
        "priority": EventPriority(row.priority or EventPriority.NORMAL).value,
        "visibility": Visibility(row.visibility).value,
        "target_audience": row.target_audience,
        "channels": row.broadcast_channels,
        "previous_event_id": text(row.previous_event_id),
        "correlation_id": row.correlation_id,
        "causal_events": row.causal_events,
        "generated_at": iso(row.generated_at),
        "expires_at": iso(row.expires_at),
        "ack_required": bool(row.ack_required),
        "ack_timeout": int(row.ack_timeout or 30),
    }


@functools.cache
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def _default_category(event_type: str, auction_id: uuid.UUID | None) -> EventCategory:
    first = event_type.split("_", 1)[0]
    try:
        return EventCategory(first)
    except ValueError:
        return EventCategory.AUCTION if auction_id is not None else EventCategory.SYSTEM
