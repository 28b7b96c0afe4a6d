"""One entry point for the benchmarks: ``python -m bench <name> [options]``.

``python -m bench --list`` lists them; ``python -m bench <name> --help`` gives a
benchmark's options. Benchmarks written as modules of this package (``main(argv)``)
run in this process; the older stand-alone scripts run as a child process with the
same arguments, so ``python bench/<script>.py`` keeps working unchanged. A script
that takes ``--json`` is given ``bench/results/<name>-<time>.json`` when no path is
passed; the printed output of one that does not is kept in such a file.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402

#: Benchmarks that are modules with ``main(argv) -> int``.
MODULES = ("throughput", "dbwork")
#: Stand-alone scripts, run as they are.
SCRIPTS = (
    "urgent_backlog",
    "scheduler_enqueue",
    "publish_events",
    "notify_many",
    "http_pool",
    "realtime_gateway",
    "gateway_auth",
    "dlq",
    "policy_claim",
    "email_render",
    "web_api",
    "web_metrics",
)


def summary(name: str) -> str:
    """The first line of a benchmark's docstring, read without importing it."""
    doc = ast.get_docstring(ast.parse((HERE / f"{name}.py").read_text())) or ""
    line = doc.strip().splitlines()[0] if doc.strip() else ""
    return line.removeprefix("Benchmark: ")


def names() -> list[str]:
    return sorted([*MODULES, *SCRIPTS])


def run_script(name: str, argv: list[str]) -> int:
    """Run ``bench/<name>.py`` with ``argv``.

    A script that takes ``--json`` gets a default path; for one that does not,
    its printed output is kept, line by line, in a JSON file of its own (with
    the machine's load), so that every run leaves a record.
    """
    path = HERE / f"{name}.py"
    if any(a in ("-h", "--help") for a in argv):
        return subprocess.run([sys.executable, str(path), *argv], check=False).returncode
    if '"--json"' in path.read_text():
        if not any(a.startswith("--json") for a in argv):
            target = report.default_json(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            argv = [*argv, "--json", str(target)]
        return subprocess.run([sys.executable, str(path), *argv], check=False).returncode
    lines: list[str] = []
    with subprocess.Popen(
        [sys.executable, str(path), *argv], stdout=subprocess.PIPE, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            lines.append(line.rstrip("\n"))
    written = report.write_json(
        report.default_json(name),
        {"benchmark": name, "argv": argv, "returncode": proc.returncode, "output": lines},
    )
    print(f"JSON: {written}")
    return proc.returncode


def usage() -> str:
    lines = ["usage: python -m bench <name> [options]   (python -m bench <name> --help)", ""]
    lines += [f"  {n:<18} {summary(n)}" for n in names()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    if args[0] == "--list":
        for n in names():
            print(f"{n:<18} {summary(n)}")
        return 0
    name, rest = args[0].replace("-", "_"), args[1:]
    if name in MODULES:
        module = importlib.import_module(f"bench.{name}")
        return int(module.main(rest))
    if name in SCRIPTS:
        return run_script(name, rest)
    print(f"unknown benchmark {args[0]!r}; one of: {', '.join(names())}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
