"""Build a scheduler from the settings (``clarion scheduler``)."""

from __future__ import annotations

import dramatiq
import sqlalchemy as sa

from clarion.core.db import make_engine, session_factory
from clarion.core.settings import Settings
from models.callbacks import CallbackOutbox
from models.claims import Claims
from models.enums import Category
from models.policy import PolicyConfig
from models.policy_state import FollowUpRenderer
from models.retention import Retention, RetentionPolicy
from scheduler.daemon import Scheduler
from scheduler.metrics import SchedulerMetrics
from workers.actors import batch_actors
from workers.callbacks import declare_callback_actor
from workers.presence import LivePresence


def build_scheduler(
    settings: Settings,
    broker: dramatiq.Broker,
    actors: dict[str, dramatiq.Actor[[str], None]],
    metrics: SchedulerMetrics | None = None,
    *,
    follow_ups: FollowUpRenderer,
) -> Scheduler:
    """The scheduler of ``settings``. ``follow_ups`` renders collapse follow-ups
    (``clarion.followups.FollowUps``: the top layer's, handed down by the entry point)."""
    url = settings.effective_database_url
    engine = make_engine(url)
    listen_url = None
    if engine.dialect.name == "postgresql":
        # psycopg wants a libpq URL, without SQLAlchemy's driver suffix.
        listen_url = (
            sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        )
    sessions = session_factory(engine)
    policy = policy_config(settings)
    presence = (
        LivePresence.from_url(settings.redis_url, settings.events_channel)
        if policy is not None and settings.policy_presence == "live"
        else None
    )
    return Scheduler(
        Claims(sessions, policy=policy, follow_ups=follow_ups, presence=presence),
        broker,
        actors,
        batch_size=settings.batch_size,
        lease_seconds=settings.queued_lease_seconds,
        poll_interval=settings.poll_interval,
        listen_url=listen_url,
        retention=Retention(sessions, RetentionPolicy.from_settings(settings)),
        retention_interval=settings.retention_interval,
        retention_max_seconds=settings.retention_max_seconds,
        metrics=metrics,
        callbacks=CallbackOutbox(engine) if settings.status_callback_url else None,
        # Declared here to make its messages; the workers declare it to run them.
        callback_actor=declare_callback_actor(broker, lambda: None)
        if settings.status_callback_url
        else None,
        callback_lease_seconds=settings.status_callback_lease_seconds,
        batch_actors=batch_actors(broker, actors),
        delivery_batch=settings.delivery_batch,
    )


def policy_config(settings: Settings) -> PolicyConfig | None:
    """The delivery policy's settings; None when ``CLARION_POLICY`` is off."""
    if not settings.policy_enabled:
        return None
    return PolicyConfig(
        rate_limit=settings.policy_rate_limit,
        collapse_window=settings.policy_collapse_window,
        presence_max_age=settings.policy_presence_max_age,
        required_categories=frozenset(
            Category(c) for c in settings.policy_required_categories.split(",") if c
        ),
    )
