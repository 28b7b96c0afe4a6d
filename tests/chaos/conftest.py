"""The fault suite runs real scheduler and worker processes against the pipeline's
sandboxes: its fixtures are ``tests/pipekit.py``'s."""

from pipekit import pipeline_env, pl, redis_client, sandboxes, stack, stacks  # noqa: F401
