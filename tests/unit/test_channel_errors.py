"""Errors for exceptions raised instead of a provider's answer: named by type, never by text."""

from __future__ import annotations

import pytest
import requests

from channels.base import PermanentError, RetryableError
from channels.requests_errors import requests_error


def test_from_exception_names_the_type_only() -> None:
    exc = OSError("connect to bob@example.com failed")
    error = RetryableError.from_exception("SMTP send failed", exc, provider="smtp", stage="send")
    assert type(error) is RetryableError
    assert str(error) == "SMTP send failed: OSError"
    assert error.provider == "smtp"
    assert error.response == {"stage": "send", "error": "OSError"}
    assert "bob" not in repr(error.response)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (requests.ConnectTimeout(), RetryableError),
        (requests.ReadTimeout(), RetryableError),
        (requests.ConnectionError(), RetryableError),
        (requests.exceptions.ChunkedEncodingError(), RetryableError),
        (requests.exceptions.InvalidURL(), PermanentError),
        (requests.exceptions.MissingSchema(), PermanentError),
    ],
)
def test_requests_error(exc: requests.RequestException, kind: type[Exception]) -> None:
    error = requests_error("twilio", exc, provider="twilio")
    assert type(error) is kind
    assert str(error) == f"twilio: {type(exc).__name__}"
    assert error.response == {"error": type(exc).__name__}
