"""``clarion worker`` must set PROMETHEUS_MULTIPROC_DIR before prometheus_client is first
imported (the library picks its multiprocess values at import, and Dramatiq's forks
inherit that choice). So neither the command line nor the worker's endpoint module may
import it on their own: this test fails the day an import added elsewhere does."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
import clarion.cli
clarion.cli.build_parser()
import workers.exposition
print(json.dumps(sorted(m for m in sys.modules if m.startswith("prometheus_client"))))
"""


def test_the_cli_and_the_exposition_module_do_not_import_prometheus_client() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == []
