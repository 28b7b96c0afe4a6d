"""Collapse with two schedulers: no duplicate follow-up, nothing lost.

A module of its own: its processes are its own (``stacks``), so that the
module-wide stack of another module does not claim its notifications.
"""

from __future__ import annotations

import time
import uuid

import pytest
from pipekit import Pipeline, StackFactory
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from clarion.api import notify
from models.notifications import NotificationTemplate

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(300)]

WINDOW = 6


def test_two_schedulers_fold_exactly(stacks: StackFactory, pl: Pipeline, engine: Engine) -> None:
    kind = f"s{uuid.uuid4().hex[:8]}"
    with sessionmaker(engine).begin() as s:
        s.add(
            NotificationTemplate(
                auction_type=kind,
                event="outbid",
                category="bid",
                title="You've been outbid",
                message="Someone bid higher than your {amount} bid",
                priority="high",
                channels=["push", "email"],
                collapsible=True,
                collapse_window_seconds=WINDOW,
                collapse_title="You've been outbid {count} times",
                collapse_message="Outbid {count} times, current price {amount}",
            )
        )
    # Small batches, so that the two schedulers interleave on the same windows.
    stacks("workers").start(scheduler=False)
    both = stacks("schedulers", CLARION_BATCH_SIZE="1")
    both.scheduler()
    both.scheduler()
    both.wait_ready()
    users = [pl.user(email=True, push=True) for _ in range(3)]
    auctions = [uuid.uuid4(), uuid.uuid4()]
    ids: dict[tuple[uuid.UUID, uuid.UUID], list[uuid.UUID]] = {}
    # Five bursts of two outbids per pair, interleaved in one commit, claimed
    # one by one: the schedulers take the two outbids of a pair side by side.
    amount = 100
    for _burst in range(5):
        with pl.sessions.begin() as s:
            for _ in range(2):
                for user in users:
                    for auction in auctions:
                        ids.setdefault((user.user_id, auction), []).append(
                            notify(
                                user.user_id,
                                template=f"{kind}/outbid",
                                template_data={"amount": f"${amount}"},
                                auction_id=auction,
                                session=s,
                            ).notification_id
                        )
                amount += 1
        time.sleep(0.8)

    every = [i for notes in ids.values() for i in notes]

    def ended() -> bool:
        for i in every:
            rows = pl.deliveries(i)
            if len(rows) != 2 or any(d.status in {"queued", "sending"} for d in rows.values()):
                return False
        return True

    pl.wait_until(ended, timeout=60, what="every outbid to end")
    for user in users:
        pushes = pl.fcm_requests(user.push)
        assert len(pushes) == 2 * len(auctions), "one immediate and one follow-up per auction"
    for (_user, _auction), notes in ids.items():
        went = [i for i in notes if {d.status for d in pl.deliveries(i).values()} == {"sent"}]
        assert len(went) == 2
        first, follow_up = went
        folded = set(notes) - set(went)
        assert len(folded) == 8
        for i in folded:
            rows = pl.deliveries(i)
            assert {d.folded_into for d in rows.values()} == {follow_up}
            assert {d.status for d in rows.values()} == {"cancelled"}
        assert pl.notification(follow_up).message == "Outbid 10 times, current price $109"
        assert [len(pl.ses_requests(i)) for i in notes] == [
            1 if i in (first, follow_up) else 0 for i in notes
        ]
