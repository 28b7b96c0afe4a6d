"""How a benchmark hands its figures over: a printed table, a JSON file, PNG charts."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def default_json(name: str) -> Path:
    """``bench/results/<name>-<UTC time>.json`` (git-ignored), or under the directory
    ``CLARION_BENCH_RESULTS`` names."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    results = Path(os.environ.get("CLARION_BENCH_RESULTS") or ROOT / "bench" / "results")
    return results / f"{name}-{stamp}.json"


def machine() -> dict[str, Any]:
    """What a figure needs beside it: when, on which commit, how loaded the machine was."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit or None,
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()),
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table, numbers formatted as they are printed in the docs."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.0f}"
        if isinstance(value, int):
            return f"{value:,}"
        return "-" if value is None else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    """Write ``data`` (with the machine's figures under ``machine``) as indented JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2, default=str) + "\n")
    return path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    return plt


def throughput_chart(path: Path, points: Sequence[Mapping[str, Any]], title: str) -> Path:
    """Deliveries/s against the provider's latency, Clarion and the bare no-op.

    ``points``: dicts with ``broker``, ``channel``, ``latency_ms``, ``rate`` and
    ``bare_rate`` (the no-op drain on the same broker in the same run); with
    ``thread_cap`` (processes x threads) the one-request-per-thread bound is drawn.
    """
    if not points:
        raise ValueError("throughput_chart: no points to draw")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    series: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for p in points:
        series.setdefault((p["broker"], p["channel"]), []).append(p)
    bare: dict[str, float] = {}
    for (broker, channel), pts in sorted(series.items()):
        pts = sorted(pts, key=lambda p: p["latency_ms"])
        xs = [p["latency_ms"] for p in pts]
        ax.plot(xs, [p["rate"] for p in pts], marker="o", label=f"Clarion {channel}, {broker}")
        bare[broker] = max(float(p["bare_rate"]) for p in pts)
    cap = [p for p in points if p.get("thread_cap")]
    if cap:
        # One thread per request in flight: processes x threads / latency at most.
        given = sorted({float(p["latency_ms"]) for p in cap if p["latency_ms"] > 0})
        if given:
            lo, hi = given[0], given[-1]
            xs = [lo + (hi - lo) * i / 60 for i in range(61)]
            top = max(max(bare.values(), default=0.0), max(float(p["rate"]) for p in points))
            ys = [min(cap[0]["thread_cap"] / (x / 1000), top) for x in xs]
            ax.plot(xs, ys, linestyle=":", color="black", label="thread cap (P x T / latency)")
    for broker, rate in sorted(bare.items()):
        ax.axhline(rate, linestyle="--", linewidth=1, color="grey")
        ax.annotate(f"bare no-op, {broker}", (0, rate), textcoords="offset points", xytext=(4, 3))
    ax.set_xlabel("provider latency (ms)")
    ax.set_ylabel("deliveries / s")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="center right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def latency_chart(path: Path, series: Mapping[str, Sequence[float]], title: str) -> Path:
    """Cumulative distribution of creation -> provider acceptance (seconds in,
    milliseconds on the axis). A label ending in ``low load`` or ``half load`` goes
    to that panel (else the first); ``rabbitmq`` in a label draws it dashed."""
    drawn = {label: sorted(v) for label, v in series.items() if v}
    if not drawn:
        raise ValueError("latency_chart: no latencies to draw")
    plt = _pyplot()
    from matplotlib import ticker

    panels = ("low load", "half load")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), dpi=110, sharey=True)
    colours: dict[str, Any] = {}
    cmap = plt.get_cmap("tab10")
    for label, values in drawn.items():
        panel = next((i for i, p in enumerate(panels) if label.endswith(p)), 0)
        scenario = (
            label.removesuffix(", " + panels[panel])
            .replace(", rabbitmq", "")
            .replace(", redis", "")
        )
        colour = colours.setdefault(scenario, cmap(len(colours) % 10))
        n = len(values)
        axes[panel].step(
            [v * 1000 for v in values],
            [(i + 1) / n for i in range(n)],
            where="post",
            color=colour,
            linestyle="--" if "rabbitmq" in label else "-",
            label=f"{label.removesuffix(', ' + panels[panel])} (n={n:,})",
        )
    for ax, name in zip(axes, panels, strict=True):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())  # decades only: readable
        ax.set_xlabel("creation -> provider acceptance (ms, log scale)")
        ax.axhline(0.99, linestyle=":", linewidth=1, color="grey")
        ax.set_title(f"{title}: {name}", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("fraction of deliveries")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]
