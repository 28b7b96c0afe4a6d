"""The delivery policy's pure decision (models.policy.decide), rule by rule."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.enums import Category, Channel, Priority
from models.policy import (
    Action,
    Collapse,
    Facts,
    PolicyConfig,
    QuietHours,
    State,
    UserPolicy,
    Window,
    decide,
    hour_slot,
    render_collapsed,
)

UTC = dt.UTC
USER = uuid.UUID("00000000-0000-0000-0000-00000000000a")
AUCTION = uuid.UUID("00000000-0000-0000-0000-0000000000a1")
NOON = dt.datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
ALL = (Channel.IN_APP, Channel.PUSH, Channel.EMAIL, Channel.SMS)


def facts(**kw: object) -> Facts:
    values: dict[str, object] = {
        "notification_id": uuid.uuid4(),
        "user_id": USER,
        "channels": ALL,
        "category": Category.BID,
        "priority": Priority.HIGH,
        "auction_id": AUCTION,
        "template_key": None,
        "collapsible": False,
    }
    values.update(kw)
    return Facts(**values)  # type: ignore[arg-type]


def outbid(**kw: object) -> Facts:
    return facts(template_key="english/outbid", collapsible=True, **kw)


def actions(decision: object) -> dict[Channel, Action]:
    return {d.channel: d.action for d in decision.deliveries}  # type: ignore[attr-defined]


def by_channel(decision: object, channel: Channel) -> object:
    return next(d for d in decision.deliveries if d.channel is channel)  # type: ignore[attr-defined]


CONFIG = PolicyConfig(rate_limit=0)


# --- preferences ------------------------------------------------------------------


def test_no_settings_sends_every_channel_now() -> None:
    d = decide(facts(), UserPolicy(), State(), CONFIG, NOON)
    assert actions(d) == dict.fromkeys(ALL, Action.SEND)
    assert d.cancelled is None


def test_opt_out_of_a_channel_skips_it_with_the_reason() -> None:
    user = UserPolicy(frozenset({(Channel.SMS, None)}))
    d = decide(facts(), user, State(), CONFIG, NOON)
    assert actions(d)[Channel.SMS] is Action.SKIP
    assert by_channel(d, Channel.SMS).reason == "opted out of sms"  # type: ignore[attr-defined]
    assert actions(d)[Channel.EMAIL] is Action.SEND


def test_opt_out_of_a_category_on_a_channel_skips_only_that_category() -> None:
    user = UserPolicy(frozenset({(Channel.SMS, Category.BID)}))
    bid = decide(facts(category=Category.BID), user, State(), CONFIG, NOON)
    assert actions(bid)[Channel.SMS] is Action.SKIP
    assert by_channel(bid, Channel.SMS).reason == "opted out of bid on sms"  # type: ignore[attr-defined]
    auction = decide(facts(category=Category.AUCTION), user, State(), CONFIG, NOON)
    assert actions(auction)[Channel.SMS] is Action.SEND


def test_required_template_ignores_opt_outs() -> None:
    user = UserPolicy(frozenset({(c, None) for c in ALL}))
    d = decide(facts(required=True), user, State(), CONFIG, NOON)
    assert actions(d) == dict.fromkeys(ALL, Action.SEND)


def test_required_category_ignores_opt_outs() -> None:
    user = UserPolicy(frozenset({(Channel.EMAIL, None)}))
    config = PolicyConfig(rate_limit=0, required_categories=frozenset({Category.PAYMENT}))
    d = decide(facts(category=Category.PAYMENT), user, State(), config, NOON)
    assert actions(d)[Channel.EMAIL] is Action.SEND


def test_every_channel_opted_out_cancels_the_notification_with_the_reasons() -> None:
    user = UserPolicy(frozenset({(Channel.EMAIL, None), (Channel.PUSH, Category.BID)}))
    d = decide(facts(channels=(Channel.EMAIL, Channel.PUSH)), user, State(), CONFIG, NOON)
    assert d.cancelled == "email: opted out of email; push: opted out of bid on push"


# --- quiet hours ------------------------------------------------------------------

PARIS = QuietHours("Europe/Paris", dt.time(22, 0), dt.time(7, 0))


def test_quiet_hours_hold_to_the_window_end_in_the_users_zone() -> None:
    # 23:30 in Paris (summer, UTC+2) is 21:30 UTC; the window ends 07:00 Paris = 05:00 UTC.
    now = dt.datetime(2026, 6, 10, 21, 30, tzinfo=UTC)
    d = decide(facts(), UserPolicy(quiet_hours=PARIS), State(), CONFIG, now)
    email = by_channel(d, Channel.EMAIL)
    assert email.action is Action.HOLD  # type: ignore[attr-defined]
    assert email.held_until == dt.datetime(2026, 6, 11, 5, 0, tzinfo=UTC)  # type: ignore[attr-defined]
    assert "quiet hours (Europe/Paris)" in email.reason  # type: ignore[attr-defined]


def test_quiet_hours_after_midnight_end_the_same_day() -> None:
    now = dt.datetime(2026, 6, 11, 1, 0, tzinfo=UTC)  # 03:00 Paris
    end = PARIS.release_at(now)
    assert end == dt.datetime(2026, 6, 11, 5, 0, tzinfo=UTC)


def test_outside_quiet_hours_nothing_is_held() -> None:
    assert PARIS.release_at(dt.datetime(2026, 6, 11, 5, 0, tzinfo=UTC)) is None  # 07:00 Paris
    assert PARIS.release_at(dt.datetime(2026, 6, 10, 19, 59, tzinfo=UTC)) is None  # 21:59
    assert PARIS.release_at(dt.datetime(2026, 6, 10, 20, 0, tzinfo=UTC)) is not None  # 22:00


def test_a_window_within_one_day() -> None:
    lunch = QuietHours("UTC", dt.time(12, 0), dt.time(14, 0))
    assert lunch.release_at(NOON) == dt.datetime(2026, 6, 10, 14, 0, tzinfo=UTC)
    assert lunch.release_at(NOON - dt.timedelta(seconds=1)) is None
    assert lunch.release_at(NOON + dt.timedelta(hours=2)) is None


def test_urgent_and_in_app_pass_quiet_hours() -> None:
    now = dt.datetime(2026, 6, 10, 21, 30, tzinfo=UTC)
    user = UserPolicy(quiet_hours=PARIS)
    urgent = decide(facts(priority=Priority.URGENT), user, State(), CONFIG, now)
    assert actions(urgent) == dict.fromkeys(ALL, Action.SEND)
    normal = decide(facts(), user, State(), CONFIG, now)
    assert actions(normal)[Channel.IN_APP] is Action.SEND
    assert actions(normal)[Channel.PUSH] is Action.HOLD


def test_required_passes_quiet_hours() -> None:
    now = dt.datetime(2026, 6, 10, 21, 30, tzinfo=UTC)
    d = decide(facts(required=True), UserPolicy(quiet_hours=PARIS), State(), CONFIG, now)
    assert actions(d) == dict.fromkeys(ALL, Action.SEND)


def test_quiet_hours_across_the_spring_forward_change() -> None:
    # New York, 2026-03-08: 02:00 EST becomes 03:00 EDT. 22:00-07:00: the
    # night is an hour shorter; 07:00 EDT is 11:00 UTC (the day before, 12:00).
    ny = QuietHours("America/New_York", dt.time(22, 0), dt.time(7, 0))
    before = dt.datetime(2026, 3, 8, 4, 0, tzinfo=UTC)  # 23:00 EST on the 7th
    assert ny.release_at(before) == dt.datetime(2026, 3, 8, 11, 0, tzinfo=UTC)
    night_before = dt.datetime(2026, 3, 7, 4, 0, tzinfo=UTC)  # 23:00 EST on the 6th
    assert ny.release_at(night_before) == dt.datetime(2026, 3, 7, 12, 0, tzinfo=UTC)


def test_quiet_hours_across_the_fall_back_change() -> None:
    # New York, 2026-11-01: 02:00 EDT becomes 01:00 EST; 07:00 EST is 12:00 UTC.
    ny = QuietHours("America/New_York", dt.time(22, 0), dt.time(7, 0))
    before = dt.datetime(2026, 11, 1, 3, 0, tzinfo=UTC)  # 23:00 EDT on Oct 31
    assert ny.release_at(before) == dt.datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    # 01:30 happens twice that night; both are inside the window.
    first = dt.datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT
    second = dt.datetime(2026, 11, 1, 6, 30, tzinfo=UTC)  # 01:30 EST
    assert ny.release_at(first) == ny.release_at(second) == before.replace(hour=12)


def test_a_window_end_skipped_by_the_change_ends_at_the_gap() -> None:
    # 00:00-02:30 in New York on 2026-03-08: 02:30 does not exist; the
    # window ends when the clocks jump, 03:00 EDT = 07:00 UTC.
    ny = QuietHours("America/New_York", dt.time(0, 0), dt.time(2, 30))
    at = dt.datetime(2026, 3, 8, 6, 0, tzinfo=UTC)  # 01:00 EST
    assert ny.release_at(at) == dt.datetime(2026, 3, 8, 7, 0, tzinfo=UTC)


def test_a_window_end_that_happens_twice_ends_at_its_first_occurrence() -> None:
    # 00:00-01:30 on 2026-11-01: 01:30 EDT (05:30 UTC) comes before 01:30 EST.
    ny = QuietHours("America/New_York", dt.time(0, 0), dt.time(1, 30))
    at = dt.datetime(2026, 11, 1, 4, 30, tzinfo=UTC)  # 00:30 EDT
    assert ny.release_at(at) == dt.datetime(2026, 11, 1, 5, 30, tzinfo=UTC)


def test_an_empty_window_holds_nothing() -> None:
    assert QuietHours("UTC", dt.time(3, 0), dt.time(3, 0)).release_at(NOON) is None


@given(
    st.datetimes(
        min_value=dt.datetime(2020, 1, 1),
        max_value=dt.datetime(2035, 1, 1),
        timezones=st.just(UTC),
    ),
    st.sampled_from(["Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Tokyo"]),
    st.times(),
    st.times(),
)
def test_a_held_time_is_outside_the_window_and_no_later_than_a_day(
    at: dt.datetime, zone: str, start: dt.time, end: dt.time
) -> None:
    quiet = QuietHours(
        zone, start.replace(second=0, microsecond=0), end.replace(second=0, microsecond=0)
    )
    release = quiet.release_at(at)
    if release is None:
        return
    assert at < release <= at + dt.timedelta(hours=25)
    assert quiet.release_at(release) is None


# --- collapse ---------------------------------------------------------------------


def run(batch: list[Facts], state: State, now: dt.datetime, config: PolicyConfig = CONFIG) -> list:
    out = []
    for f in batch:
        d = decide(f, UserPolicy(), state, config, now)
        state.apply(f, d, now)
        out.append(d)
    return out


def test_ten_outbids_in_five_seconds_are_one_now_one_follow_up_eight_folded() -> None:
    state = State()
    notes = [outbid() for _ in range(10)]
    decisions = []
    for i, f in enumerate(notes):
        decisions += run([f], state, NOON + dt.timedelta(seconds=i / 2))
    assert [d.collapse for d in decisions] == [Collapse.OPEN, Collapse.CARRY] + [Collapse.FOLD] * 8
    assert set(actions(decisions[0]).values()) == {Action.SEND}
    end = NOON + dt.timedelta(seconds=60)
    assert {d.held_until for d in decisions[1].deliveries} == {end}
    assert {d.action for d in decisions[1].deliveries} == {Action.HOLD}
    for d in decisions[2:]:
        assert {c.folded_into for c in d.deliveries} == {notes[1].notification_id}
        assert d.cancelled == f"folded into {notes[1].notification_id}"
    window = state.windows[(USER, AUCTION, "english/outbid")]
    assert window.count == 10
    assert window.latest_id == notes[-1].notification_id
    assert window.carrier_id == notes[1].notification_id


def test_collapse_is_per_auction() -> None:
    other = uuid.uuid4()
    state = State()
    decisions = run(
        [outbid(), outbid(auction_id=other), outbid(), outbid(auction_id=other)], state, NOON
    )
    assert [d.collapse for d in decisions] == [
        Collapse.OPEN,
        Collapse.OPEN,
        Collapse.CARRY,
        Collapse.CARRY,
    ]


def test_after_the_window_a_new_one_opens() -> None:
    state = State()
    run([outbid(), outbid()], state, NOON)
    later = run([outbid()], state, NOON + dt.timedelta(seconds=60))
    assert later[0].collapse is Collapse.OPEN
    assert set(actions(later[0]).values()) == {Action.SEND}


def test_the_templates_window_overrides_the_setting() -> None:
    state = State()
    run([outbid(collapse_window=5.0)], state, NOON)
    assert state.windows[(USER, AUCTION, "english/outbid")].closes_at == NOON + dt.timedelta(
        seconds=5
    )
    second = run([outbid()], state, NOON + dt.timedelta(seconds=6))
    assert second[0].collapse is Collapse.OPEN


def test_not_collapsible_or_without_auction_is_never_folded() -> None:
    state = State()
    plain = run([facts(), facts()], state, NOON)
    assert {d.collapse for d in plain} == {Collapse.NONE}
    no_auction = run([outbid(auction_id=None), outbid(auction_id=None)], state, NOON)
    assert {d.collapse for d in no_auction} == {Collapse.NONE}


def test_a_follow_up_due_in_quiet_hours_waits_for_their_end() -> None:
    state = State(
        windows={
            (USER, AUCTION, "english/outbid"): Window(
                opened_at=NOON,
                closes_at=NOON + dt.timedelta(seconds=60),
                count=1,
                first_id=uuid.uuid4(),
            )
        }
    )
    lunch = QuietHours("UTC", dt.time(12, 0, 30), dt.time(13, 0))
    d = decide(
        outbid(channels=(Channel.EMAIL,)), UserPolicy(quiet_hours=lunch), state, CONFIG, NOON
    )
    assert d.collapse is Collapse.CARRY
    assert d.deliveries[0].held_until == NOON + dt.timedelta(hours=1)


def test_render_collapsed_uses_the_latest_values_and_the_count() -> None:
    text = render_collapsed(
        "Outbid {count} times, current price {amount}", "x", {"amount": "$310"}, 4
    )
    assert text == "Outbid 4 times, current price $310"
    assert render_collapsed(None, "Someone bid $310", {}, 3) == "Someone bid $310 (3 updates)"
    assert render_collapsed("{more} more; {missing}", "x", {}, 3) == "2 more; {missing}"
    assert render_collapsed("{v}", "x", {"v": "<b>"}, 1, html_body=True) == "&lt;b&gt;"


# --- presence ---------------------------------------------------------------------


def test_watching_live_goes_in_app_only() -> None:
    state = State(watching={(USER, AUCTION)})
    d = decide(
        outbid(channels=(Channel.EMAIL, Channel.SMS, Channel.PUSH)),
        UserPolicy(),
        state,
        CONFIG,
        NOON,
    )
    acts = actions(d)
    assert acts[Channel.IN_APP] is Action.SEND  # added: they are watching
    for c in (Channel.EMAIL, Channel.SMS, Channel.PUSH):
        assert acts[c] is Action.SKIP
        assert by_channel(d, c).reason == "user watching live"  # type: ignore[attr-defined]
    assert d.cancelled is None


def test_watching_another_auction_changes_nothing() -> None:
    state = State(watching={(USER, uuid.uuid4())})
    d = decide(outbid(), UserPolicy(), state, CONFIG, NOON)
    assert set(actions(d).values()) == {Action.SEND}


def test_presence_applies_to_collapsible_templates_only() -> None:
    state = State(watching={(USER, AUCTION)})
    d = decide(facts(category=Category.PAYMENT), UserPolicy(), state, CONFIG, NOON)
    assert set(actions(d).values()) == {Action.SEND}


# --- rate limit -------------------------------------------------------------------


def test_over_the_rate_limit_is_held_to_the_next_hour() -> None:
    config = PolicyConfig(rate_limit=3)
    state = State()
    now = NOON + dt.timedelta(minutes=10)
    decisions = run(
        [facts(channels=(Channel.SMS, Channel.IN_APP)) for _ in range(5)], state, now, config
    )
    sms = [by_channel(d, Channel.SMS) for d in decisions]
    assert [s.action for s in sms] == [Action.SEND] * 3 + [Action.HOLD] * 2  # type: ignore[attr-defined]
    assert {s.held_until for s in sms[3:]} == {NOON + dt.timedelta(hours=1)}  # type: ignore[attr-defined]
    assert "rate limit 3/h" in sms[3].reason  # type: ignore[attr-defined]
    # in-app is never counted nor held
    assert {actions(d)[Channel.IN_APP] for d in decisions} == {Action.SEND}
    assert state.rate_used[(USER, Channel.SMS, hour_slot(now))] == 3
    assert state.rate_used[(USER, Channel.SMS, NOON + dt.timedelta(hours=1))] == 2


def test_a_full_next_hour_pushes_further() -> None:
    config = PolicyConfig(rate_limit=1)
    state = State(
        rate_used={
            (USER, Channel.SMS, NOON): 1,
            (USER, Channel.SMS, NOON + dt.timedelta(hours=1)): 1,
        }
    )
    d = decide(facts(channels=(Channel.SMS,)), UserPolicy(), state, config, NOON)
    assert d.deliveries[0].held_until == NOON + dt.timedelta(hours=2)


def test_required_is_not_rate_limited() -> None:
    config = PolicyConfig(rate_limit=1)
    state = State(rate_used={(USER, Channel.SMS, NOON): 5})
    d = decide(facts(channels=(Channel.SMS,), required=True), UserPolicy(), state, config, NOON)
    assert d.deliveries[0].action is Action.SEND
    assert d.rate_slots == ()


def test_a_rate_slot_in_quiet_hours_waits_for_their_end() -> None:
    config = PolicyConfig(rate_limit=1)
    state = State(rate_used={(USER, Channel.SMS, hour_slot(NOON)): 1})
    quiet = QuietHours("UTC", dt.time(13, 0), dt.time(15, 0))
    d = decide(facts(channels=(Channel.SMS,)), UserPolicy(quiet_hours=quiet), state, config, NOON)
    assert d.deliveries[0].held_until == NOON + dt.timedelta(hours=3)
    assert d.rate_slots == ((USER, Channel.SMS, NOON + dt.timedelta(hours=3)),)


@pytest.mark.parametrize("limit", [0])
def test_a_zero_limit_counts_nothing(limit: int) -> None:
    d = decide(facts(), UserPolicy(), State(), PolicyConfig(rate_limit=limit), NOON)
    assert d.rate_slots == ()
