"""``publish_event``'s parameters and the typed spec it builds stay one and the same list."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from realtime.outbox import EventSpec, publish_event


def test_every_parameter_of_publish_event_is_a_field_of_the_spec_with_its_default() -> None:
    parameters = {
        name: p.default
        for name, p in inspect.signature(publish_event).parameters.items()
        if name != "session"
    }
    fields = {
        f.name: (f.default if f.default is not dataclasses.MISSING else inspect.Parameter.empty)
        for f in dataclasses.fields(EventSpec)
    }
    assert fields == parameters
    assert list(fields)[:2] == ["event_type", "event_data"]


def test_the_spec_is_frozen() -> None:
    spec = EventSpec(event_type="bid_placed", event_data={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.event_type = "other"  # type: ignore[misc]
    assert spec.visibility == "public" and spec.ack_timeout == 30
