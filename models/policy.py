"""The delivery policy: one pure decision per notification, taken at its claim.

Between the notification row and its channel deliveries, :func:`decide`
says, for each channel, whether it goes now, is held until a given instant,
is skipped, or is folded into another notification, and why. It reads only
its arguments: the notification (:class:`Facts`), the user's settings
(:class:`UserPolicy`), the state the claim read under lock
(:class:`State`: the collapse window, live presence, the rate counters) and
the process-wide :class:`PolicyConfig`. The claim (``models.claims``) loads
that state, calls this function once per notification in claim order,
applies :meth:`State.apply` so that the next notification of the same batch
sees the effect, and writes every decision to the rows with its reason.

The rules, in the order they apply (README, "Delivery policy"):

1. collapse: a collapsible template with an auction opens a window for
   (user, auction, template); the first notification goes at once, the
   second becomes the follow-up held to the window's end, later ones are
   folded into it;
2. presence: a collapsible notification for a user watching that auction
   live goes in-app only;
3. opt-outs of a channel, or of a category on a channel (not for required);
4. quiet hours in the user's zone hold non-urgent, non-required deliveries
   to the window's end (never in-app);
5. the per-user rate limit holds non-required deliveries beyond N per
   channel per clock hour to the next hour (never in-app).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import html
import re
import uuid
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from models.enums import Category, Channel, Priority

__all__ = [
    "Action",
    "ChannelDecision",
    "Collapse",
    "Decision",
    "Facts",
    "PolicyConfig",
    "QuietHours",
    "State",
    "UserPolicy",
    "Window",
    "decide",
    "hour_slot",
    "render_collapsed",
]

UTC = dt.UTC
HOUR = dt.timedelta(hours=1)
#: How many hours ahead the rate limit and quiet hours may push one delivery
#: before the search stops (a full day of slots, twice).
_MAX_SLOT_STEPS = 48

REASON_WATCHING = "user watching live"


class Action(enum.StrEnum):
    SEND = "send"  # queued now
    HOLD = "hold"  # queued with held_until; released by the scheduler then
    SKIP = "skip"  # cancelled with the reason (opt-out, presence)
    FOLD = "fold"  # cancelled, folded into the follow-up that carries it


class Collapse(enum.StrEnum):
    NONE = "none"  # not collapsible
    OPEN = "open"  # the first of a window: sent at once, opens the window
    CARRY = "carry"  # the second: the follow-up, held to the window's end
    FOLD = "fold"  # later ones: folded into the follow-up


@dataclasses.dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily window in the user's IANA time zone, e.g. 22:00-07:00.

    ``start == end`` is an empty window. A window whose start is after its
    end crosses midnight.
    """

    time_zone: str
    start: dt.time
    end: dt.time

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone)

    def release_at(self, at: dt.datetime) -> dt.datetime | None:
        """The instant (UTC) the window ends if ``at`` falls inside it, else None.

        Read on the wall clock of the zone. An end that does not exist on
        that day (skipped by a daylight-saving change) is the first instant
        after the gap; one that exists twice is its first occurrence.
        """
        if self.start == self.end:
            return None
        zone = self.zone
        local = at.astimezone(zone)
        wall = local.time().replace(tzinfo=None)
        crosses = self.start > self.end
        inside = (
            (wall >= self.start or wall < self.end) if crosses else self.start <= wall < self.end
        )
        if not inside:
            return None
        day = local.date()
        if crosses and wall >= self.start:
            day += dt.timedelta(days=1)
        return _first_instant_at(day, self.end, zone)


def _first_instant_at(day: dt.date, wall: dt.time, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """The earliest UTC instant whose wall time in ``zone`` on ``day`` is ``wall`` or later."""
    naive = dt.datetime.combine(day, wall)
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == naive:
        return first  # exists (once, or twice: fold=0 is the first occurrence)
    # In a gap: fold=1 reads it with the offset after the change, which lands
    # before the gap; fold=0 with the offset before, which lands after it.
    # The gap's end, the first instant showing a later wall time, lies between.
    low = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = first
    while high - low > dt.timedelta(seconds=1):
        mid = low + (high - low) / 2
        if mid.astimezone(zone).replace(tzinfo=None) >= naive:
            high = mid
        else:
            low = mid
    return high.replace(microsecond=0) + (
        dt.timedelta(seconds=1) if high.microsecond else dt.timedelta()
    )


@dataclasses.dataclass(frozen=True, slots=True)
class UserPolicy:
    """One user's settings: opt-outs as (channel, category or None for all) and quiet hours."""

    opt_outs: frozenset[tuple[Channel, Category | None]] = frozenset()
    quiet_hours: QuietHours | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class PolicyConfig:
    """The process-wide settings of the policy (``CLARION_POLICY_*``)."""

    rate_limit: int = 1000  # per user, channel and clock hour; 0: none
    collapse_window: float = 60.0
    presence_max_age: float = 60.0
    required_categories: frozenset[Category] = frozenset({Category.PAYMENT})


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Facts:
    """What the policy needs of one notification."""

    notification_id: uuid.UUID
    user_id: uuid.UUID
    channels: tuple[Channel, ...]
    category: Category
    priority: Priority
    auction_id: uuid.UUID | None = None
    template_key: str | None = None
    required: bool = False
    collapsible: bool = False
    collapse_window: float | None = None  # the template's own; None: the setting's


@dataclasses.dataclass(slots=True)
class Window:
    """The collapse window of one (user, auction, template), as read under its lock."""

    opened_at: dt.datetime | None = None
    closes_at: dt.datetime | None = None
    first_id: uuid.UUID | None = None
    carrier_id: uuid.UUID | None = None
    latest_id: uuid.UUID | None = None
    count: int = 0

    def open_at(self, now: dt.datetime) -> bool:
        return self.closes_at is not None and self.closes_at > now


@dataclasses.dataclass(slots=True)
class State:
    """What the claim read for a batch, updated as its notifications are decided."""

    #: (user_id, auction_id, template_key) -> window
    windows: dict[tuple[uuid.UUID, uuid.UUID, str], Window] = dataclasses.field(
        default_factory=dict
    )
    #: (user_id, auction_id) pairs with a live, subscribed gateway connection
    watching: set[tuple[uuid.UUID, uuid.UUID]] = dataclasses.field(default_factory=set)
    #: (user_id, channel, hour slot start) -> messages counted in that hour
    rate_used: dict[tuple[uuid.UUID, Channel, dt.datetime], int] = dataclasses.field(
        default_factory=dict
    )

    def apply(self, facts: Facts, decision: Decision, now: dt.datetime) -> None:
        """Record ``decision`` so that the next notification of the batch sees it."""
        if decision.window_key is not None and decision.window is not None:
            self.windows[decision.window_key] = decision.window
        for key in decision.rate_slots:
            self.rate_used[key] = self.rate_used.get(key, 0) + 1


@dataclasses.dataclass(frozen=True, slots=True)
class ChannelDecision:
    channel: Channel
    action: Action
    reason: str | None = None
    held_until: dt.datetime | None = None
    folded_into: uuid.UUID | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    deliveries: tuple[ChannelDecision, ...]
    collapse: Collapse = Collapse.NONE
    window_key: tuple[uuid.UUID, uuid.UUID, str] | None = None
    #: The window after this notification (to store), when collapsible.
    window: Window | None = None
    #: Rate counter slots this decision uses, one per counted delivery.
    rate_slots: tuple[tuple[uuid.UUID, Channel, dt.datetime], ...] = ()

    @property
    def cancelled(self) -> str | None:
        """The reason the whole notification ends cancelled, when no channel goes out."""
        if any(d.action in (Action.SEND, Action.HOLD) for d in self.deliveries):
            return None
        if self.collapse is Collapse.FOLD:
            return self.deliveries[0].reason if self.deliveries else "folded"
        reasons = dict.fromkeys(f"{d.channel.value}: {d.reason}" for d in self.deliveries)
        return "; ".join(reasons) or "no channel"


def hour_slot(at: dt.datetime) -> dt.datetime:
    """The clock hour (UTC) that ``at`` counts in for the rate limit."""
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def decide(
    facts: Facts,
    user: UserPolicy,
    state: State,
    config: PolicyConfig,
    now: dt.datetime,
) -> Decision:
    """Decide every channel of one notification (see the module's rules)."""
    required = facts.required or facts.category in config.required_categories
    urgent = facts.priority is Priority.URGENT

    # 1. collapse
    collapse, window_key, window, not_before = Collapse.NONE, None, None, None
    if facts.collapsible and facts.auction_id is not None and facts.template_key:
        window_key = (facts.user_id, facts.auction_id, facts.template_key)
        current = state.windows.get(window_key)
        if current is None or not current.open_at(now):
            seconds = facts.collapse_window or config.collapse_window
            collapse = Collapse.OPEN
            window = Window(
                opened_at=now,
                closes_at=now + dt.timedelta(seconds=seconds),
                first_id=facts.notification_id,
                latest_id=facts.notification_id,
                count=1,
            )
        else:
            window = dataclasses.replace(
                current, latest_id=facts.notification_id, count=current.count + 1
            )
            if current.carrier_id is None:
                collapse = Collapse.CARRY
                window.carrier_id = facts.notification_id
                not_before = current.closes_at
            else:
                collapse = Collapse.FOLD
                reason = f"folded into {current.carrier_id}"
                return Decision(
                    tuple(
                        ChannelDecision(
                            c, Action.FOLD, reason=reason, folded_into=current.carrier_id
                        )
                        for c in facts.channels
                    ),
                    collapse,
                    window_key,
                    window,
                )

    # 2. presence: watching live, a collapsible notification goes in-app only
    channels = list(facts.channels)
    watching = (
        facts.collapsible
        and facts.auction_id is not None
        and (facts.user_id, facts.auction_id) in state.watching
    )
    if watching and Channel.IN_APP not in channels:
        channels.append(Channel.IN_APP)

    decisions: list[ChannelDecision] = []
    slots: list[tuple[uuid.UUID, Channel, dt.datetime]] = []
    rate_used = dict(state.rate_used)
    for channel in channels:
        # 3. opt-outs
        if not required:
            if (channel, None) in user.opt_outs:
                decisions.append(
                    ChannelDecision(channel, Action.SKIP, f"opted out of {channel.value}")
                )
                continue
            if (channel, facts.category) in user.opt_outs:
                decisions.append(
                    ChannelDecision(
                        channel,
                        Action.SKIP,
                        f"opted out of {facts.category.value} on {channel.value}",
                    )
                )
                continue
        if watching and channel is not Channel.IN_APP:
            decisions.append(ChannelDecision(channel, Action.SKIP, REASON_WATCHING))
            continue
        at, reasons = now, []
        if not_before is not None and not_before > at:
            at = not_before
            reasons.append(f"collapse follow-up until {_iso(not_before)}")
        if channel is not Channel.IN_APP and not required:
            quiet = None if urgent else user.quiet_hours
            limit = config.rate_limit
            # 4 and 5 alternate until neither moves the time: an hour past
            # the limit may fall in quiet hours, and their end in a full hour.
            for _ in range(_MAX_SLOT_STEPS):
                moved = False
                if quiet is not None:
                    end = quiet.release_at(at)
                    if end is not None:
                        at, moved = end, True
                        reasons.append(f"quiet hours ({quiet.time_zone}) until {_iso(end)}")
                if limit:
                    slot = hour_slot(at)
                    if rate_used.get((facts.user_id, channel, slot), 0) >= limit:
                        at, moved = slot + HOUR, True
                        reasons.append(f"rate limit {limit}/h until {_iso(at)}")
                if not moved:
                    break
            if limit:
                key = (facts.user_id, channel, hour_slot(at))
                rate_used[key] = rate_used.get(key, 0) + 1
                slots.append(key)
        if at > now:
            decisions.append(ChannelDecision(channel, Action.HOLD, "; ".join(_dedupe(reasons)), at))
        else:
            decisions.append(ChannelDecision(channel, Action.SEND))
    if watching:
        decisions = [
            dataclasses.replace(d, reason=d.reason or f"in-app only: {REASON_WATCHING}")
            if d.channel is Channel.IN_APP and d.action is Action.SEND
            else d
            for d in decisions
        ]
    return Decision(tuple(decisions), collapse, window_key, window, tuple(slots))


def _dedupe(reasons: Iterable[str]) -> list[str]:
    """Keep the last reason of each kind (quiet hours, rate limit, collapse)."""
    last: dict[str, str] = {}
    for reason in reasons:
        last[reason.split(" ", 1)[0]] = reason
    return list(last.values())


def _iso(at: dt.datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def render_collapsed(
    text: str | None,
    fallback: str,
    data: Mapping[str, Any] | None,
    count: int,
    *,
    html_body: bool = False,
    number: Callable[[int], str] = str,
) -> str:
    """The follow-up's text: the template's collapse text with the latest values and
    ``{count}`` (events in the window, the first included) and ``{more}`` (after
    the first), or ``fallback`` (the latest message) with the count appended.

    Plain ``{name}`` placeholders only, as the notify templates; an unknown
    one is left as written, since the follow-up must go out regardless.
    ``number`` writes the count (the reader's digits and separators).
    """
    values: dict[str, Any] = {**(data or {}), "count": number(count), "more": number(count - 1)}
    if text is None:
        return f"{fallback} ({number(count)} updates)"

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            return match.group(0)
        value = str(values[name])
        return html.escape(value) if html_body else value

    return _PLACEHOLDER.sub(one, text)
