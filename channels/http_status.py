"""The HTTP status ladder every HTTP provider adapter shares.

A provider's HTTP status says whether the same request may succeed later:
429 always means slow down; a server error or a request timeout (408) means
try again; a server error that names a time (Retry-After) means slow down
until then. Everything else (4xx, 3xx) is the adapter's to map, because
only the provider's own error codes can tell a bad address from a bad
request.

Written once here so the adapters cannot drift apart. Where they do differ
on purpose, it is a parameter: which statuses make a Retry-After a throttle
(SES and webhooks: only 503, the status RFC 9110 pairs with Retry-After;
Twilio: any 5xx; FCM: any 5xx or 408, as Google's API guidance says to
honour it on every retryable answer).
"""

from __future__ import annotations

from collections.abc import Callable

from channels.base import JSON, RetryableError, ThrottledError

#: Which statuses turn a Retry-After into a throttle.
RetryAfterRule = Callable[[int], bool]


def on_503(status: int) -> bool:
    """Retry-After throttles only on 503 Service Unavailable."""
    return status == 503


def on_5xx(status: int) -> bool:
    """Retry-After throttles on any server error."""
    return status >= 500


def on_5xx_or_408(status: int) -> bool:
    """Retry-After throttles on any server error and on 408 Request Timeout."""
    return status >= 500 or status == 408


def transient_http_error(
    status: int,
    summary: str,
    *,
    provider: str,
    retry_after: float | None,
    response: JSON,
    request_id: str | None = None,
    throttled: bool = False,
    transient: bool = False,
    retry_after_throttles: RetryAfterRule = on_503,
    retry_408: bool = True,
) -> RetryableError | None:
    """The error for a status (or provider code) that a later attempt may get past, else None.

    ``throttled`` and ``transient`` carry the provider's own error code's
    verdict (Twilio's 20429, SES's ``Throttling`` or ``RequestTimeout``),
    which wins over the status. ``retry_408=False`` leaves a 408 to the
    adapter (SES sends its own ``RequestTimeout`` code with it instead).
    ``response`` is used as given: adding
    ``retry_after`` to it is the adapter's choice. None means the answer is
    permanent as far as HTTP can tell, and the adapter maps it further.
    """
    kwargs: JSON = {"provider": provider, "response": response, "request_id": request_id}
    if throttled or status == 429 or (retry_after is not None and retry_after_throttles(status)):
        return ThrottledError(summary, retry_after=retry_after, **kwargs)
    if transient or status >= 500 or (retry_408 and status == 408):
        return RetryableError(summary, **kwargs)
    return None
