"""The delivery policy end to end: a real scheduler and worker, the real SDKs, the sandboxes.

Each test has users, auctions and a collapsible outbid template of its own
(windows of a few seconds), so that they share the module's processes.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
import uuid
import zoneinfo
from typing import Any

import pytest
import sqlalchemy as sa
from harness import CLARION, ROOT, Stack
from pipekit import Pipeline, User
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from clarion import policy
from clarion.api import notify
from models.notifications import Delivery, NotificationTemplate
from models.preferences import UserQuietHours

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(300)]

UTC = dt.UTC
WINDOW = 6  # seconds: longer than the 5 s bursts below


@pytest.fixture(scope="module")
def template(engine: Engine) -> str:
    kind = f"p{uuid.uuid4().hex[:8]}"
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
                collapse_window_seconds=WINDOW,
                collapse_title="You've been outbid {count} times",
                collapse_message="Outbid {count} times, current price {amount}",
            )
        )
    return f"{kind}/outbid"


def outbid(pl: Pipeline, user: User, template: str, auction: uuid.UUID, amount: str) -> uuid.UUID:
    with pl.sessions.begin() as s:
        return notify(
            user.user_id,
            template=template,
            template_data={"amount": amount},
            auction_id=auction,
            session=s,
        ).notification_id


def settled(
    pl: Pipeline, ids: list[uuid.UUID], timeout: float = 30.0
) -> dict[uuid.UUID, dict[str, Delivery]]:
    """Wait until every notification has its deliveries and none is still queued or sending."""

    def done() -> dict[uuid.UUID, dict[str, Delivery]] | None:
        found = {i: pl.deliveries(i) for i in ids}
        if all(
            rows
            and all(d.status in {"sent", "delivered", "failed", "cancelled"} for d in rows.values())
            for rows in found.values()
        ):
            return found
        return None

    return pl.wait_until(done, timeout=timeout, what="deliveries to end")


def status_of(pl: Pipeline, notification_id: uuid.UUID, channel: str) -> str | None:
    found = pl.deliveries(notification_id).get(channel)
    return None if found is None else str(found.status)


def cli(stack: Stack, *args: str) -> Any:
    out = subprocess.run(
        [CLARION, *args], env=stack.env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_opt_outs_required_and_all_opted_out(stack: Stack, pl: Pipeline) -> None:
    user = pl.user(email=True, sms=True)
    with pl.sessions.begin() as s:
        policy.opt_out(user.user_id, "sms", session=s)
        policy.opt_out(user.user_id, "email", "bid", session=s)
    partly = pl.notify(user, ["email", "sms", "in_app"])
    required = pl.notify(user, ["email", "sms"], category="payment")
    nothing = pl.notify(user, ["email", "sms"])
    found = settled(pl, [partly, required, nothing])
    assert {c: d.status for c, d in found[partly].items()} == {
        "email": "cancelled",
        "sms": "cancelled",
        "in_app": "delivered",
    }
    assert found[partly]["email"].policy_reason == "opted out of bid on email"
    assert {d.status for d in found[required].values()} == {"sent"}  # payment is required
    assert len(pl.twilio_requests(user.sms)) == 1
    cancelled = pl.notification(nothing)
    assert cancelled.status == "cancelled"
    assert cancelled.error_message == "email: opted out of bid on email; sms: opted out of sms"
    shown = cli(stack, "inspect", str(nothing), "--json")
    assert {d["policy"] for d in shown["deliveries"]} == {
        "opted out of bid on email",
        "opted out of sms",
    }


def test_quiet_hours_hold_until_the_end_in_the_users_zone(
    stack: Stack, pl: Pipeline, engine: Engine
) -> None:
    user = pl.user(email=True, push=True)
    zone = "America/New_York"
    local = dt.datetime.now(UTC).astimezone(zoneinfo.ZoneInfo(zone))
    start = (local - dt.timedelta(hours=1)).time().replace(microsecond=0)
    end = (local + dt.timedelta(seconds=5)).time().replace(microsecond=0)
    with pl.sessions.begin() as s:
        policy.set_quiet_hours(user.user_id, start, end, zone, session=s)
    quiet = pl.notify(user, ["email", "push", "in_app"], category="auction")
    urgent = pl.notify(user, ["email", "in_app"], category="auction", priority="urgent")
    # in-app and the urgent one go at once; email and push wait
    pl.wait_until(
        lambda: (
            status_of(pl, quiet, "in_app") == "delivered"
            and status_of(pl, urgent, "email") == "sent"
        ),
        timeout=15,
        what="in-app and urgent email",
    )
    held = pl.deliveries(quiet)
    assert held["email"].status == "queued" and held["email"].held_until is not None
    until = held["email"].held_until
    assert f"quiet hours ({zone}) until" in (held["email"].policy_reason or "")
    assert len(pl.ses_requests(quiet)) == 0
    status = cli(stack, "status", "--json")
    assert status["held"] >= 2
    found = settled(pl, [quiet], timeout=30)[quiet]
    assert {d.status for d in found.values()} == {"sent", "delivered"}
    assert found["email"].sent_at >= until  # type: ignore[operator]
    assert len(pl.ses_requests(quiet)) == 1
    with engine.begin() as conn:
        conn.execute(sa.delete(UserQuietHours).where(UserQuietHours.user_id == user.user_id))


def test_ten_outbids_in_five_seconds_per_auction(stack: Stack, pl: Pipeline, template: str) -> None:
    user = pl.user(email=True, push=True)
    auctions = [uuid.uuid4(), uuid.uuid4()]
    ids: dict[uuid.UUID, list[uuid.UUID]] = {a: [] for a in auctions}
    for i in range(10):
        for a in auctions:
            ids[a].append(outbid(pl, user, template, a, f"${300 + i}"))
        time.sleep(0.5)
    for notes in ids.values():
        found = settled(pl, notes, timeout=30)
        went = [
            i for i in notes if any(d.status in {"sent", "delivered"} for d in found[i].values())
        ]
        assert len(went) == 2, found
        first, follow_up = went
        assert first == notes[0]
        folded = [i for i in notes if i not in went]
        assert {d.folded_into for i in folded for d in found[i].values()} == {follow_up}
        assert {pl.notification(i).status for i in folded} == {"cancelled"}
        carrier = pl.notification(follow_up)
        assert carrier.message == "Outbid 10 times, current price $309"
        assert carrier.title == "You've been outbid 10 times"
        assert found[follow_up]["email"].sent_at - found[first]["email"].sent_at >= dt.timedelta(  # type: ignore[operator]
            seconds=WINDOW - 1
        )
        assert [len(pl.ses_requests(i)) for i in (first, follow_up)] == [1, 1]
    pushes = [json.loads(r.body)["message"] for r in pl.fcm_requests(user.push)]
    assert len(pushes) == 4
    keys = [p["android"]["collapse_key"] for p in pushes]
    assert {k.rsplit("-", 1)[1] for k in keys} == {a.hex for a in auctions}
    assert all(
        p["apns"]["headers"]["apns-collapse-id"] == p["android"]["collapse_key"] for p in pushes
    )
    shown = cli(stack, "inspect", str(ids[auctions[0]][5]), "--json")
    assert {d["policy"] for d in shown["deliveries"]} == {f"folded into {ids[auctions[0]][1]}"}
    carrier_view = cli(stack, "inspect", str(ids[auctions[0]][1]), "--json")
    assert len(carrier_view["notification"]["carries_folded"]) == 8


def test_a_rebid_cancels_the_pending_outbid_and_the_auction_end_every_one(
    stack: Stack, pl: Pipeline, template: str
) -> None:
    alice, bob = pl.user(email=True, push=True), pl.user(email=True, push=True)
    auction = uuid.uuid4()
    a1 = outbid(pl, alice, template, auction, "$10")
    b1 = outbid(pl, bob, template, auction, "$11")
    settled(pl, [a1, b1])
    a2 = outbid(pl, alice, template, auction, "$12")  # the follow-up, held
    b2 = outbid(pl, bob, template, auction, "$13")
    pl.wait_until(
        lambda: all(pl.deliveries(i) for i in (a2, b2)), timeout=10, what="follow-ups claimed"
    )
    with pl.sessions.begin() as s:  # alice bids again
        policy.cancel(user_id=alice.user_id, auction_id=auction, template=template, session=s)
    assert {d.status for d in pl.deliveries(a2).values()} == {"cancelled"}
    assert pl.notification(a2).status == "cancelled"
    b3 = outbid(pl, bob, template, auction, "$14")  # folded into b2
    pl.wait_until(lambda: pl.deliveries(b3), timeout=10, what="b3 claimed")
    with pl.sessions.begin() as s:  # the auction ends
        done = policy.cancel(
            auction_id=auction, template=template, reason="auction ended", session=s
        )
    assert done.deliveries == 3
    time.sleep(WINDOW + 2)  # past the window: nothing may go out now
    for i in (a2, b2, b3):
        assert {d.status for d in pl.deliveries(i).values()} == {"cancelled"}
    assert [len(pl.ses_requests(i)) for i in (a1, b1, a2, b2, b3)] == [1, 1, 0, 0, 0]
    assert pl.notification(b2).error_message == "auction ended"


# Presence (live from the gateways, the rows as the fallback) is tested with a real
# gateway in test_pipeline_live_presence.py.
