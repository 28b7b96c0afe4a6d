"""Twilio ``StatusCallback`` requests: validated, then mapped to delivery reports.

Twilio signs the exact URL it called plus the sorted form parameters with the
account's auth token (``X-Twilio-Signature``). Behind a proxy the URL this
process sees is not that one, so the URL checked is
``CLARION_PUBLIC_BASE_URL`` + the request's path and query. Validation is the
twilio package's own :class:`twilio.request_validator.RequestValidator`.
"""

from __future__ import annotations

from collections.abc import Mapping

from twilio.request_validator import RequestValidator

from channels.twilio import STATUS_CALLBACK_PATH
from models.enums import Channel
from models.receipts import DeliveryReport, Reported, SuppressionRequest

__all__ = ["CALLBACK_PATH", "status_report", "valid_signature"]

#: Where ``clarion web`` takes Twilio's status callbacks.
CALLBACK_PATH = STATUS_CALLBACK_PATH

_REPORTED = {
    "delivered": Reported.DELIVERED,
    "undelivered": Reported.FAILED,
    "failed": Reported.FAILED,
    "read": Reported.FEEDBACK,
}
#: Error codes that say the number will never take our messages: suppress it.
#: 21610: the recipient replied STOP; 30005: unknown or inactive number;
#: 30006: a landline or unreachable carrier.
_SUPPRESS = {"21610": "opted_out", "30005": "invalid", "30006": "invalid"}


def valid_signature(
    auth_token: str, public_url: str, params: Mapping[str, str], signature: str
) -> bool:
    """Whether ``signature`` is Twilio's for ``public_url`` and the form ``params``."""
    if not signature:
        return False
    return bool(RequestValidator(auth_token).validate(public_url, dict(params), signature))


def status_report(params: Mapping[str, str]) -> DeliveryReport | None:
    """The report a (validated) callback holds; None without a MessageSid and status."""
    sid = params.get("MessageSid") or params.get("SmsSid") or ""
    status = (params.get("MessageStatus") or params.get("SmsStatus") or "").lower()
    if not sid or not status:
        return None
    code = (params.get("ErrorCode") or "").strip()
    reported = _REPORTED.get(status, Reported.PROGRESS)
    suppress: tuple[SuppressionRequest, ...] = ()
    to = params.get("To")
    if reported is Reported.FAILED and code in _SUPPRESS and to:
        suppress = (SuppressionRequest(Channel.SMS, to, _SUPPRESS[code]),)
    return DeliveryReport(
        provider="twilio",
        receipt_id=f"twilio:{sid}:{status}",
        kind=status,
        reported=reported,
        provider_message_id=sid,
        error=f"Twilio error {code}" if reported is Reported.FAILED and code else None,
        detail={"MessageStatus": status, "ErrorCode": code or None},
        suppress=suppress,
    )
