"""The delivery policy at the claim, on PostgreSQL: rows written, locks, release, cancel.

The claim is driven directly (``Claims.claim_due(now=...)``), so that a
daylight-saving change can be reached; the end-to-end behaviour through real
processes is in ``tests/pipeline/test_pipeline_policy*.py``.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from testdb import truncate_data

from clarion import policy
from clarion.api import notify
from clarion.core.db import session_factory
from clarion.core.errors import ValidationError
from models.claims import Claim, ClaimBatch, Claims
from models.enums import Channel
from models.notifications import Delivery, Notification, NotificationTemplate
from models.policy import PolicyConfig
from models.preferences import CollapseWindow, RateCounter
from models.retention import Retention, RetentionPolicy

pytestmark = pytest.mark.postgres

UTC = dt.UTC


@pytest.fixture
def db(clean_db: Engine) -> Engine:
    return clean_db


@pytest.fixture
def template(engine: Engine) -> Iterator[str]:
    """A collapsible outbid template of this test's own (templates are not truncated)."""
    kind = f"t{uuid.uuid4().hex[:8]}"
    with sessionmaker(engine).begin() as s:
        s.add(
            NotificationTemplate(
                auction_type=kind,
                event="outbid",
                category="bid",
                title="You've been outbid",
                message="Someone bid higher than your {amount} bid",
                priority="high",
                channels=["in_app", "push", "email"],
                collapsible=True,
                collapse_window_seconds=60,
                collapse_title="You've been outbid {count} times",
                collapse_message="Outbid {count} times, current price {amount}",
            )
        )
    yield f"{kind}/outbid"
    truncate_data(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.delete(NotificationTemplate).where(NotificationTemplate.auction_type == kind)
        )


def claims(engine: Engine, config: PolicyConfig | None = None) -> Claims:
    return Claims(session_factory(engine), policy=config or PolicyConfig())


def claim(c: Claims, now: dt.datetime | None = None, batch_size: int = 100) -> ClaimBatch:
    return c.claim_due(
        batch_size=batch_size,
        lease_seconds=600,
        queue_for=lambda ch, p: Channel(ch).value,
        make_message=lambda d, q: uuid.uuid4().hex,
        now=now,
    )


def release(c: Claims, now: dt.datetime) -> list[Claim]:
    return c.release_held(
        batch_size=100,
        lease_seconds=600,
        make_message=lambda d, q: uuid.uuid4().hex,
        now=now,
    )


def new(engine: Engine, user: uuid.UUID, **kw: object) -> uuid.UUID:
    if "template" not in kw:
        kw.setdefault("title", "T")
        kw.setdefault("message", "M")
        kw.setdefault("category", "bid")
    with sessionmaker(engine, expire_on_commit=False).begin() as s:
        return notify(user, session=s, **kw).notification_id  # type: ignore[arg-type]


def rows(engine: Engine, notification_id: uuid.UUID) -> dict[str, Delivery]:
    with Session(engine) as s:
        found = s.scalars(sa.select(Delivery).where(Delivery.notification_id == notification_id))
        return {Channel(d.channel).value: d for d in found}


def note(engine: Engine, notification_id: uuid.UUID) -> Notification:
    with Session(engine, expire_on_commit=False) as s:
        return s.get_one(Notification, notification_id)


def test_opt_outs_are_written_with_their_reason(db: Engine) -> None:
    user = uuid.uuid4()
    with sessionmaker(db).begin() as s:
        policy.opt_out(user, "sms", session=s)
        policy.opt_out(user, "email", "bid", session=s)
    some = new(db, user, channels=["email", "sms", "in_app"])
    paid = new(db, user, channels=["email", "sms"], category="payment")
    none = new(db, user, channels=["email", "sms"])
    claimed = claim(claims(db))
    assert {(c.notification_id, c.channel) for c in claimed} == {
        (some, Channel.IN_APP),
        (paid, Channel.EMAIL),
        (paid, Channel.SMS),
    }
    d = rows(db, some)
    assert (d["sms"].status, d["sms"].policy_reason) == ("cancelled", "opted out of sms")
    assert (d["email"].status, d["email"].policy_reason) == (
        "cancelled",
        "opted out of bid on email",
    )
    assert note(db, some).status == "pending"
    gone = note(db, none)
    assert gone.status == "cancelled"
    assert gone.error_message == "email: opted out of bid on email; sms: opted out of sms"


def test_quiet_hours_across_spring_forward_held_then_released(db: Engine) -> None:
    user = uuid.uuid4()
    with sessionmaker(db).begin() as s:
        policy.set_quiet_hours(user, "22:00", "07:00", "America/New_York", session=s)
    n = new(db, user, channels=["email", "in_app"])
    c = claims(db)
    night = dt.datetime(2026, 3, 8, 4, 0, tzinfo=UTC)  # 23:00 EST, the night clocks jump
    with db.begin() as conn:  # created "then", so that the claim at that time sees it due
        conn.execute(sa.update(Notification).values(created_at=night - dt.timedelta(seconds=1)))
    claimed = claim(c, now=night)
    assert [x.channel for x in claimed] == [Channel.IN_APP]
    email = rows(db, n)["email"]
    morning = dt.datetime(2026, 3, 8, 11, 0, tzinfo=UTC)  # 07:00 EDT
    assert email.status == "queued" and email.message_id is None
    assert email.held_until == morning
    assert email.policy_reason == "quiet hours (America/New_York) until 2026-03-08T11:00:00Z"
    assert c.next_due_at() == morning
    assert release(c, morning - dt.timedelta(seconds=1)) == []
    released = release(c, morning)
    assert [(x.notification_id, x.channel) for x in released] == [(n, Channel.EMAIL)]
    email = rows(db, n)["email"]
    assert email.held_until is None and email.message_id == released[0].message_id
    assert email.policy_reason is not None  # why it waited stays visible
    assert release(c, morning + dt.timedelta(hours=1)) == []


def test_two_claimers_collapse_exactly(db: Engine, template: str) -> None:
    """Ten outbids for one user and auction, claimed one at a time by two
    claimers in parallel: one goes now, one follow-up, eight folded into it."""
    user, auction = uuid.uuid4(), uuid.uuid4()
    ids = [
        new(
            db, user, template=template, template_data={"amount": f"${300 + i}"}, auction_id=auction
        )
        for i in range(10)
    ]
    # 10 notifications in 10 distinct created_at order; two threads, batch of 1.
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        try:
            c = claims(db)
            barrier.wait()
            while claim(c, batch_size=1).notifications:
                pass
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    with Session(db) as s:
        window = s.scalars(sa.select(CollapseWindow)).one()
        carrier = window.carrier_notification_id
        assert window.event_count == 10
        assert window.latest_notification_id is not None
        deliveries = s.scalars(sa.select(Delivery).where(Delivery.notification_id.in_(ids))).all()
    sent_now = {d.notification_id for d in deliveries if d.message_id is not None}
    held = {d.notification_id for d in deliveries if d.held_until is not None}
    folded = {d.notification_id for d in deliveries if d.folded_into is not None}
    assert len(sent_now) == 1 and held == {carrier} and len(folded) == 8
    assert sent_now | held | folded == set(ids)
    assert {d.folded_into for d in deliveries if d.folded_into} == {carrier}
    for i in folded:
        assert note(db, i).status == "cancelled"
        assert note(db, i).error_message == f"folded into {carrier}"
    latest = note(db, window.latest_notification_id)
    follow_up = note(db, carrier)  # type: ignore[arg-type]
    amount = latest.template_data["amount"]
    assert follow_up.title == "You've been outbid 10 times"
    assert follow_up.message == f"Outbid 10 times, current price {amount}"


def test_cancel_recalls_held_and_unclaimed_but_not_sent(db: Engine, template: str) -> None:
    user, auction = uuid.uuid4(), uuid.uuid4()
    first = new(db, user, template=template, template_data={"amount": "$1"}, auction_id=auction)
    second = new(db, user, template=template, template_data={"amount": "$2"}, auction_id=auction)
    c = claims(db)
    claim(c)
    later = new(db, user, template=template, template_data={"amount": "$3"}, auction_id=auction)
    # the first went out (its in-app is 'sending' at a worker); the second is the held follow-up
    with db.begin() as conn:
        conn.execute(
            sa.update(Delivery)
            .where(Delivery.notification_id == first, Delivery.channel == Channel.IN_APP)
            .values(status="sending")
        )
    with sessionmaker(db).begin() as s:
        done = policy.cancel(
            user_id=user, auction_id=auction, template=template, reason="user bid again", session=s
        )
    assert (done.notifications, done.not_recalled) == (3, 1)
    assert {d.status for d in rows(db, second).values()} == {"cancelled"}
    assert {d.policy_reason for d in rows(db, second).values()} == {"user bid again"}
    assert note(db, second).status == "cancelled"
    assert (
        note(db, later).status == "cancelled" and note(db, later).error_message == "user bid again"
    )
    assert rows(db, first)["in_app"].status == "sending"  # handed to a provider: not recalled
    with Session(db) as s:
        assert s.scalars(sa.select(CollapseWindow)).all() == []  # the next one opens a new window
    assert release(c, dt.datetime.now(UTC) + dt.timedelta(hours=1)) == []
    nxt = new(db, user, template=template, template_data={"amount": "$4"}, auction_id=auction)
    assert {x.notification_id for x in claim(c)} == {nxt}


def test_cancel_by_key_and_refuses_no_filter(db: Engine) -> None:
    user = uuid.uuid4()
    n = new(db, user, channels=["email"], cancellation_key="ending:lot7")
    other = new(db, user, channels=["email"])
    with sessionmaker(db).begin() as s:
        assert policy.cancel(cancellation_key="ending:lot7", session=s).notifications == 1
    assert note(db, n).status == "cancelled"
    assert note(db, other).status == "pending"
    with pytest.raises(ValidationError, match="cancel"):
        policy.cancel()


def test_presence_trusts_only_a_fresh_heartbeat(db: Engine, template: str) -> None:
    user, watched, stale = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    now = dt.datetime.now(UTC)
    with db.begin() as conn:
        for auction, beat in ((watched, now), (stale, now - dt.timedelta(minutes=5))):
            conn.execute(
                sa.text(
                    "INSERT INTO websocket_connections (user_id, session_id, socket_id,"
                    " connection_status, client_ip, user_agent, last_heartbeat, connected_at,"
                    " subscriptions, auction_subscriptions) VALUES (:u, 's', 'k', 'connected',"
                    " '127.0.0.1', 'test', :beat, :beat, '[]', CAST(:subs AS jsonb))"
                ),
                {"u": user, "beat": beat, "subs": f'["{auction}"]'},
            )
    live = new(db, user, template=template, template_data={"amount": "$1"}, auction_id=watched)
    gone = new(db, user, template=template, template_data={"amount": "$1"}, auction_id=stale)
    claim(claims(db))
    d = rows(db, live)
    assert d["in_app"].status == "queued"
    assert {d[c].policy_reason for c in ("push", "email")} == {"user watching live"}
    assert {d[c].status for c in ("push", "email")} == {"cancelled"}
    assert {x.status for x in rows(db, gone).values()} == {"queued"}


def test_rate_limit_holds_to_the_next_hour(db: Engine) -> None:
    user = uuid.uuid4()
    ids = [new(db, user, channels=["sms", "in_app"]) for _ in range(5)]
    c = claims(db, PolicyConfig(rate_limit=3))
    now = dt.datetime.now(UTC)
    claim(c, now=now)
    sms = [rows(db, i)["sms"] for i in ids]
    assert sum(1 for d in sms if d.held_until is None) == 3
    nxt = now.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    assert {d.held_until for d in sms if d.held_until is not None} == {nxt}
    assert {rows(db, i)["in_app"].held_until for i in ids} == {None}


def test_retention_removes_the_policy_state_nothing_reads_any_more(db: Engine) -> None:
    now = dt.datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    user = uuid.uuid4()
    with sessionmaker(db).begin() as s:
        s.add_all(
            [
                CollapseWindow(
                    user_id=user,
                    auction_id=uuid.uuid4(),
                    collapse_key="english/outbid",
                    closes_at=now - dt.timedelta(hours=2),
                ),
                CollapseWindow(
                    user_id=user,
                    auction_id=uuid.uuid4(),
                    collapse_key="english/outbid",
                    closes_at=now - dt.timedelta(minutes=5),
                ),
                RateCounter(user_id=user, channel="sms", hour_start=hour - dt.timedelta(hours=3)),
                RateCounter(user_id=user, channel="sms", hour_start=hour - dt.timedelta(hours=1)),
                RateCounter(user_id=user, channel="sms", hour_start=hour),
            ]
        )
    keeper = Retention(sessionmaker(db), RetentionPolicy())
    assert keeper.count(now=now).counts["collapse_windows"] == 1
    report = keeper.purge(now=now, tables=["collapse_windows", "rate_counters"])
    assert (report.counts["collapse_windows"], report.counts["rate_counters"]) == (1, 1)
    with Session(db) as s:
        assert len(s.scalars(sa.select(CollapseWindow)).all()) == 1
        assert len(s.scalars(sa.select(RateCounter)).all()) == 2
