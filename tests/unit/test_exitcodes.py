"""Exit codes are named once; the numbers are what scripts and the README rely on."""

from __future__ import annotations

from clarion.exitcodes import ExitCode


def test_numbers_are_stable() -> None:
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0,
        "UNEXPECTED": 1,
        "USAGE": 2,
        "SETTINGS": 3,
        "DATABASE": 4,
        "BROKER": 5,
        "NOT_FOUND": 6,
        "UNHEALTHY": 7,
        "PARTIAL": 8,
        "INTERRUPTED": 130,
    }


def test_cli_and_operators_spell_no_numbers_of_their_own() -> None:
    import clarion.cli
    import clarion.operators.commands

    for module in (clarion.cli, clarion.operators.commands):
        assert not [name for name in vars(module) if name.startswith("EXIT_")]
