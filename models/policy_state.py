"""The policy step of the claim: read the state a batch needs, decide, write it back.

Runs inside the scheduler's claim transaction (``models.claims``), after the
due notifications were locked (``FOR UPDATE SKIP LOCKED``). What two
schedulers could otherwise decide twice is locked before it is read:

* the collapse window of each (user, auction, template) in the batch: the
  row is created if missing (``ON CONFLICT DO NOTHING``), then locked
  (``FOR UPDATE``), in key order so that two batches cannot deadlock. A
  second scheduler with an outbid for the same user and auction waits for
  the first to commit and then sees its window: one immediate message, one
  follow-up, never two;
* the rate counters of the current hour of each (user, channel), the same way.

Everything else (opt-outs, quiet hours, presence) is read as is. The decision
itself is :func:`models.policy.decide`, one call per notification in claim
order; :meth:`State.apply` lets the next notification of the batch see it.

Two ports let the layers above supply what this layer cannot hold:

* :class:`WatchingSource`: the gateways' live presence (from Redis, built by
  the scheduler's runtime), asked once per batch; when it gives no answer
  the ``websocket_connections`` rows with a recent heartbeat are read instead;
* :class:`FollowUpRenderer`: the follow-up's title, message and email in the
  reader's language (Babel, Jinja2 and the email layout live in the top
  layer, which renders every email at notify time; ``clarion scheduler``
  hands its renderer down). Without one, :func:`plain_follow_ups` rewrites
  the title and message only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models.enums import Category, Channel, ConnectionStatus, Priority
from models.notifications import Notification, NotificationTemplate
from models.policy import (
    Decision,
    Facts,
    PolicyConfig,
    State,
    UserPolicy,
    Window,
    decide,
    hour_slot,
    render_collapsed,
)
from models.preferences import CollapseWindow, RateCounter, load_user_policies
from models.realtime import WebSocketConnection

__all__ = [
    "Due",
    "FollowUp",
    "FollowUpRenderer",
    "FollowUpText",
    "WatchingSource",
    "plain_follow_ups",
    "plan_batch",
]

_W: sa.Table = CollapseWindow.__table__  # type: ignore[assignment]
_R: sa.Table = RateCounter.__table__  # type: ignore[assignment]
_T: sa.Table = NotificationTemplate.__table__  # type: ignore[assignment]
_N: sa.Table = Notification.__table__  # type: ignore[assignment]
_C: sa.Table = WebSocketConnection.__table__  # type: ignore[assignment]


@dataclasses.dataclass(frozen=True, slots=True)
class Due:
    """One claimed notification, as the claim read it."""

    notification_id: uuid.UUID
    user_id: uuid.UUID
    channels: tuple[Channel, ...]
    category: Category
    priority: Priority
    auction_id: uuid.UUID | None
    template_id: uuid.UUID | None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FollowUp:
    """What one follow-up is written from: its carrier, the latest folded values, the count."""

    carrier_id: uuid.UUID
    user_id: uuid.UUID
    count: int
    #: The locale the carrier was rendered in (its template row's), None without one.
    locale: str | None
    category: str
    #: The latest notification's rendered title and message: the fallback text.
    title: str
    message: str
    #: The latest notification's template_data, typed values as stored.
    data: Mapping[str, Any] | None
    #: The collapse texts of the carrier's template row (its language's).
    collapse_title: str | None
    collapse_message: str | None
    html: bool
    action_url: str | None
    action_label: str | None
    #: The carrier goes by email: its stored email is rendered again.
    email: bool


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FollowUpText:
    title: str
    message: str
    email_html: str | None = None
    email_text: str | None = None
    email_layout_version: int | None = None


class FollowUpRenderer(Protocol):
    """Renders follow-ups inside the claim's transaction (``session``), one text per item."""

    def __call__(self, session: Session, items: Sequence[FollowUp]) -> Sequence[FollowUpText]: ...


class WatchingSource(Protocol):
    def watching(
        self, pairs: Collection[tuple[uuid.UUID, uuid.UUID]]
    ) -> set[tuple[uuid.UUID, uuid.UUID]] | None:
        """The pairs whose user watches that auction live now; None: no answer."""


def plain_follow_ups(session: Session, items: Sequence[FollowUp]) -> list[FollowUpText]:
    """Title and message only, values as stored (typed values shown by their amount)."""
    out = []
    for item in items:
        data = {k: _plain(v) for k, v in (item.data or {}).items()}
        title = (
            render_collapsed(item.collapse_title, item.title, data, item.count)[:255]
            if item.collapse_title
            else item.title
        )
        message = render_collapsed(
            item.collapse_message, item.message, data, item.count, html_body=item.html
        )
        out.append(FollowUpText(title=title, message=message))
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict) and "type" in value:
        return value.get("amount", value.get("value", ""))
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class _Template:
    key: str
    required: bool
    collapsible: bool
    window: float | None
    title: str | None
    message: str | None
    html: bool


def plan_batch(
    s: Session,
    batch: Sequence[Due],
    config: PolicyConfig,
    now: dt.datetime,
    *,
    follow_ups: FollowUpRenderer = plain_follow_ups,
    presence: WatchingSource | None = None,
) -> dict[uuid.UUID, Decision]:
    """Decide every notification of ``batch`` and write the policy's own state."""
    if not batch:
        return {}
    templates = _templates(s, {d.template_id for d in batch if d.template_id is not None})
    facts = [_facts(d, templates.get(d.template_id) if d.template_id else None) for d in batch]
    users = load_user_policies(s, {d.user_id for d in batch})
    state = State()
    window_keys = sorted(
        {
            (f.user_id, f.auction_id, f.template_key)
            for f in facts
            if f.collapsible and f.auction_id is not None and f.template_key
        },
        key=lambda k: (str(k[0]), str(k[1]), k[2]),
    )
    before: dict[tuple[uuid.UUID, uuid.UUID, str], Window] = {}
    if window_keys:
        # Asked before the windows are locked: Redis's answer (or its timeout)
        # is not waited for while other claims wait for these locks.
        pairs = {(k[0], k[1]) for k in window_keys}
        live = presence.watching(pairs) if presence is not None else None
        before = _lock_windows(s, window_keys)
        state.windows.update({k: dataclasses.replace(w) for k, w in before.items()})
        state.watching = (
            live if live is not None else _watching(s, pairs, now, config.presence_max_age)
        )
    planned: dict[tuple[uuid.UUID, Channel], int] = {}
    hour = hour_slot(now)
    if config.rate_limit:
        for f in facts:
            if f.required or f.category in config.required_categories:
                continue
            for c in f.channels:
                if c is not Channel.IN_APP:
                    planned[(f.user_id, c)] = planned.get((f.user_id, c), 0) + 1
        if planned:
            # Users with quiet hours may be counted into a later hour: read theirs too.
            later = {u for u, p in users.items() if p.quiet_hours is not None}
            state.rate_used = _count_rates(s, planned, hour, config.rate_limit, later)
    decisions: dict[uuid.UUID, Decision] = {}
    #: What the batch's decisions count, per user, channel and hour.
    rate_added: dict[tuple[uuid.UUID, Channel, dt.datetime], int] = {}
    for f in facts:
        decision = decide(f, users.get(f.user_id, _NO_SETTINGS), state, config, now)
        state.apply(f, decision, now)
        for key in decision.rate_slots:
            rate_added[key] = rate_added.get(key, 0) + 1
        decisions[f.notification_id] = decision
    changed = {k: w for k, w in state.windows.items() if before.get(k) != w}
    if changed:
        _write_windows(s, changed, now)
        _rewrite_carriers(s, changed, follow_ups, now)
    if planned:
        _settle_rates(s, planned, rate_added, hour)
    return decisions


_NO_SETTINGS = UserPolicy()


def _facts(d: Due, t: _Template | None) -> Facts:
    return Facts(
        notification_id=d.notification_id,
        user_id=d.user_id,
        channels=d.channels,
        category=d.category,
        priority=d.priority,
        auction_id=d.auction_id,
        template_key=t.key if t else None,
        required=t.required if t else False,
        collapsible=t.collapsible if t else False,
        collapse_window=t.window if t else None,
    )


def _templates(s: Session, ids: set[uuid.UUID]) -> dict[uuid.UUID, _Template]:
    if not ids:
        return {}
    rows = s.execute(
        sa.select(
            _T.c.template_id,
            _T.c.auction_type,
            _T.c.event,
            _T.c.required,
            _T.c.collapsible,
            _T.c.collapse_window_seconds,
            _T.c.collapse_title,
            _T.c.collapse_message,
            _T.c.body_format,
        ).where(_T.c.template_id.in_(ids))
    )
    return {
        r.template_id: _Template(
            key=f"{r.auction_type}/{r.event}",
            required=bool(r.required),
            collapsible=bool(r.collapsible),
            window=float(r.collapse_window_seconds) if r.collapse_window_seconds else None,
            title=r.collapse_title,
            message=r.collapse_message,
            html=r.body_format == "html",
        )
        for r in rows
    }


def _insert(s: Session, table: sa.Table) -> Any:
    dialect = s.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def _lock_windows(
    s: Session, keys: list[tuple[uuid.UUID, uuid.UUID, str]]
) -> dict[tuple[uuid.UUID, uuid.UUID, str], Window]:
    """Create the missing windows and lock every one, in key order, in one statement.

    ``ON CONFLICT DO UPDATE`` (a no-op change) locks an existing row until
    the claim commits, as ``FOR UPDATE`` would, and returns it; a row another
    claim is creating or holding is waited for, then returned as committed.
    The rows go in key order in one multi-row statement, so that two claims
    lock shared windows in the same order. (The returned rows are matched by
    key: asking for them in parameter order would make SQLAlchemy send one
    statement per row, this table having no sentinel column.)
    """
    stmt = _insert(s, _W)
    stmt = stmt.on_conflict_do_update(
        index_elements=["user_id", "auction_id", "collapse_key"],
        set_={"collapse_key": stmt.excluded.collapse_key},
    ).returning(
        _W.c.user_id,
        _W.c.auction_id,
        _W.c.collapse_key,
        _W.c.opened_at,
        _W.c.closes_at,
        _W.c.first_notification_id,
        _W.c.carrier_notification_id,
        _W.c.latest_notification_id,
        _W.c.event_count,
    )
    rows = s.execute(
        stmt,
        [{"user_id": u, "auction_id": a, "collapse_key": k, "event_count": 0} for u, a, k in keys],
    )
    return {
        (r.user_id, r.auction_id, r.collapse_key): Window(
            opened_at=_utc(r.opened_at),
            closes_at=_utc(r.closes_at),
            first_id=r.first_notification_id,
            carrier_id=r.carrier_notification_id,
            latest_id=r.latest_notification_id,
            count=r.event_count or 0,
        )
        for r in rows
    }


def _write_windows(
    s: Session, changed: dict[tuple[uuid.UUID, uuid.UUID, str], Window], now: dt.datetime
) -> None:
    s.execute(
        sa.update(_W)
        .where(
            _W.c.user_id == sa.bindparam("k_user"),
            _W.c.auction_id == sa.bindparam("k_auction"),
            _W.c.collapse_key == sa.bindparam("k_key"),
        )
        .values(
            opened_at=sa.bindparam("v_opened"),
            closes_at=sa.bindparam("v_closes"),
            first_notification_id=sa.bindparam("v_first"),
            carrier_notification_id=sa.bindparam("v_carrier"),
            latest_notification_id=sa.bindparam("v_latest"),
            event_count=sa.bindparam("v_count"),
            updated_at=now,
        )
        .execution_options(synchronize_session=False),
        [
            {
                "k_user": u,
                "k_auction": a,
                "k_key": k,
                "v_opened": w.opened_at,
                "v_closes": w.closes_at,
                "v_first": w.first_id,
                "v_carrier": w.carrier_id,
                "v_latest": w.latest_id,
                "v_count": w.count,
            }
            for (u, a, k), w in changed.items()
        ],
    )


def _rewrite_carriers(
    s: Session,
    changed: dict[tuple[uuid.UUID, uuid.UUID, str], Window],
    render: FollowUpRenderer,
    now: dt.datetime,
) -> None:
    """The follow-up says what it carries: the latest values and the count.

    Written on the carrier's row (title, message and, when it goes by email,
    the stored email) each time one more is folded into it, in the language
    of the carrier's template row; its deliveries are held until the window
    ends, so what the workers read then is the final text.
    """
    windows = {
        w.carrier_id: w
        for w in changed.values()
        if w.carrier_id is not None and w.latest_id is not None
    }
    if not windows:
        return
    ids = set(windows) | {w.latest_id for w in windows.values()}
    rows = {
        r.notification_id: r
        for r in s.execute(
            sa.select(
                _N.c.notification_id,
                _N.c.user_id,
                _N.c.title,
                _N.c.message,
                _N.c.template_data,
                _N.c.template_id,
                _N.c.locale,
                _N.c.category,
                _N.c.action_url,
                _N.c.action_label,
                _N.c.email_html,
            ).where(_N.c.notification_id.in_(ids))
        )
    }
    templates = _templates(
        s,
        {r.template_id for i, r in rows.items() if i in windows and r.template_id is not None},
    )
    items: list[FollowUp] = []
    for carrier_id, w in windows.items():
        carrier, latest = rows.get(carrier_id), rows.get(w.latest_id)
        if carrier is None or latest is None:
            continue
        t = templates.get(carrier.template_id) if carrier.template_id else None
        items.append(
            FollowUp(
                carrier_id=carrier_id,
                user_id=carrier.user_id,
                count=w.count,
                locale=carrier.locale,
                category=str(getattr(carrier.category, "value", carrier.category)),
                title=latest.title,
                message=latest.message,
                data=latest.template_data if isinstance(latest.template_data, dict) else None,
                collapse_title=t.title if t else None,
                collapse_message=t.message if t else None,
                html=bool(t and t.html),
                action_url=carrier.action_url,
                action_label=carrier.action_label,
                email=carrier.email_html is not None,
            )
        )
    if not items:
        return
    texts = render(s, items)
    params = []
    for item, text in zip(items, texts, strict=True):
        values: dict[str, Any] = {
            "b_id": item.carrier_id,
            "b_title": text.title[:255],
            "b_message": text.message,
            "b_now": now,
        }
        if item.email and text.email_html is not None:
            values.update(
                b_html=text.email_html,
                b_text=text.email_text,
                b_layout=text.email_layout_version,
            )
        params.append(values)
    plain = [p for p in params if "b_html" not in p]
    mailed = [p for p in params if "b_html" in p]
    update = (
        sa.update(_N)
        .where(_N.c.notification_id == sa.bindparam("b_id"))
        .execution_options(synchronize_session=False)
    )
    common: dict[str, Any] = {
        "title": sa.bindparam("b_title"),
        "message": sa.bindparam("b_message"),
        "updated_at": sa.bindparam("b_now"),
    }
    if plain:
        s.execute(update.values(**common), plain)
    if mailed:
        s.execute(
            update.values(
                **common,
                email_html=sa.bindparam("b_html"),
                email_text=sa.bindparam("b_text"),
                email_layout_version=sa.bindparam("b_layout"),
            ),
            mailed,
        )


def _watching(
    s: Session, pairs: set[tuple[uuid.UUID, uuid.UUID]], now: dt.datetime, max_age: float
) -> set[tuple[uuid.UUID, uuid.UUID]]:
    """The (user, auction) pairs with a connected, recently heard-from, subscribed client.

    A row whose ``last_heartbeat`` is older than ``max_age`` is not trusted:
    a gateway that crashed leaves its rows ``connected`` until the sweep.
    """
    users = {u for u, _ in pairs}
    cutoff = now - dt.timedelta(seconds=max_age)
    found: set[tuple[uuid.UUID, uuid.UUID]] = set()
    for user_id, subscribed in s.execute(
        sa.select(_C.c.user_id, _C.c.auction_subscriptions).where(
            _C.c.user_id.in_(users),
            _C.c.connection_status == ConnectionStatus.CONNECTED,
            _C.c.last_heartbeat >= cutoff,
        )
    ):
        for auction in _uuids(subscribed):
            if (user_id, auction) in pairs:
                found.add((user_id, auction))
    return found


def _uuids(values: Any) -> Iterable[uuid.UUID]:
    if not isinstance(values, list):
        return
    for value in values:
        try:
            yield uuid.UUID(str(value))
        except ValueError:
            continue  # a subscription to something that is not an auction id


def _count_rates(
    s: Session,
    planned: dict[tuple[uuid.UUID, Channel], int],
    hour: dt.datetime,
    limit: int,
    read_later: set[uuid.UUID],
) -> dict[tuple[uuid.UUID, Channel, dt.datetime], int]:
    """Count this batch into the current hour at once, and return what was there before.

    One upsert, in key order: it adds every delivery the batch may send now
    and locks those counters until the claim commits, so a second scheduler
    counting the same user waits and then sees this batch's count. What the
    decisions do not use is given back by :func:`_settle_rates`. Only for a
    user that may go over the limit, or whose quiet hours may move a delivery
    to a later hour, are the later hours read (locked too).
    """
    keys = sorted(planned, key=lambda k: (str(k[0]), k[1].value))
    stmt = _insert(s, _R)
    stmt = stmt.on_conflict_do_update(
        index_elements=["user_id", "channel", "hour_start"],
        set_={"sent": _R.c.sent + stmt.excluded.sent},
    ).returning(_R.c.user_id, _R.c.channel, _R.c.sent)
    rows = s.execute(
        stmt,
        [
            {"user_id": u, "channel": c, "hour_start": hour, "sent": planned[(u, c)]}
            for u, c in keys
        ],
    )
    used: dict[tuple[uuid.UUID, Channel, dt.datetime], int] = {}
    crowded: list[tuple[uuid.UUID, Channel]] = []
    for r in rows:
        key = (r.user_id, Channel(r.channel))
        before = r.sent - planned[key]
        used[(*key, hour)] = before
        if r.sent > limit or r.user_id in read_later:
            crowded.append(key)
    if crowded:
        for r in s.execute(
            sa.select(_R.c.user_id, _R.c.channel, _R.c.hour_start, _R.c.sent)
            .where(sa.tuple_(_R.c.user_id, _R.c.channel).in_(crowded), _R.c.hour_start > hour)
            .order_by(_R.c.user_id, _R.c.channel, _R.c.hour_start)
            .with_for_update()
        ):
            used[(r.user_id, Channel(r.channel), hour_slot(_aware(r.hour_start)))] = r.sent
    return used


def _settle_rates(
    s: Session,
    planned: dict[tuple[uuid.UUID, Channel], int],
    used: dict[tuple[uuid.UUID, Channel, dt.datetime], int],
    hour: dt.datetime,
) -> None:
    """Give back what the batch counted now but did not send now, count the later hours."""
    back = []
    for (u, c), n in sorted(planned.items(), key=lambda i: (str(i[0][0]), i[0][1].value)):
        unused = n - used.get((u, c, hour), 0)
        if unused:
            back.append({"b_user": u, "b_channel": c, "b_hour": hour, "b_unused": unused})
    if back:
        s.execute(
            sa.update(_R)
            .where(
                _R.c.user_id == sa.bindparam("b_user"),
                _R.c.channel == sa.bindparam("b_channel"),
                _R.c.hour_start == sa.bindparam("b_hour"),
            )
            .values(sent=_R.c.sent - sa.bindparam("b_unused"))
            .execution_options(synchronize_session=False),
            back,
        )
    later = {k: n for k, n in used.items() if k[2] != hour}
    if later:
        stmt = _insert(s, _R)
        s.execute(
            stmt.on_conflict_do_update(
                index_elements=["user_id", "channel", "hour_start"],
                set_={"sent": _R.c.sent + stmt.excluded.sent},
            ),
            [
                {"user_id": u, "channel": c, "hour_start": h, "sent": n}
                for (u, c, h), n in sorted(
                    later.items(), key=lambda i: (str(i[0][0]), i[0][1], i[0][2])
                )
            ],
        )


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else _aware(value)


def _aware(value: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes; they were written in UTC.
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
