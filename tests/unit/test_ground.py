"""The ground (``clarion.core``) stands alone: importing it loads nothing else of
Clarion's, no table, no Redis or broker client, and nothing of the top."""

from __future__ import annotations

import json
import subprocess
import sys

GROUND = (
    "clarion.core.clock",
    "clarion.core.db",
    "clarion.core.errors",
    "clarion.core.logging",
    "clarion.core.parse",
    "clarion.core.settings",
)
OURS = ("clarion", "models", "channels", "workers", "scheduler", "realtime", "migrations")

PROBE = f"""
import gc, json, sys
for name in {GROUND!r}:
    __import__(name)
import sqlalchemy as sa
tables = [o for o in gc.get_objects() if isinstance(o, sa.Table)]
print(json.dumps({{"modules": sorted(sys.modules), "tables": len(tables)}}))
"""


def _probe() -> dict[str, object]:
    # A fresh interpreter: this test process has imported everything already.
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_importing_the_ground_loads_only_the_ground() -> None:
    result = _probe()
    modules = result["modules"]
    assert isinstance(modules, list)
    ours = sorted(m for m in modules if m.split(".")[0] in OURS)
    assert ours == sorted(["clarion", "clarion.core", *GROUND])
    assert result["tables"] == 0
    for client in (
        "redis",
        "dramatiq",
        "boto3",
        "twilio",
        "pyfcm",
        "httpx",
        "websockets",
        "prometheus_client",
    ):
        assert client not in modules, client


def test_the_public_names_still_load_on_first_use() -> None:
    import clarion

    assert callable(clarion.notify)
    assert callable(clarion.publish_event)
    assert issubclass(clarion.ValidationError, clarion.ClarionError)
    assert "notify" in dir(clarion)
    try:
        _ = clarion.no_such_name  # type: ignore[attr-defined]
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("an unknown name must raise AttributeError")


def test_the_layers_contract_covers_every_part() -> None:
    """A module the contract does not name would be free of it: every package and
    every module of the top must stand in one layer."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    named = {part.strip() for layer in layers for part in layer.replace("|", ":").split(":")}
    top = {
        f"clarion.{p.stem}"
        for p in (root / "clarion").iterdir()
        if (p.suffix == ".py" or (p / "__init__.py").exists())
        and p.stem not in ("__init__", "__main__", "core")
    }
    packages = {p for p in config["root_packages"] if p != "clarion"}
    assert top | packages | {"clarion.core"} == named
