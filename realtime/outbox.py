"""The event outbox: ``publish_event()`` writes a ``real_time_events`` row, then publishes it.

The row is the outbox. With the caller's ``session`` the row joins the
caller's transaction and goes to Redis only after that transaction commits
(a SQLAlchemy ``after_commit`` hook); nothing is published on rollback.
``published_at`` stays NULL until the publish succeeded, so an event whose
publisher crashed between commit and publish is published later by the
relay of any gateway (:func:`relay_unpublished`). A gateway drops an event
it has already seen, so the rare double publish of the relay is harmless.

Every gateway subscribes to the Redis channel ``CLARION_EVENTS_CHANNEL``
(default ``clarion:events``); the message is :func:`event_payload` as JSON
(:mod:`realtime.wire`). Only :func:`publish_event`, the entry point of
application code, reads the process-wide settings; the rest takes the
session or engine and an :class:`Outlet` (Redis client and channel).

``sequence_number`` is drawn by the event's INSERT itself, in commit order
per subscription key (:mod:`realtime.numbering`). Without a ``session`` that
INSERT runs in autocommit: numbering, inserting and committing are one
statement. ``published_at`` is set shortly after the publish, in batches
(:mod:`realtime.marks`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import time
import uuid
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, cast

import redis
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from clarion.core.db import get_engine
from clarion.core.errors import ValidationError
from clarion.core.parse import as_enum, as_json, as_optional_uuid, as_text, as_uuid
from clarion.core.settings import get_settings
from models.enums import EventCategory, EventPriority, Visibility
from models.realtime import RealTimeEvent
from realtime.grouping import GroupCommit
from realtime.marks import Marks
from realtime.numbering import bind_rows, lock_keys, numbered_insert
from realtime.wire import encode_event

log = logging.getLogger("clarion.events")

UUIDLike = uuid.UUID | str

# The documented limits of publish_event()'s arguments: texts in characters
# (bounded by their columns), JSON in bytes of compact UTF-8 JSON.
EVENT_TYPE_MAX = 100
CORRELATION_ID_MAX = 255
RETENTION_POLICY_MAX = 50
TOPIC_MAX = 200
MAX_TOPICS = 100
MAX_AUDIENCE = 10_000
MAX_CAUSAL_EVENTS = 100
MAX_ACK_TIMEOUT = 86_400
EVENT_DATA_MAX_BYTES = 64 * 1024
EVENT_METADATA_MAX_BYTES = 16 * 1024
EXPECTED_IMPACTS_MAX_BYTES = 16 * 1024
TAGS_MAX_BYTES = 4 * 1024

_PENDING_KEY = "clarion_pending_events"
_HOOKED_KEY = "clarion_events_hooked"


@dataclasses.dataclass(frozen=True, slots=True)
class EventSpec:
    """The arguments of :func:`publish_event`, as given (checked by :func:`record_event`)."""

    event_type: str
    event_data: Mapping[str, Any]
    category: EventCategory | str | None = None
    event_category: EventCategory | str | None = None
    visibility: Visibility | str = Visibility.PUBLIC
    priority: EventPriority | str = EventPriority.NORMAL
    auction_id: UUIDLike | None = None
    user_id: UUIDLike | None = None
    bid_id: UUIDLike | None = None
    item_id: UUIDLike | None = None
    event_metadata: Any = None
    target_audience: Sequence[UUIDLike] | None = None
    broadcast_channels: Sequence[str] | None = None
    previous_event_id: UUIDLike | None = None
    correlation_id: str | None = None
    causal_events: Sequence[UUIDLike] | None = None
    expected_impacts: Any = None
    expires_at: dt.datetime | None = None
    retention_policy: str = "standard"
    ack_required: bool = False
    ack_timeout: int = 30
    tags: Any = None


@dataclasses.dataclass(frozen=True, slots=True)
class Outlet:
    """Where events are published: a Redis client and the events channel."""

    client: redis.Redis
    channel: str


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

    With ``session`` the row is inserted in the caller's transaction and
    published after it commits; without, Clarion commits and publishes it
    before returning (in one statement and one commit with the events this
    process's other threads publish at the same moment; a database error
    of that statement is raised in each of them). Raises
    :class:`~clarion.core.errors.ValidationError` naming the bad argument.

    This is the entry point for application code: it reads the process-wide
    settings (database, Redis, events channel) and hands them down.
    """
    spec = EventSpec(
        event_type=event_type,
        event_data=event_data,
        category=category,
        event_category=event_category,
        visibility=visibility,
        priority=priority,
        auction_id=auction_id,
        user_id=user_id,
        bid_id=bid_id,
        item_id=item_id,
        event_metadata=event_metadata,
        target_audience=target_audience,
        broadcast_channels=broadcast_channels,
        previous_event_id=previous_event_id,
        correlation_id=correlation_id,
        causal_events=causal_events,
        expected_impacts=expected_impacts,
        expires_at=expires_at,
        retention_policy=retention_policy,
        ack_required=ack_required,
        ack_timeout=ack_timeout,
        tags=tags,
    )
    settings = get_settings()
    outlet = Outlet(redis_client(settings.redis_url), settings.events_channel)
    if session is None:
        return _record_and_publish(get_engine(settings.effective_database_url), spec, outlet)
    return record_event(session, spec, outlet)


def record_event(session: Session, spec: EventSpec, outlet: Outlet) -> RealTimeEvent:
    """Check ``spec``, insert its row in ``session`` and publish it to ``outlet`` after commit.

    The returned row is not added to ``session`` (it was inserted by one
    statement, which also drew its number): it holds every column as stored.
    """
    values, keys = event_values(spec)
    [row] = _insert(session.connection(), [values], keys)
    _after_commit(session, row, outlet)
    return row


def _record_and_publish(engine: Engine, spec: EventSpec, outlet: Outlet) -> RealTimeEvent:
    """Insert and commit the event, then publish it; concurrent calls share the work.

    On PostgreSQL the calls of this process's threads that arrive while a
    commit is in flight go in together (:mod:`realtime.grouping`): one
    INSERT of their rows in autocommit (numbering, inserting and committing
    in one statement), one Redis pipeline, one batch of marks.
    """
    values, keys = event_values(spec)
    if engine.dialect.name == "postgresql":
        return _GROUPS.run((engine, outlet), (values, keys))
    return _commit_batch((engine, outlet), [(values, keys)])[0]


def _commit_batch(
    where: Hashable, batch: Sequence[tuple[dict[str, Any], list[str]]]
) -> list[RealTimeEvent]:
    engine, outlet = cast(tuple[Engine, Outlet], where)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        rows = _insert(
            conn, [values for values, _keys in batch], [k for _v, ks in batch for k in ks]
        )
    published = publish_payloads(outlet, [event_payload(row) for row in rows])
    if published:
        MARKS.add(engine, published)
    return rows


#: This process's publishers without a session, grouped per (engine, outlet).
_GROUPS: GroupCommit[tuple[dict[str, Any], list[str]], RealTimeEvent] = GroupCommit(_commit_batch)


def _insert(
    conn: sa.Connection, batch: Sequence[dict[str, Any]], keys: Sequence[str]
) -> list[RealTimeEvent]:
    """Insert the events, numbered under the locks of ``keys`` (:mod:`realtime.numbering`)."""
    params = {**bind_rows(batch), "ordering_keys": lock_keys(keys)}
    result = conn.execute(numbered_insert(conn.dialect.name, len(batch)), params)
    numbers = {event_id: number for event_id, number in result}
    return [
        RealTimeEvent(**values, sequence_number=int(numbers[values["event_id"]]))
        for values in batch
    ]


def event_values(spec: EventSpec) -> tuple[dict[str, Any], list[str]]:
    """Check ``spec``; return its row's column values (all but the number) and ordering keys.

    Raises :class:`~clarion.core.errors.ValidationError` naming the bad argument.
    """
    event_type = as_text(spec.event_type, "event_type", limit=EVENT_TYPE_MAX)
    if not isinstance(spec.event_data, Mapping):
        raise ValidationError("event_data", "must be a JSON object")
    event_data = as_json(spec.event_data, "event_data", limit=EVENT_DATA_MAX_BYTES)
    metadata = _optional_json(spec.event_metadata, "event_metadata", EVENT_METADATA_MAX_BYTES)
    impacts = _optional_json(spec.expected_impacts, "expected_impacts", EXPECTED_IMPACTS_MAX_BYTES)
    tags = _optional_json(spec.tags, "tags", TAGS_MAX_BYTES)
    visibility = as_enum(Visibility, spec.visibility, "visibility")
    priority = as_enum(EventPriority, spec.priority, "priority")
    category_arg = spec.category if spec.category is not None else spec.event_category
    auction_id = as_optional_uuid(spec.auction_id, "auction_id")
    user_id = as_optional_uuid(spec.user_id, "user_id")
    category = (
        as_enum(EventCategory, category_arg, "category")
        if category_arg is not None
        else _default_category(event_type, auction_id)
    )
    audience = None
    if spec.target_audience is not None:
        targets = _sequence(spec.target_audience, "target_audience", MAX_AUDIENCE)
        audience = [str(as_uuid(u, "target_audience")) for u in targets]
    if visibility is Visibility.TARGETED and not audience:
        raise ValidationError("target_audience", "a targeted event needs at least one user id")
    if visibility is Visibility.PRIVATE and user_id is None:
        raise ValidationError("user_id", "a private event needs the user it belongs to")
    channels = (
        _sequence(spec.broadcast_channels, "broadcast_channels", MAX_TOPICS)
        if spec.broadcast_channels
        else [category.value]
    )
    for topic in channels:
        as_text(topic, "broadcast_channels", limit=TOPIC_MAX)
        if topic.startswith("auction:"):
            raise ValidationError(
                "broadcast_channels",
                "must be topic names (non-empty, not starting with 'auction:')",
            )
    correlation_id = (
        None
        if spec.correlation_id is None
        else as_text(spec.correlation_id, "correlation_id", limit=CORRELATION_ID_MAX)
    )
    retention_policy = as_text(
        spec.retention_policy, "retention_policy", limit=RETENTION_POLICY_MAX
    )
    ack_timeout = spec.ack_timeout
    if isinstance(ack_timeout, bool) or not isinstance(ack_timeout, int):
        raise ValidationError("ack_timeout", "must be a positive number of seconds")
    if not 0 < ack_timeout <= MAX_ACK_TIMEOUT:
        raise ValidationError("ack_timeout", f"must be between 1 and {MAX_ACK_TIMEOUT} seconds")
    expires_at = spec.expires_at
    if expires_at is not None:
        if not isinstance(expires_at, dt.datetime):
            raise ValidationError(
                "expires_at", f"expected a datetime, got {type(expires_at).__name__}"
            )
        if expires_at.tzinfo is None or expires_at.utcoffset() is None:
            raise ValidationError("expires_at", "must be timezone-aware")
    causal = (
        None
        if spec.causal_events is None
        else _sequence(spec.causal_events, "causal_events", MAX_CAUSAL_EVENTS)
    )
    now = dt.datetime.now(dt.UTC)
    values: dict[str, Any] = dict(
        event_id=uuid.uuid4(),
        event_type=event_type,
        event_category=category,
        auction_id=auction_id,
        user_id=user_id,
        bid_id=as_optional_uuid(spec.bid_id, "bid_id"),
        item_id=as_optional_uuid(spec.item_id, "item_id"),
        event_data=event_data,
        event_metadata=metadata,
        priority=priority,
        visibility=visibility,
        target_audience=audience,
        broadcast_channels=channels,
        previous_event_id=as_optional_uuid(spec.previous_event_id, "previous_event_id"),
        correlation_id=correlation_id,
        causal_events=[str(as_uuid(c, "causal_events")) for c in causal] if causal else None,
        expected_impacts=impacts,
        generated_at=now,
        expires_at=expires_at,
        retention_policy=retention_policy,
        ack_required=bool(spec.ack_required),
        ack_timeout=ack_timeout,
        tags=tags,
        created_at=now,
        published_at=None,
    )
    return values, _ordering_keys(auction_id, spec, channels)


def _optional_json(value: object, field: str, limit: int) -> Any:
    return None if value is None else as_json(value, field, limit=limit)


def _sequence(value: object, field: str, limit: int) -> list[Any]:
    """``value`` as a list of at most ``limit`` items (a string is not a list of letters)."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ValidationError(field, f"expected a list, got {type(value).__name__}")
    if len(value) > limit:
        raise ValidationError(field, f"has {len(value)} items; the limit is {limit}")
    return list(value)


def _ordering_keys(
    auction_id: uuid.UUID | None, spec: EventSpec, channels: Sequence[str]
) -> list[str]:
    """The subscription keys whose numbers must commit in order for this event.

    The auction's key and the topics the caller named. The default topic (the
    category) of an event that has an auction is left out: every ``bid_placed``
    of every auction shares it, and locking it made the publishers of
    different auctions wait for each other's commits. Such an event is still
    delivered live to the category's subscribers; a resume in order is
    promised on its auction's key (and on any topic given explicitly).
    """
    if auction_id is None:
        return list(channels)
    keys = [f"auction:{auction_id}"]
    if spec.broadcast_channels:
        keys.extend(channels)
    return keys


def _after_commit(session: Session, row: RealTimeEvent, outlet: Outlet) -> None:
    session.info.setdefault(_PENDING_KEY, []).append((outlet, event_payload(row)))
    if session.info.get(_HOOKED_KEY):
        return
    session.info[_HOOKED_KEY] = True
    sa_event.listen(session, "after_commit", _publish_pending)
    sa_event.listen(session, "after_rollback", _forget_pending)


def _forget_pending(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


def _publish_pending(session: Session) -> None:
    pending: list[tuple[Outlet, dict[str, Any]]] | None = session.info.pop(_PENDING_KEY, None)
    if not pending:
        return
    engine = session.get_bind()
    assert isinstance(engine, Engine | sa.Connection)
    bind = engine.engine if isinstance(engine, sa.Connection) else engine
    # Events of one transaction normally share one outlet; group them to keep
    # one pipeline per outlet, in the order they were recorded.
    by_outlet: dict[tuple[int, str], tuple[Outlet, list[dict[str, Any]]]] = {}
    for outlet, payload in pending:
        key = (id(outlet.client), outlet.channel)
        by_outlet.setdefault(key, (outlet, []))[1].append(payload)
    # The caller has committed: nothing here may raise. A failed publish
    # leaves published_at NULL and the relay publishes the event later.
    try:
        for outlet, payloads in by_outlet.values():
            published = publish_payloads(outlet, payloads)
            if published:
                MARKS.add(bind, published)
    except Exception:
        log.warning(
            "publishing %d event(s) after commit failed; the relay will",
            len(pending),
            exc_info=True,
        )


def publish_payloads(outlet: Outlet, payloads: Sequence[dict[str, Any]]) -> list[str]:
    """Publish payloads to the events channel; return the ids that were published."""
    done: list[str] = []
    try:
        pipe = outlet.client.pipeline(transaction=False)
        for payload in payloads:
            # published_at: when it left for Redis (the gateways' fan-out record reads it)
            pipe.publish(outlet.channel, encode_event({**payload, "published_at": time.time()}))
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


#: The process's queue of events to mark published (:mod:`realtime.marks`).
MARKS = Marks(mark_published)


def relay_unpublished(
    engine: Engine, outlet: Outlet, *, older_than: float, window: float, limit: int = 500
) -> int:
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
        published = publish_payloads(outlet, [event_payload(r) for r in rows])
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
def redis_client(url: str) -> redis.Redis:
    """The process's shared synchronous Redis client for ``url`` (publishers, the relay)."""
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def _default_category(event_type: str, auction_id: uuid.UUID | None) -> EventCategory:
    first = event_type.split("_", 1)[0]
    try:
        return EventCategory(first)
    except ValueError:
        return EventCategory.AUCTION if auction_id is not None else EventCategory.SYSTEM
