"""The benchmarks' entry point and writers: they start, explain themselves and write
parseable files. No timings here: the benchmarks themselves are run by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from bench.__main__ import names  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def bench(*args: str, results: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLARION_BENCH_RESULTS": str(results)} if results else None
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_list_names_every_benchmark_with_its_summary() -> None:
    done = bench("--list")
    assert done.returncode == 0, done.stderr
    listed = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    assert set(listed) == set(names())
    assert {"throughput", "dbwork", "notify_many", "publish_events"} <= set(listed)
    # Each line carries the benchmark's one-line description, not just its name.
    assert all(len(line.split()) > 2 for line in listed.values())


def test_every_benchmark_answers_help() -> None:
    with ThreadPoolExecutor(4) as pool:
        results = dict(zip(names(), pool.map(lambda n: bench(n, "--help"), names()), strict=True))
    failed = {n: r.stderr[-500:] for n, r in results.items() if r.returncode != 0}
    assert not failed
    for name, done in results.items():
        assert "usage:" in done.stdout, name


def test_throughput_options_are_checked_with_a_clear_error() -> None:
    done = bench("throughput", "--channel", "carrier-pigeon")
    assert done.returncode == 2
    assert "carrier-pigeon" in done.stderr and "in_app" in done.stderr


def test_a_script_without_json_leaves_its_output_in_a_json_record(tmp_path: Path) -> None:
    done = bench("email_render", "--emails", "3", results=tmp_path)
    assert done.returncode == 0, done.stderr
    [record] = tmp_path.glob("email_render-*.json")
    data = json.loads(record.read_text())
    assert data["benchmark"] == "email_render" and data["returncode"] == 0
    assert data["argv"] == ["--emails", "3"]
    assert [line.split(":")[0] for line in data["output"]] == ["de", "ar"]
    assert str(record) in done.stdout


def test_an_unknown_benchmark_is_named() -> None:
    done = bench("no-such-bench")
    assert done.returncode == 2
    assert "no-such-bench" in done.stderr


def test_json_writer_adds_the_machine_and_parses(tmp_path: Path) -> None:
    path = report.write_json(tmp_path / "sub" / "out.json", {"runs": [{"rate": 12.5}]})
    data = json.loads(path.read_text())
    assert data["runs"] == [{"rate": 12.5}]
    assert len(data["machine"]["load_average"]) == 3
    assert data["machine"]["cpus"] >= 1


def test_charts_are_png_images(tmp_path: Path) -> None:
    from matplotlib import image

    points = [
        {"broker": "redis", "channel": "webhook", "latency_ms": ms, "rate": r, "bare_rate": 900.0}
        for ms, r in ((0, 400.0), (200, 250.0))
    ] + [
        {"broker": "redis", "channel": "in_app", "latency_ms": 0, "rate": 500.0, "bare_rate": 900.0}
    ]
    one = report.throughput_chart(tmp_path / "t.png", points, "synthetic")
    two = report.latency_chart(
        tmp_path / "l.png", {"low": [0.01, 0.02, 0.05], "half": [0.03, 0.2], "none": []}, "x"
    )
    for path in (one, two):
        assert path.read_bytes()[:8] == PNG_MAGIC
        height, width, _ = image.imread(path).shape
        assert width > 300 and height > 200


def test_charts_refuse_empty_data(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no points"):
        report.throughput_chart(tmp_path / "t.png", [], "empty")
    with pytest.raises(ValueError, match="no latencies"):
        report.latency_chart(tmp_path / "l.png", {"a": []}, "empty")


def test_table_and_percentile() -> None:
    text = report.table(["a", "b"], [(1234, 0.5), ("x", None)])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1,234 | 0.50 |", "| x | - |"]
    assert report.percentile([3.0, 1.0, 2.0, 4.0], 0.5) == 2.0
    assert report.percentile(list(map(float, range(1, 101))), 0.99) == 99.0
    assert report.percentile([], 0.5) is None
