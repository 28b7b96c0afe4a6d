"""What the receipts endpoints of ``clarion web`` do, free of the web framework.

Each method takes what arrived (a body, a form, a header) and returns what to
answer; :mod:`clarion.web.receipts` only moves bytes. A refused request
changes nothing and is logged with its reason, never with its body.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Callable, Mapping

import sqlalchemy as sa

from channels.unsubscribe import Unsubscription, read_token
from clarion.core.clock import utcnow
from clarion.core.settings import Settings
from clarion.receipts import sns
from clarion.receipts.twilio_status import status_report, valid_signature
from models.callbacks import callback_events
from models.receipts import Applied, DeliveryReport, apply_report
from models.unsubscribes import record_unsubscribe

__all__ = ["Answer", "ReceiptService"]

log = logging.getLogger("clarion.receipts")


class Answer(enum.IntEnum):
    OK = 200
    BAD_REQUEST = 400
    FORBIDDEN = 403
    NOT_CONFIGURED = 503


@dataclasses.dataclass
class ReceiptService:
    settings: Settings
    engine: sa.Engine
    certificates: sns.CertificateStore
    #: GETs an SNS SubscribeURL (already checked to be an SNS host).
    confirm: Callable[[str], None]

    # --- SES through SNS --------------------------------------------------------------

    def sns(self, raw: bytes) -> tuple[Answer, str]:
        try:
            message = sns.verify(
                raw,
                certificates=self.certificates,
                topics=self.settings.sns_topic_arns,
                now=utcnow(),
            )
        except sns.Refused as exc:
            log.warning("SNS message refused: %s", exc)
            return Answer.FORBIDDEN, f"refused: {exc}"
        if message.type == "SubscriptionConfirmation":
            url = message.subscribe_url or ""
            if not sns.is_sns_url(url):
                log.warning("SNS subscription refused: SubscribeURL is not on an SNS host")
                return Answer.FORBIDDEN, "refused: SubscribeURL is not on an SNS host"
            self.confirm(url)
            log.info("SNS subscription to %s confirmed", message.topic_arn)
            return Answer.OK, "subscription confirmed"
        if message.type == "UnsubscribeConfirmation":
            log.warning("SNS topic %s unsubscribed this endpoint", message.topic_arn)
            return Answer.OK, "noted"
        report = sns.ses_report(message)
        if report is None:
            log.info("SNS message %s holds no SES event; ignored", message.message_id)
            return Answer.OK, "ignored: not an SES event"
        return Answer.OK, self._apply(report)

    # --- Twilio status callbacks ---------------------------------------------------------

    def twilio(
        self, path_and_query: str, params: Mapping[str, str], signature: str
    ) -> tuple[Answer, str]:
        token = self.settings.twilio_auth_token
        base = self.settings.public_base_url
        if not token or not base:
            return Answer.NOT_CONFIGURED, (
                "not configured: CLARION_TWILIO_AUTH_TOKEN and CLARION_PUBLIC_BASE_URL are needed"
            )
        # The backup account of the SMS chain (CLARION_SMS_PROVIDERS) signs its
        # callbacks with its own token.
        tokens = [t for t in (token, self.settings.twilio_backup_auth_token) if t]
        if not any(valid_signature(t, base + path_and_query, params, signature) for t in tokens):
            log.warning("Twilio callback refused: X-Twilio-Signature does not match")
            return Answer.FORBIDDEN, "refused: X-Twilio-Signature does not match"
        report = status_report(params)
        if report is None:
            return Answer.BAD_REQUEST, "MessageSid and MessageStatus are required"
        return Answer.OK, self._apply(report)

    def _apply(self, report: DeliveryReport) -> str:
        with self.engine.begin() as conn:
            applied = apply_report(conn, report, callbacks=callback_events(self.settings))
        if applied is Applied.UNKNOWN:
            log.info(
                "%s report %s for an unknown message id; counted", report.provider, report.kind
            )
        else:
            log.info(
                "%s report %s for message %s: %s",
                report.provider,
                report.kind,
                report.provider_message_id,
                applied.value,
            )
        return applied.value

    # --- one-click unsubscribe ----------------------------------------------------------

    def read_unsubscribe(self, token: str) -> Unsubscription | None:
        secret = self.settings.unsubscribe_secret
        return read_token(secret, token) if secret else None

    def unsubscribe(self, token: str, source: str) -> tuple[Answer, Unsubscription | None]:
        found = self.read_unsubscribe(token)
        if found is None:
            log.warning("unsubscribe refused: the token is forged, altered or malformed")
            return Answer.FORBIDDEN, None
        with self.engine.begin() as conn:
            new = record_unsubscribe(conn, found.user_id, found.category, source)
        log.info(
            "user %s unsubscribed from %s email (%s)%s",
            found.user_id,
            found.category,
            source,
            "" if new else ", again",
        )
        return Answer.OK, found
