"""The pipeline tier's fixtures live in ``tests/pipekit.py``, shared with the fault suite."""

from pipekit import pipeline_env, pl, redis_client, sandboxes, stack, stacks  # noqa: F401
