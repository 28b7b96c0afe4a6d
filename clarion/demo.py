"""``clarion demo``: the spec's auction notifications, end to end, on this machine.

With nothing configured it runs on the embedded default: a SQLite file
(``clarion-demo.db``, recreated each run), an in-process broker and workers,
and the provider sandboxes. With ``CLARION_DATABASE_URL`` set it migrates that
database and runs real ``clarion scheduler`` and ``clarion worker`` processes
on ``CLARION_BROKER_URL``, the sandboxes still standing in for the providers.

It creates demo users with addresses, sends the six auction notifications
across all five channels (one scheduled a few seconds ahead), one that fails
once and is retried, one that exhausts its attempts and dead-letters, and two
branded emails for readers whose locale is German and Arabic. The delivery
policy shows too: a burst of outbids folded into one follow-up, and an email
held by the user's quiet hours until their end. It shows progress, then a
table of the rows with each channel's policy decision and a line per email
sent.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import subprocess
import sys
import threading
import time
import uuid
import zoneinfo
from collections import Counter
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from channels.sandboxes.farm import SandboxFarm
from channels.sandboxes.http import Fault
from clarion import migrate, policy
from clarion.api import notify
from clarion.core.db import make_engine, session_factory
from clarion.core.settings import Settings, get_settings, reset_settings, safe_url
from clarion.exitcodes import ExitCode
from clarion.locales import money, set_locale
from models import Channel, Delivery, Notification, NotificationTemplate, UserAddress
from models.enums import DeliveryStatus

TERMINAL = {"sent", "delivered", "failed", "cancelled", "read", "clicked"}
DEMO_DB = "clarion-demo.db"
TIMEOUT = 90.0
#: The demo's own collapsible outbid: a short window, so that the follow-up
#: goes out while the demo watches (english/outbid keeps its 60 s).
DEMO_OUTBID = "demo/outbid"
DEMO_WINDOW = 4
QUIET_FOR = dt.timedelta(seconds=6)


def run_demo(*, serve_console: bool = False) -> int:
    # Wide enough for the table when the output is a file or a CI log.
    console = Console(width=None if sys.stdout.isatty() else 150)
    settings = get_settings()
    embedded = settings.database_url is None
    with SandboxFarm() as farm:
        env = {
            **farm.environment(),
            "CLARION_RETRY_MIN_BACKOFF": "0.5",
            "CLARION_RETRY_MAX_BACKOFF": "2",
            "CLARION_POLL_INTERVAL": "0.25" if embedded else "1",
        }
        if embedded:
            path = Path.cwd() / DEMO_DB
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            env["CLARION_DATABASE_URL"] = f"sqlite:///{path}"
            console.print(f"[bold]Embedded mode[/]: SQLite {path}, in-process broker and workers")
        else:
            env["CLARION_DATABASE_URL"] = settings.database_url or ""
            env["CLARION_BROKER_URL"] = settings.broker_url
            env["CLARION_REDIS_URL"] = settings.redis_url
            console.print(
                f"[bold]Configured mode[/]: {safe_url(settings.database_url or '')}, broker "
                f"{safe_url(settings.broker_url)}, real scheduler and worker processes"
            )
        demo_settings = Settings.from_env({**os.environ, **env})
        reset_settings(demo_settings)
        migrate.upgrade(demo_settings.effective_database_url)
        engine = make_engine(demo_settings.effective_database_url)
        sessions = session_factory(engine)

        ids = _create_demo_data(sessions, farm, console)
        runner = (
            _EmbeddedRunner(demo_settings) if embedded else _ProcessRunner({**os.environ, **env})
        )
        runner.start()
        try:
            ok = _watch(sessions, ids, console)
        finally:
            runner.stop()
        _report(sessions, ids, console, runner.dead_letters())
        console.print(f"provider calls: {farm.request_counts()}")
        _report_emails(farm, console)
        key = _console_key(sessions)
        engine.dispose()
    _print_console(console, demo_settings, key, serving=serve_console)
    if serve_console:
        from clarion.web.runner import serve

        serve(
            demo_settings,
            host=demo_settings.web_host,
            port=demo_settings.web_port,
            workers=1,
        )
    reset_settings(None)
    return ExitCode.OK if ok else ExitCode.UNEXPECTED


def _console_key(sessions: Any) -> str:
    """An ``operate`` key for the demo's console, in the demo's database."""
    from models.apikeys import ApiKeys, Scope

    _info, key = ApiKeys(sessions).create("demo console", [Scope.OPERATE, Scope.READ])
    return key


def _print_console(console: Console, settings: Settings, key: str, *, serving: bool) -> None:
    # The key rides in the URL's #fragment: the browser fills the sign-in form
    # with it and never sends it to the server (nor to its logs).
    url = f"http://{settings.web_host}:{settings.web_port}/console/login#key={key}"
    if serving:
        console.print("The operators' console shows these rows (Ctrl-C stops it):")
    else:
        db = safe_url(settings.effective_database_url)
        console.print(
            "The operators' console shows these rows once `clarion web` serves this database:\n"
            f"  CLARION_DATABASE_URL={db} clarion web"
        )
    console.print(url, soft_wrap=True, highlight=False)


# --- demo data --------------------------------------------------------------------------


def _create_demo_data(sessions: Any, farm: SandboxFarm, console: Console) -> list[uuid.UUID]:
    alice, bob, carol, dave, erika, amira = (uuid.uuid4() for _ in range(6))
    secret = "whsec_ZGVtby1zaWduaW5nLXNlY3JldC0xMjM0NTY3OA=="
    dead_token = "fcm-token-bob-uninstalled"
    farm.fcm.unregister(dead_token)
    with sessions.begin() as s:
        s.add_all(
            [
                UserAddress(user_id=alice, channel=Channel.EMAIL, address="alice@example.com"),
                UserAddress(user_id=alice, channel=Channel.SMS, address="+14155550101"),
                UserAddress(user_id=alice, channel=Channel.PUSH, address="fcm-token-alice-phone"),
                UserAddress(
                    user_id=alice,
                    channel=Channel.WEBHOOK,
                    address=f"{farm.webhook.url}/alice",
                    secret=secret,
                ),
                UserAddress(user_id=bob, channel=Channel.EMAIL, address="bob@example.com"),
                UserAddress(user_id=bob, channel=Channel.PUSH, address=dead_token),
                UserAddress(user_id=carol, channel=Channel.EMAIL, address="carol@example.com"),
                UserAddress(user_id=erika, channel=Channel.EMAIL, address="erika@example.de"),
                UserAddress(user_id=amira, channel=Channel.EMAIL, address="amira@example.ae"),
                UserAddress(
                    user_id=dave,
                    channel=Channel.WEBHOOK,
                    address=f"{farm.webhook.url}/dave-broken",
                    secret=secret,
                ),
            ]
        )
        # Erika reads German, Amira Arabic: their emails are rendered in their language.
        set_locale(erika, "de", session=s)
        set_locale(amira, "ar", session=s)
    # Alice's SMS provider hiccups once (503): retried, then delivered.
    farm.twilio.fail(Fault(status=503), times=1)
    # Dave's endpoint is down for good: 2 attempts, then the dead-letter queue.
    farm.webhook.fail(Fault(status=500, path_contains="dave-broken"), times=100)

    auction = uuid.uuid4()
    now = dt.datetime.now(dt.UTC)
    created = [
        notify(
            alice,
            template="english/new_bid",
            template_data={
                "auction_title": "Vintage Watch Collection",
                "bidder": "bob",
                "amount": "$150.00",
                "item_title": "1960s Omega Seamaster",
            },
            auction_id=auction,
        ),
        notify(
            alice,
            template="english/outbid",
            template_data={"amount": "$150.00"},
            channels=["in_app", "push", "email", "sms"],
            auction_id=auction,
            action_url="https://auctions.example.com/a/123",
            action_label="Bid again",
        ),
        notify(
            bob,
            template="penny/bid_placed",
            template_data={"auction_title": "iPad Penny Auction", "extension_seconds": 15},
        ),
        notify(
            bob,
            template="penny/auction_ending",
            template_data={"auction_title": "iPad Penny Auction", "time_remaining": "30s"},
        ),
        notify(
            carol,
            template="system/auction_started",
            template_data={"auction_title": "Rare Coins"},
            scheduled_at=now + dt.timedelta(seconds=4),
        ),
        notify(
            alice,
            template="system/auction_ended",
            template_data={"auction_title": "Vintage Watch Collection", "winner": "alice"},
            channels=["in_app", "email", "webhook"],
        ),
        notify(
            erika,
            template="english/outbid",
            template_data={"amount": money("1250", "EUR")},
            channels=["email"],
            auction_id=auction,
            action_url="https://auctions.example.com/a/123",
            action_label="Erneut bieten",
        ),
        notify(
            amira,
            template="system/auction_ended",
            template_data={"auction_title": "Vintage Watch Collection", "winner": "alice"},
            channels=["email"],
            action_url="https://auctions.example.com/a/123",
        ),
        notify(
            dave,
            title="Payment reminder",
            message="Your invoice for the Rare Coins auction is due.",
            category="payment",
            channels=["webhook"],
            max_attempts=2,
        ),
    ]
    created += _policy_demo(sessions, alice, carol, now)
    console.print(
        f"created {len(created)} notifications for 6 users "
        "(one scheduled 4 s ahead, one retried, one to dead-letter, "
        "one email in German and one in Arabic; "
        f"4 outbids within {DEMO_WINDOW} s to fold, one email in quiet hours)"
    )
    return [n.notification_id for n in created]


def _policy_demo(
    sessions: Any, alice: uuid.UUID, carol: uuid.UUID, now: dt.datetime
) -> list[Notification]:
    """A folded outbid burst and a message held by quiet hours."""
    auction_type, event = DEMO_OUTBID.split("/")
    with sessions.begin() as s:
        if not s.scalars(
            sa.select(NotificationTemplate).where(
                NotificationTemplate.auction_type == auction_type,
                NotificationTemplate.event == event,
            )
        ).first():
            s.add(
                NotificationTemplate(
                    auction_type=auction_type,
                    event=event,
                    category="bid",
                    title="You've been outbid",
                    message="Someone bid higher than your {amount} bid",
                    priority="high",
                    channels=["in_app", "push", "email"],
                    collapsible=True,
                    collapse_window_seconds=DEMO_WINDOW,
                    collapse_title="You've been outbid {count} times",
                    collapse_message="Outbid {count} times, current price {amount}",
                )
            )
    # Carol's quiet hours end a few seconds from now, on Tokyo's clock.
    zone = "Asia/Tokyo"
    local = now.astimezone(zoneinfo.ZoneInfo(zone))
    policy.set_quiet_hours(
        carol,
        (local - dt.timedelta(hours=1)).time().replace(microsecond=0),
        (local + QUIET_FOR).time().replace(microsecond=0),
        zone,
    )
    watch = uuid.uuid4()
    burst = [
        notify(
            alice,
            template=DEMO_OUTBID,
            template_data={"amount": amount},
            auction_id=watch,
            action_url="https://auctions.example.com/a/456",
        )
        for amount in ("$210.00", "$260.00", "$290.00", "$310.00")
    ]
    held = notify(
        carol,
        title="Your watchlist",
        message="Rare Coins has 3 new lots.",
        category="auction",
        channels=["in_app", "email"],
    )
    return [*burst, held]


# --- runners ------------------------------------------------------------------------------


class _EmbeddedRunner:
    """Scheduler thread + Dramatiq worker threads on a StubBroker, in this process."""

    def __init__(self, settings: Settings) -> None:
        import dramatiq

        from channels.in_app import InAppProvider, MemoryPublisher
        from channels.registry import Providers
        from scheduler.runtime import build_scheduler
        from workers.actors import declare_actors
        from workers.broker import make_broker
        from workers.runtime import build_deliverer

        self.broker = make_broker(settings, stub=True)
        dramatiq.set_broker(self.broker)
        # No Redis in embedded mode: the in-app channel publishes in memory.
        providers = Providers(settings, {Channel.IN_APP: InAppProvider(MemoryPublisher())})
        deliverer = build_deliverer(settings, providers)
        actors = declare_actors(self.broker, lambda: deliverer)
        from clarion.followups import FollowUps

        # No gateway in embedded mode either: presence comes from the rows.
        self.scheduler = build_scheduler(
            dataclasses.replace(settings, policy_presence="rows"),
            self.broker,
            actors,
            follow_ups=FollowUps(settings),
        )
        self.worker = dramatiq.Worker(self.broker, worker_threads=4, worker_timeout=100)
        self._thread = threading.Thread(target=self.scheduler.run, name="scheduler", daemon=True)

    def start(self) -> None:
        self.worker.start()
        self._thread.start()

    def stop(self) -> None:
        self.scheduler.stop()
        self._thread.join(timeout=10)
        self.worker.stop()

    def dead_letters(self) -> int:
        return len(self.broker.dead_letters)  # type: ignore[attr-defined]


class _ProcessRunner:
    """Real ``clarion scheduler`` and ``clarion worker`` processes."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        clarion = [sys.executable, "-m", "clarion"]
        self.procs = [
            subprocess.Popen(
                # --port 0: no /metrics endpoint, so that demos never fight over a port
                [*clarion, "worker", "--processes", "1", "--threads", "8", "--port", "0"],
                env=self.env,
            ),
            subprocess.Popen([*clarion, "scheduler", "--port", "0"], env=self.env),
        ]

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()

    def dead_letters(self) -> int:
        from workers.queues import all_queues

        if not self.env.get("CLARION_BROKER_URL", "redis").startswith("redis"):
            return -1
        import redis

        client = redis.Redis.from_url(self.env["CLARION_BROKER_URL"])
        return sum(int(client.hlen(f"dramatiq:{q}.XQ.msgs")) for q in all_queues())


# --- progress and report --------------------------------------------------------------------


def _watch(sessions: Any, ids: list[uuid.UUID], console: Console) -> bool:
    deadline = time.monotonic() + TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        with sessions() as s:
            notes = (
                s.execute(
                    sa.select(Notification.status).where(Notification.notification_id.in_(ids))
                )
                .scalars()
                .all()
            )
            open_deliveries = s.scalar(
                sa.select(sa.func.count())
                .select_from(Delivery)
                .where(
                    Delivery.notification_id.in_(ids),
                    Delivery.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.SENDING]),
                )
            )
        counts = Counter(str(getattr(st, "value", st)) for st in notes)
        line = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        if line != last:
            console.print(f"[{time.strftime('%H:%M:%S')}] notifications: {line}")
            last = line
        if all(str(getattr(st, "value", st)) in TERMINAL for st in notes) and not open_deliveries:
            return True
        time.sleep(0.25)
    console.print("[red]timed out waiting for deliveries[/]")
    return False


def _report(sessions: Any, ids: list[uuid.UUID], console: Console, dead: int) -> None:
    table = Table(title="notifications", show_lines=True)
    decisions: list[str] = []
    for column in ("title", "status", "attempts", "channels", "provider responses", "error"):
        table.add_column(column, overflow="fold")
    with sessions() as s:
        rows = s.scalars(
            sa.select(Notification)
            .where(Notification.notification_id.in_(ids))
            .order_by(Notification.created_at)
        ).all()
        for n in rows:
            deliveries = s.scalars(
                sa.select(Delivery).where(Delivery.notification_id == n.notification_id)
            ).all()
            channels = "\n".join(
                f"{d.channel.value}: {d.status.value} ({d.attempts})"
                + (" *" if d.policy_reason else "")
                for d in deliveries
            ) or ", ".join(n.delivery_channels)
            decisions += [
                f"  {n.title}: {d.channel.value} {d.status.value}: {d.policy_reason}"
                for d in deliveries
                if d.policy_reason
            ]
            responses = "\n".join(
                f"{k}: {_short(v)}" for k, v in sorted((n.provider_response or {}).items())
            )
            table.add_row(
                n.title,
                n.status.value,
                str(n.delivery_attempts),
                channels,
                responses,
                n.error_message or "",
            )
    console.print(table)
    console.print("delivery policy decisions (* above):", highlight=False)
    for line in decisions:
        console.print(line, markup=False, highlight=False)
    if dead >= 0:
        console.print(f"dead-letter queue: {dead} message(s)")


def _report_emails(farm: SandboxFarm, console: Console) -> None:
    """One line per email the SES sandbox received: language, direction, parts."""
    from channels.sandboxes.ses import raw_mime

    for payload in list(farm.ses.sent):
        if "Raw" not in payload.get("Content", {}):
            continue
        mail = raw_mime(payload)
        parts = [p.get_content_type() for p in mail.walk() if not p.is_multipart()]
        html_part = next((p for p in mail.walk() if p.get_content_type() == "text/html"), None)
        body = html_part.get_payload(decode=True) if html_part else None
        markup = body.decode("utf-8") if isinstance(body, bytes) else ""
        lang = re.search(r'<html lang="([^"]+)" dir="(\w+)"', markup)
        where = f"lang={lang.group(1)} dir={lang.group(2)}" if lang else "no layout"
        console.print(
            f"email to {payload['Destination']['ToAddresses'][0]}: {mail['Subject']!s} "
            f"({mail.get_content_type()}: {' + '.join(parts)}, {where})"
        )


def _short(value: Any) -> str:
    if isinstance(value, dict):
        for key in ("MessageId", "sid", "name", "status", "receivers"):
            if key in value:
                text = str(value[key]).rsplit("/", 1)[-1]
                return f"{key}={text[:24]}"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
