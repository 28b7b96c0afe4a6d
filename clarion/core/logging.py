"""Log set-up for Clarion's processes. Log lines carry ids, never addresses,
secrets or message bodies."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format=FORMAT)
    # basicConfig does nothing where a handler exists (Dramatiq's CLI adds one
    # first): the level must still apply.
    logging.getLogger().setLevel(level)
    # Third-party clients log request details (URLs with phone numbers,
    # headers) at DEBUG; keep them quiet whatever Clarion's level.
    for noisy in ("botocore", "urllib3", "twilio", "httpx", "httpcore", "pika"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
