"""The workers' hot path in batches: take deliveries for sending, write outcomes back.

The only code that moves a delivery through ``sending`` to its outcome, and
the only code that disables a user's address. Every function works on many
deliveries in the caller's transaction with a fixed number of statements, so
that a worker process can coalesce the database work of all its threads into
one transaction (``workers.batching``, group commit): the cost per delivery
falls with the load instead of rising with it. The single-delivery methods of
:class:`WriteBackStore` call these with one item: there is one code path, in
one idiom (SQLAlchemy Core on a connection; the ORM session cost more CPU
than the statements here).

Idempotence: every take (queued -> sending) writes a fresh ``take_token``
on the delivery and hands it out in the :class:`SendJob`. The write-back
applies only to deliveries whose token still matches, and clears it. A
write-back retried after its COMMIT succeeded but the acknowledgement was
lost (the connection dropped after commit) therefore finds no match and
changes nothing: no second attempt row, no attempt counted twice. A genuine
later attempt comes from a later take, with a token of its own.

Lock order, to stay free of deadlocks between concurrent batches: a batch
locks the notifications it rolls up in ``notification_id`` order
(:func:`models.rollup.lock_notifications`) before it touches their deliveries.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from clarion.core.clock import as_utc, utcnow
from models import arrays
from models.callbacks import CallbackEvent, record_events
from models.enums import AttemptOutcome, Channel, DeliveryStatus, NotificationStatus
from models.notifications import (
    Delivery,
    DeliveryAttempt,
    Notification,
    NotificationTemplate,
    UserAddress,
)
from models.rollup import NotificationChange, lock_notifications, roll_up
from models.suppressions import active_suppressions, suppress
from models.unsubscribes import unsubscribed

__all__ = [
    "AddressRow",
    "AttemptRecord",
    "SendJob",
    "WriteBack",
    "WriteBackStore",
    "take_for_sending",
    "write_back",
]

log = logging.getLogger("clarion.writeback")

_D: sa.Table = Delivery.__table__  # type: ignore[assignment]
_N: sa.Table = Notification.__table__  # type: ignore[assignment]
_T: sa.Table = NotificationTemplate.__table__  # type: ignore[assignment]
_A: sa.Table = DeliveryAttempt.__table__  # type: ignore[assignment]
_U: sa.Table = UserAddress.__table__  # type: ignore[assignment]

# The hot statements are built once, with expanding IN parameters: building
# them per batch cost more CPU (a coercion per list element, a cache-key walk)
# than running them.
_TAKE = (
    sa.update(_D)
    .where(
        _D.c.delivery_id.in_(sa.bindparam("ids", expanding=True)),
        _D.c.status == DeliveryStatus.QUEUED,
    )
    .values(
        status=DeliveryStatus.SENDING,
        lease_expires_at=sa.bindparam("lease"),
        take_token=sa.bindparam("token"),
        updated_at=sa.bindparam("now"),
    )
    .returning(
        _D.c.delivery_id,
        _D.c.notification_id,
        _D.c.channel,
        _D.c.attempts,
        _D.c.throttles,
        _D.c.provider,
    )
)
_NOTES = (
    sa.select(
        _N.c.notification_id,
        _N.c.user_id,
        _N.c.status,
        _N.c.expires_at,
        _N.c.max_attempts,
        _N.c.title,
        _N.c.message,
        _N.c.action_url,
        _N.c.action_label,
        _N.c.category,
        _N.c.priority,
        _N.c.auction_id,
        _T.c.body_format,
        _T.c.collapsible,
        _T.c.auction_type,
        _T.c.event,
    )
    .select_from(_N.outerjoin(_T, _T.c.template_id == _N.c.template_id))
    .where(_N.c.notification_id.in_(sa.bindparam("ids", expanding=True)))
)
# The rendered email, read only for email takes: push and webhook deliveries
# of the same notification never carry the HTML through the hot path.
_EMAILS = sa.select(_N.c.notification_id, _N.c.email_html, _N.c.email_text).where(
    _N.c.notification_id.in_(sa.bindparam("ids", expanding=True)),
    _N.c.email_html.is_not(None),
)
_DELIVERY_COLUMNS = (
    "status",
    "attempts",
    "throttles",
    "provider",
    "provider_message_id",
    "provider_response",
    "last_error",
    "lease_expires_at",
    "next_attempt_at",
    "sent_at",
    "delivered_at",
    "failed_at",
    "dead_lettered_at",
    "updated_at",
)
# The takes a batch of write-backs may still apply: locked, so that no
# concurrent take or write-back changes a token between this read and the
# UPDATE below.
_TOKENS = (
    sa.select(_D.c.delivery_id, _D.c.take_token)
    .where(_D.c.delivery_id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(_D.c.delivery_id)
    .with_for_update()
)
_WRITE_DELIVERY = (
    sa.update(_D)
    .where(
        _D.c.delivery_id == sa.bindparam("b_delivery_id"),
        _D.c.take_token == sa.bindparam("b_take_token"),
    )
    .values(
        {
            **{c: sa.bindparam(f"b_{c}") for c in _DELIVERY_COLUMNS},
            "take_token": None,
            "message_id": sa.func.coalesce(
                sa.bindparam("b_message_id", type_=sa.String), _D.c.message_id
            ),
        }
    )
)
_INSERT_ATTEMPTS = sa.insert(_A)

_ACCEPTED = (AttemptOutcome.SENT, AttemptOutcome.DELIVERED)


@dataclasses.dataclass(frozen=True, slots=True)
class AddressRow:
    address_id: uuid.UUID
    address: str
    secret: str | None = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True, slots=True)
class SendJob:
    """What a worker needs to send one delivery, read when it took the delivery."""

    delivery_id: uuid.UUID
    notification_id: uuid.UUID
    #: The take that handed this job out; its write-back applies once.
    take_token: uuid.UUID
    user_id: uuid.UUID
    channel: Channel
    attempts: int
    throttles: int
    max_attempts: int
    title: str
    message: str
    html: bool
    action_url: str | None
    action_label: str | None
    category: str
    priority: str
    auction_id: uuid.UUID | None
    addresses: tuple[AddressRow, ...]
    #: The email rendered with its layout when the notification was created
    #: (``notify``); ``None`` for other channels and for rows INSERTed by hand.
    email_html: str | None = None
    email_text: str | None = None
    #: For push: the FCM collapse key of a collapsible template's notifications
    #: about one auction, so that a device shows only the latest.
    collapse_key: str | None = None
    #: The provider of the last attempt, which failed retryably (or None):
    #: failover starts from the next provider in the channel's order.
    last_provider: str | None = None
    #: Those of ``addresses`` that are suppressed (as :func:`normal_address` makes them).
    suppressed: frozenset[str] = frozenset()
    #: Email only: the user unsubscribed from this category (one click).
    unsubscribed: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class AttemptRecord:
    """The outcome of one provider call, to write back."""

    outcome: AttemptOutcome
    provider: str
    started_at: dt.datetime
    duration_ms: int
    response: dict[str, Any]
    request_id: str | None = None
    provider_message_id: str | None = None
    error: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class WriteBack:
    """One delivery's outcome: its new state and the provider calls that led to it.

    ``status`` is SENT or DELIVERED (accepted), FAILED (final), or QUEUED (a
    retry at ``retry_at``, with a lease of ``lease_seconds`` beyond it).
    """

    job: SendJob
    attempts: tuple[AttemptRecord, ...]
    status: DeliveryStatus
    error: str | None = None
    counts_attempt: bool = True
    retry_at: dt.datetime | None = None
    lease_seconds: float = 3600.0
    dead_letter: bool = False
    #: The broker message that carries the delivery from now on (a retry or a
    #: dead letter sent as a message of its own); None keeps the row's.
    message_id: str | None = None


# --- taking deliveries --------------------------------------------------------------


def take_for_sending(
    conn: Connection, delivery_ids: Sequence[uuid.UUID], *, lease_seconds: float
) -> dict[uuid.UUID, SendJob | None]:
    """The redelivery guard for many deliveries: queued -> sending, conditionally.

    Maps every id to its :class:`SendJob`, or to None when the delivery is not
    queued (sent already, being sent by another worker, failed, cancelled) or
    does not exist. A delivery whose notification expired or was cancelled
    while it waited is cancelled here instead of being handed out.
    """
    now = utcnow()
    # One token per call, shared by the deliveries of this batch: what it must
    # tell apart is two takes of the same delivery, which are never in the
    # same call (the conditional UPDATE hands a delivery out once).
    token = uuid.uuid4()
    result: dict[uuid.UUID, SendJob | None] = dict.fromkeys(delivery_ids)
    taken = conn.execute(
        _TAKE,
        {
            "ids": list(delivery_ids),
            "lease": now + dt.timedelta(seconds=lease_seconds),
            "token": token,
            "now": now,
        },
    ).all()
    if not taken:
        return result
    notes = {
        row.notification_id: row
        for row in conn.execute(_NOTES, {"ids": list({t.notification_id for t in taken})})
    }
    cancelled: dict[str, list[Any]] = defaultdict(list)
    live = []
    for t in taken:
        note = notes[t.notification_id]
        expires_at = as_utc(note.expires_at)
        if note.status == NotificationStatus.CANCELLED:
            cancelled["notification was cancelled"].append(t)
        elif expires_at is not None and expires_at <= now:
            cancelled["expired before it was sent"].append(t)
        else:
            live.append(t)
    if cancelled:
        _cancel(conn, cancelled, now)
    addresses = _addresses(
        conn, {(notes[t.notification_id].user_id, Channel(t.channel)) for t in live}
    )
    email_ids = {t.notification_id for t in live if Channel(t.channel) is Channel.EMAIL}
    emails = (
        {row.notification_id: row for row in conn.execute(_EMAILS, {"ids": list(email_ids)})}
        if email_ids
        else {}
    )
    blocked = _suppressed(conn, addresses)
    opted_out = unsubscribed(
        conn,
        {
            (notes[t.notification_id].user_id, _text(notes[t.notification_id].category))
            for t in live
            if Channel(t.channel) is Channel.EMAIL
        },
    )
    for t in live:
        note = notes[t.notification_id]
        channel = Channel(t.channel)
        email = emails.get(t.notification_id) if channel is Channel.EMAIL else None
        result[t.delivery_id] = SendJob(
            delivery_id=t.delivery_id,
            notification_id=t.notification_id,
            take_token=token,
            user_id=note.user_id,
            channel=channel,
            attempts=t.attempts,
            throttles=t.throttles,
            max_attempts=note.max_attempts or 3,
            title=note.title,
            message=note.message,
            html=note.body_format == "html",
            action_url=note.action_url,
            action_label=note.action_label,
            category=_text(note.category),
            priority=_text(note.priority),
            auction_id=note.auction_id,
            addresses=tuple(addresses.get((note.user_id, channel), ())),
            email_html=email.email_html if email is not None else None,
            email_text=email.email_text if email is not None else None,
            collapse_key=(
                # APNs takes at most 64 bytes: the event, cut, and the auction.
                f"{note.event[:31]}-{note.auction_id.hex}"
                if note.collapsible and note.auction_id is not None
                else None
            ),
            last_provider=t.provider,
            suppressed=frozenset(blocked.get(channel, set())),
            unsubscribed=(note.user_id, _text(note.category)) in opted_out,
        )
    return result


def _addresses(
    conn: Connection, wanted: Iterable[tuple[uuid.UUID, Channel]]
) -> dict[tuple[uuid.UUID, Channel], list[AddressRow]]:
    wanted = {(user, channel) for user, channel in wanted if channel is not Channel.IN_APP}
    found: dict[tuple[uuid.UUID, Channel], list[AddressRow]] = defaultdict(list)
    if not wanted:
        return found
    rows = conn.execute(
        sa.select(_U.c.user_id, _U.c.channel, _U.c.address_id, _U.c.address, _U.c.secret)
        .where(
            _U.c.user_id.in_({user for user, _ in wanted}),
            _U.c.channel.in_({channel for _, channel in wanted}),
            _U.c.is_active.is_(True),
        )
        .order_by(_U.c.created_at.desc())
    )
    for row in rows:
        key = (row.user_id, Channel(row.channel))
        if key in wanted:
            found[key].append(AddressRow(row.address_id, row.address, row.secret))
    return found


def _suppressed(
    conn: Connection, addresses: Mapping[tuple[uuid.UUID, Channel], list[AddressRow]]
) -> dict[Channel, set[str]]:
    by_channel: dict[Channel, set[str]] = defaultdict(set)
    for (_, channel), rows in addresses.items():
        by_channel[channel].update(r.address for r in rows)
    return {
        channel: active_suppressions(conn, channel, wanted)
        for channel, wanted in by_channel.items()
    }


def _cancel(conn: Connection, cancelled: Mapping[str, Sequence[Any]], now: dt.datetime) -> None:
    changes: dict[uuid.UUID, NotificationChange] = {}
    for reason, rows in cancelled.items():
        conn.execute(
            sa.update(_D)
            .where(_D.c.delivery_id.in_([r.delivery_id for r in rows]))
            .values(
                status=DeliveryStatus.CANCELLED,
                last_error=reason,
                lease_expires_at=None,
                updated_at=now,
            )
        )
        for r in rows:
            changes[r.notification_id] = NotificationChange(error=reason)
    roll_up(conn, changes, now=now)


# --- writing outcomes back -----------------------------------------------------------


def write_back(
    conn: Connection, items: Sequence[WriteBack], callbacks: frozenset[str] = frozenset()
) -> list[WriteBack]:
    """Write the outcomes of many deliveries: delivery rows, attempt history, and
    each notification's rolled-up status, in the caller's transaction.

    An outcome among ``callbacks`` (``sent``, ``delivered``, ``failed``) also
    gets its status callback row (:mod:`models.callbacks`), in the same
    transaction: the outcome and the news of it commit together.

    Idempotent: an item whose take was written back already (a retry after a
    lost commit acknowledgement) or was superseded (the delivery was swept
    and taken again) is skipped. Returns the items skipped.
    """
    if not items:
        return []
    now = utcnow()
    notes = lock_notifications(conn, {i.job.notification_id for i in items})
    current: dict[uuid.UUID, uuid.UUID | None] = {
        row.delivery_id: row.take_token
        for row in conn.execute(_TOKENS, {"ids": list({i.job.delivery_id for i in items})})
    }
    applied: list[WriteBack] = []
    skipped: list[WriteBack] = []
    for item in items:
        if current.get(item.job.delivery_id) == item.job.take_token:
            applied.append(item)
            # The same take twice in one batch: the first copy clears it.
            current[item.job.delivery_id] = None
        else:
            skipped.append(item)
    if not applied:
        return skipped
    delivery_rows = []
    attempt_rows = []
    changes: dict[uuid.UUID, NotificationChange] = defaultdict(NotificationChange)
    for item in applied:
        job = item.job
        accepted = item.status in (DeliveryStatus.SENT, DeliveryStatus.DELIVERED)
        counted = accepted or (bool(item.attempts) and item.counts_attempt)
        # A retry that burnt no attempt (a throttle, a wait while the provider is
        # down) is counted here instead, so that such waits stay bounded.
        throttled = any(a.outcome is AttemptOutcome.THROTTLED for a in item.attempts) or (
            bool(item.attempts) and not item.counts_attempt and item.status is DeliveryStatus.QUEUED
        )
        response = _combined_response(item.attempts) if item.attempts else None
        first_ok = next((a for a in item.attempts if a.outcome in _ACCEPTED), None)
        retry = item.status is DeliveryStatus.QUEUED
        wake = (item.retry_at or now) if retry else None
        delivery_rows.append(
            {
                "delivery_id": job.delivery_id,
                "take_token": job.take_token,
                "status": item.status,
                "attempts": job.attempts + (1 if counted else 0),
                "throttles": job.throttles + (1 if throttled else 0),
                "provider": item.attempts[-1].provider if item.attempts else None,
                "provider_message_id": first_ok.provider_message_id if first_ok else None,
                "provider_response": response,
                "last_error": item.error,
                "lease_expires_at": (
                    wake + dt.timedelta(seconds=item.lease_seconds) if wake else None
                ),
                "next_attempt_at": wake,
                "sent_at": now if accepted else None,
                "delivered_at": now if item.status is DeliveryStatus.DELIVERED else None,
                "failed_at": now if item.status is DeliveryStatus.FAILED else None,
                "dead_lettered_at": now if item.dead_letter else None,
                "updated_at": now,
                "message_id": item.message_id,
            }
        )
        for record in item.attempts:
            attempt_rows.append(
                {
                    "delivery_id": job.delivery_id,
                    "notification_id": job.notification_id,
                    "channel": job.channel,
                    "attempt_number": job.attempts + 1,
                    "provider": record.provider,
                    "request_id": record.request_id or record.provider_message_id,
                    "outcome": record.outcome,
                    "error_message": record.error,
                    "response": record.response,
                    "started_at": record.started_at,
                    "duration_ms": record.duration_ms,
                    "created_at": now,
                }
            )
        change = changes[job.notification_id]
        if response is not None:
            change.responses[job.channel.value] = response
        if item.error is not None:
            change.error = f"{job.channel.value}: {item.error}"
        if accepted:
            change.recovered.add(job.channel.value)
        change.attempts_added += 1 if counted else 0
    if arrays.supported(conn):
        arrays.update_rows(
            conn,
            _D,
            delivery_rows,
            match=("delivery_id", "take_token"),
            assign=_DELIVERY_COLUMNS,
            raw={"take_token": "NULL", "message_id": "coalesce(v.message_id, t.message_id)"},
        )
        arrays.insert_rows(conn, _A, attempt_rows)
    else:
        conn.execute(_WRITE_DELIVERY, [{f"b_{k}": v for k, v in r.items()} for r in delivery_rows])
        if attempt_rows:
            conn.execute(_INSERT_ATTEMPTS, attempt_rows)
    roll_up(conn, changes, now=now, notes=notes)
    if callbacks:
        record_events(conn, _events(applied, now), callbacks)
    return skipped


_FINAL_EVENTS = {
    DeliveryStatus.SENT: "sent",
    DeliveryStatus.DELIVERED: "delivered",
    DeliveryStatus.FAILED: "failed",
}


def _events(items: Sequence[WriteBack], now: dt.datetime) -> list[CallbackEvent]:
    events = []
    for item in items:
        event = _FINAL_EVENTS.get(item.status)
        if event is None:
            continue
        ok = next((a for a in item.attempts if a.outcome in _ACCEPTED), None)
        shown = ok or (item.attempts[-1] if item.attempts else None)
        events.append(
            CallbackEvent(
                notification_id=item.job.notification_id,
                delivery_id=item.job.delivery_id,
                channel=item.job.channel,
                event=event,
                provider=shown.provider if shown is not None else None,
                provider_message_id=ok.provider_message_id if ok else None,
                error=item.error,
                occurred_at=now,
            )
        )
    return events


def _combined_response(attempts: Sequence[AttemptRecord]) -> dict[str, Any]:
    """The provider response to store: the one answer, or each answer in order."""
    if len(attempts) == 1:
        return attempts[0].response
    return {"results": [a.response for a in attempts]}


def _text(value: Any) -> str:
    return str(getattr(value, "value", value))


# --- the store the workers use -------------------------------------------------------


class WriteBackStore:
    """The workers' database side (a :class:`~workers.delivery.DeliveryStore`):
    each call runs in a transaction of its own and commits before returning."""

    def __init__(self, engine: Engine, *, callbacks: frozenset[str] = frozenset()) -> None:
        self.engine = engine
        #: Outcomes that get a status callback row (``models.callbacks.callback_events``).
        self.callbacks = callbacks

    def start_sending(self, delivery_id: uuid.UUID, *, lease_seconds: float) -> SendJob | None:
        """The redelivery guard: queued -> sending in one conditional UPDATE.

        Returns None when the delivery is not queued (already sent, being sent
        by another worker, failed, cancelled) or does not exist: the caller
        drops the message. A notification that expired or was cancelled while
        the delivery waited is cancelled here instead of being sent.
        """
        return self.start_sending_many([delivery_id], lease_seconds=lease_seconds)[delivery_id]

    def start_sending_many(
        self, delivery_ids: Sequence[uuid.UUID], *, lease_seconds: float
    ) -> dict[uuid.UUID, SendJob | None]:
        """:meth:`start_sending` for many deliveries in one transaction."""
        with self.engine.begin() as conn:
            return take_for_sending(conn, delivery_ids, lease_seconds=lease_seconds)

    def write_back(self, item: WriteBack) -> None:
        """Write one delivery's outcome (see :class:`WriteBack`)."""
        self.write_back_many([item])

    def write_back_many(self, items: Sequence[WriteBack]) -> None:
        """Write many deliveries' outcomes in one transaction.

        Safe to call again with the same items when the outcome of a call is
        unknown (a connection lost around COMMIT): what was written already is
        not written twice.
        """
        with self.engine.begin() as conn:
            skipped = write_back(conn, items, self.callbacks)
        for item in skipped:
            log.info(
                "notification %s delivery %s: write-back of take %s skipped"
                " (already written back, or the delivery was taken again)",
                item.job.notification_id,
                item.job.delivery_id,
                item.job.take_token,
            )

    def disable_addresses(self, address_ids: Iterable[uuid.UUID], reason: str) -> None:
        """Stop using addresses the provider rejected for good (a dead token, a gone endpoint).

        The address rows are disabled and the addresses suppressed
        (:mod:`models.suppressions`), so that an operator sees them beside
        bounces and complaints, and lifts them the same way.
        """
        ids = list(address_ids)
        if not ids:
            return
        now = utcnow()
        with self.engine.begin() as conn:
            rows = conn.execute(
                sa.update(_U)
                .where(_U.c.address_id.in_(ids))
                .values(is_active=False, disabled_at=now, disabled_reason=reason, updated_at=now)
                .returning(_U.c.address_id, _U.c.channel, _U.c.address)
            ).all()
            for row in rows:
                channel = Channel(row.channel)
                suppress(
                    conn,
                    channel,
                    row.address,
                    reason="unregistered" if channel is Channel.PUSH else "gone",
                    source="fcm" if channel is Channel.PUSH else channel.value,
                    receipt={"address_id": str(row.address_id), "detail": reason},
                )
