"""Benchmark: the claim with and without the delivery policy, on the heavy path.

``bench/throughput.py`` sends in-app notifications: the policy then reads
opt-outs and quiet hours and nothing more (in-app is never held nor
counted). This one claims N notifications (no broker, no worker) whose
channels the policy does work on: email and push for 1,000 users, half of
them outbids (a collapsible template) on 200 auctions, so that collapse
windows and presence are read and locked and the rate counters written, with
opt-outs and quiet hours stored for a tenth of the users. It reports the
claim rate with ``policy=None`` and with the default policy, on fresh
databases, back to back.

    .venv/bin/python bench/policy_claim.py [-n 20000] [--batch 500]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import scratch_database  # noqa: E402
from clarion.core.db import make_engine, session_factory  # noqa: E402
from models.claims import Claims  # noqa: E402
from models.policy import PolicyConfig  # noqa: E402


def fill(engine: sa.Engine, n: int, seed: int) -> None:
    rng = random.Random(seed)
    users = [uuid.uuid4() for _ in range(1000)]
    auctions = [uuid.uuid4() for _ in range(200)]
    with engine.begin() as conn:
        outbid = conn.execute(
            sa.text(
                "SELECT template_id FROM notification_templates"
                " WHERE auction_type = 'english' AND event = 'outbid' AND locale = 'en'"
            )
        ).scalar_one()
        rows = []
        for i in range(n):
            collapsible = i % 2 == 0
            rows.append(
                {
                    "u": rng.choice(users),
                    "a": rng.choice(auctions),
                    "t": outbid if collapsible else None,
                    "title": f"Bench {i}",
                }
            )
        conn.execute(
            sa.text(
                "INSERT INTO notifications (user_id, notification_type, category, priority,"
                " title, message, delivery_channels, auction_id, template_id)"
                " VALUES (:u, 'email', 'bid', 'high', :title, 'Bench message',"
                ' \'["email", "push"]\'::jsonb, :a, :t)'
            ),
            rows,
        )
        for user in users[:100]:
            conn.execute(
                sa.text(
                    "INSERT INTO user_opt_outs (opt_out_id, user_id, channel, category)"
                    " VALUES (gen_random_uuid(), :u, 'push', 'marketing')"
                ),
                {"u": user},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO user_quiet_hours (user_id, time_zone, starts_at, ends_at)"
                    " VALUES (:u, 'Pacific/Kiritimati', '03:00', '03:01')"
                ),
                {"u": user},
            )


def run(n: int, batch: int, config: PolicyConfig | None) -> float:
    with scratch_database() as url:
        engine = make_engine(url)
        fill(engine, n, seed=7)
        claims = Claims(session_factory(engine), policy=config)
        start = time.perf_counter()
        taken = 0
        while True:
            got = claims.claim_due(
                batch_size=batch,
                lease_seconds=600,
                queue_for=lambda c, p: str(c),
                make_message=lambda d, q: uuid.uuid4().hex,
                now=dt.datetime.now(dt.UTC),
            )
            taken += got.notifications
            if got.notifications < batch:
                break
        elapsed = time.perf_counter() - start
        assert taken == n, taken
        engine.dispose()
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for _ in range(args.rounds):
        for label, config in (("no policy", None), ("policy", PolicyConfig())):
            elapsed = run(args.n, args.batch, config)
            print(
                f"claim, {label:9}: {args.n} notifications (email + push) in {elapsed:.2f} s"
                f" = {args.n / elapsed:.0f}/s"
            )


if __name__ == "__main__":
    main()
