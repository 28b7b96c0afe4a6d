"""How long rendering one branded email takes (layout, Babel, CSS inlining), by hand.

    python -m bench email_render [--emails 2000]

Renders the shipped default layout (migration 0004's data) in German and
Arabic, the way ``notify`` does for a notification that goes by email, and
prints the time per email and the size of what is stored.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

from clarion.emails import Layout, render_email
from clarion.locales import localize_data, money
from clarion.templating import render

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location(
    "m0004", ROOT / "migrations" / "versions" / "0004_email_layouts_locales.py"
)
assert spec is not None and spec.loader is not None
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
LAYOUT = Layout("default", 1, m.LAYOUT_HTML, m.LAYOUT_TEXT, m.LAYOUT_CSS, m.LAYOUT_STRINGS)
TEXTS = {(t[2], f"{t[0]}/{t[1]}"): (t[3], t[4]) for t in m.TRANSLATIONS}


def once(locale: str) -> tuple[float, int, int]:
    started = time.perf_counter()
    title, message = TEXTS[(locale, "english/outbid")]
    data = localize_data({"amount": money("1250", "EUR")}, locale)
    mail = render_email(
        LAYOUT,
        locale=locale,
        default_locale="en",
        title=render(title, data),
        message=render(message, data),
        category="bid",
        action_url="https://auctions.example.com/a/123",
        action_label=None,
        platform="Clarion Auctions",
    )
    return time.perf_counter() - started, len(mail.html.encode()), len(mail.text.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description="Time per rendered branded email.")
    parser.add_argument("--emails", type=int, default=2000, help="emails per locale")
    args = parser.parse_args()
    for locale in ("de", "ar"):
        once(locale)  # compile and cache the layout
        runs = [once(locale) for _ in range(args.emails)]
        times = sorted(r[0] for r in runs)
        print(
            f"{locale}: median {statistics.median(times) * 1e3:.3f} ms, "
            f"p99 {times[int(len(times) * 0.99)] * 1e3:.3f} ms per email; "
            f"html {runs[0][1]} bytes, text {runs[0][2]} bytes"
        )


if __name__ == "__main__":
    main()
