"""The webhook sandbox's answer delay: a slow receiver that still serves requests side by side."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from channels.sandboxes.webhook import WebhookReceiver

LATENCY = 1.0  # long enough that four clients all arrive within it on a loaded machine


def test_latency_delays_each_answer_without_serializing_them() -> None:
    with WebhookReceiver(latency=LATENCY) as hook:
        answered: list[tuple[float, float]] = []
        lock = threading.Lock()

        def post(i: int) -> None:
            sent = time.time()
            httpx.post(f"{hook.url}/hooks/{i}", json={"i": i}, timeout=10).raise_for_status()
            with lock:
                answered.append((sent, time.time()))

        threads = [threading.Thread(target=post, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(hook.deliveries) == 4
        # Each answer waited for the delay...
        assert all(done - sent >= LATENCY for sent, done in answered)
        # ...and every request had arrived before the first answer left: the delay
        # of one request does not hold the others back.
        first_answer = min(done for _, done in answered)
        assert max(r.at for r in hook.requests) < first_answer


def test_reset_sets_the_latency_back_to_zero() -> None:
    with WebhookReceiver(latency=0.5) as hook:
        hook.reset()
        assert hook.latency == 0.0


def test_negative_latency_is_refused() -> None:
    with pytest.raises(ValueError, match="latency"):
        WebhookReceiver(latency=-1)
