"""``NotifyRequest`` is ``notify``'s keyword arguments, typed: the two cannot drift apart."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from clarion.api import NotifyRequest, notify


def test_fields_are_notifys_parameters() -> None:
    parameters = {
        name: p for name, p in inspect.signature(notify).parameters.items() if name != "session"
    }
    fields = {f.name: f for f in dataclasses.fields(NotifyRequest)}
    assert list(fields) == list(parameters)
    for name, field in fields.items():
        parameter = parameters[name]
        assert field.type == parameter.annotation, name
        expected = (
            dataclasses.MISSING
            if parameter.default is inspect.Parameter.empty
            else (parameter.default)
        )
        assert field.default == expected, name


def test_frozen() -> None:
    request = NotifyRequest(user_id="u")
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.title = "changed"  # type: ignore[misc]
