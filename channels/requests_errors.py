"""What an exception from ``requests`` means, for the adapters whose SDK speaks HTTP through it.

The Twilio and FCM SDKs both send with ``requests`` and let its exceptions
through unwrapped. They mean the same for both providers, so the rule is
written once here.
"""

from __future__ import annotations

import requests

from channels.base import ChannelError, PermanentError, RetryableError

# Timeout covers connect and read timeouts; ConnectionError covers refused and
# dropped connections; ChunkedEncodingError a connection cut mid-answer.
_NETWORK = requests.Timeout | requests.ConnectionError | requests.exceptions.ChunkedEncodingError


def requests_error(what: str, exc: requests.RequestException, *, provider: str) -> ChannelError:
    """Retryable when the network failed, permanent when no request could be made.

    A read timeout is ambiguous (the provider may have accepted the message),
    but a lost message is worse than a rare duplicate. InvalidURL,
    MissingSchema and the like are a configuration mistake, not a transient fault.
    """
    if isinstance(exc, _NETWORK):
        return RetryableError.from_exception(what, exc, provider=provider)
    return PermanentError.from_exception(what, exc, provider=provider)
