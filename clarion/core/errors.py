"""Clarion's exceptions.

Every error Clarion raises on purpose derives from :class:`ClarionError`::

    ClarionError
    ├── SettingsError            a CLARION_* variable has a bad value
    ├── ValidationError          bad input to the public API (names the field)
    ├── TemplateError            a template cannot be parsed or rendered
    │   └── MissingVariableError a placeholder has no value in template_data
    ├── NotFoundError            an id that does not exist
    ├── BrokerUnavailable        the broker did not answer
    └── channels.ChannelError    a provider refused or failed (see channels.base)
        ├── RetryableError       timeouts, connection errors, 5xx
        │   └── ThrottledError   429 and friends, with the provider's Retry-After
        └── PermanentError       rejected content, invalid request
            └── BadAddressError  invalid or unregistered address
"""

from __future__ import annotations


class ClarionError(Exception):
    """Root of every exception Clarion raises on purpose."""


class SettingsError(ClarionError):
    """A setting read from the environment has a value Clarion cannot use."""

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        self.problem = problem
        super().__init__(f"{variable}: {problem}")


class ValidationError(ClarionError, ValueError):
    """Input to the public API is invalid; ``field`` names the offending argument."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class TemplateError(ClarionError, ValueError):
    """A template is malformed, or uses a placeholder that is not a plain name."""


class MissingVariableError(TemplateError):
    """A placeholder of the template has no value in ``template_data``."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"template variable {name!r} is missing from template_data")


class NotFoundError(ClarionError, LookupError):
    """The thing asked for does not exist."""


class BrokerUnavailable(ClarionError):
    """The broker did not answer (connection refused, timed out, closed)."""
