"""Benchmark: what the records' counts of ``clarion web``'s ``/metrics`` cost per scrape.

Creates a database of its own, migrated, with N notifications, two deliveries
each (email and sms, spread over statuses and providers) and two provider
calls per delivery, written by bulk ``INSERT ... SELECT generate_series``;
``VACUUM ANALYZE``s them, then times :class:`clarion.metrics.RecordsCollector`
(the four ``GROUP BY`` counts of one scrape) several times and prints the
median and the slowest.

    .venv/bin/python bench/web_metrics.py [-n 1000000] [--scrapes 7]

Run by hand; it prints its figures. Nothing here is a timed unit test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import scratch_database  # noqa: E402
from clarion.core.db import make_engine, session_factory  # noqa: E402
from clarion.metrics import RecordsCollector  # noqa: E402

SEED = [
    # One notification per i, mostly delivered, some failed or cancelled.
    """INSERT INTO notifications (notification_id, user_id, notification_type, category,
       priority, title, message, delivery_channels, status, max_attempts)
       SELECT gen_random_uuid(), gen_random_uuid(), 'email', 'bid', 'normal', 'Outbid',
              'Lot 7', '["email", "sms"]'::jsonb,
              (ARRAY['delivered','delivered','delivered','sent','failed','cancelled'])
                  [1 + i % 6]::notification_status,
              3
       FROM generate_series(1, :n) AS i""",
    """INSERT INTO notification_deliveries (delivery_id, notification_id, channel, status,
       attempts, provider)
       SELECT gen_random_uuid(), n.notification_id, c.channel::notification_channel,
              (CASE WHEN n.status::text = 'cancelled' THEN 'cancelled'
                    WHEN n.status::text = 'failed' THEN 'failed'
                    ELSE 'delivered' END)::delivery_status,
              1, CASE c.channel WHEN 'email' THEN 'ses' ELSE 'twilio' END
       FROM notifications n CROSS JOIN (VALUES ('email'), ('sms')) AS c(channel)""",
    """INSERT INTO delivery_attempts (delivery_id, notification_id, channel, attempt_number,
       provider, outcome, started_at, duration_ms)
       SELECT d.delivery_id, d.notification_id, d.channel, a.k, d.provider,
              (CASE WHEN a.k = 1 THEN 'sent' ELSE 'delivered' END)::attempt_outcome,
              now(), 40
       FROM notification_deliveries d CROSS JOIN (VALUES (1), (2)) AS a(k)""",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=1_000_000, help="notifications")
    parser.add_argument("--scrapes", type=int, default=7)
    args = parser.parse_args()

    with scratch_database() as url:
        engine = make_engine(url)
        started = time.perf_counter()
        with engine.begin() as conn:
            for statement in SEED:
                conn.execute(sa.text(statement), {"n": args.n})
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
        print(
            f"seeded {args.n:,} notifications, {2 * args.n:,} deliveries, "
            f"{4 * args.n:,} attempts in {time.perf_counter() - started:.1f} s"
        )
        # interval=0: count at every scrape (the service counts at most every 30 s).
        collector = RecordsCollector(session_factory(engine), timeout_ms=60_000, interval=0)
        times = []
        for _ in range(args.scrapes):
            t0 = time.perf_counter()
            families = list(collector.collect())
            times.append(time.perf_counter() - t0)
        up = next(f for f in families if f.name == "clarion_records_up").samples[0].value
        assert up == 1.0, "the records could not be counted"
        print(
            f"one scrape's records: median {statistics.median(times) * 1000:.0f} ms, "
            f"slowest {max(times) * 1000:.0f} ms over {args.scrapes} scrapes"
        )
        engine.dispose()


if __name__ == "__main__":
    main()
