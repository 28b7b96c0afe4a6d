"""All the provider sandboxes at once, and the settings that point Clarion at them.

Used by the demo, by ``clarion sandboxes`` and by the tests::

    with SandboxFarm() as farm:
        env = farm.environment()   # CLARION_* variables for workers
"""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path
from typing import Any

from channels.sandboxes.fcm import FCMSandbox
from channels.sandboxes.ses import SESSandbox
from channels.sandboxes.twilio import TwilioSandbox
from channels.sandboxes.webhook import WebhookReceiver


class SandboxFarm:
    def __init__(self) -> None:
        self.ses = SESSandbox()
        self.twilio = TwilioSandbox()
        self.fcm = FCMSandbox()
        self.webhook = WebhookReceiver()
        self.twilio_from = "+15005550006"
        self._dir = tempfile.TemporaryDirectory(prefix="clarion-sandboxes-")
        self.service_account = self.fcm.write_service_account(
            Path(self._dir.name) / "service-account.json"
        )
        self.aws_key = "AKIA" + secrets.token_hex(8).upper()

    def start(self) -> SandboxFarm:
        for sandbox in (self.ses, self.twilio, self.fcm, self.webhook):
            sandbox.start()
        return self

    def stop(self) -> None:
        for sandbox in (self.ses, self.twilio, self.fcm, self.webhook):
            sandbox.stop()
        self._dir.cleanup()

    def __enter__(self) -> SandboxFarm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def environment(self) -> dict[str, str]:
        """CLARION_* settings that send every channel to these sandboxes."""
        return {
            "CLARION_EMAIL_PROVIDER": "ses",
            "CLARION_SES_ENDPOINT_URL": self.ses.url,
            "CLARION_AWS_ACCESS_KEY_ID": self.aws_key,
            "CLARION_AWS_SECRET_ACCESS_KEY": "sandbox-secret",
            "CLARION_TWILIO_ACCOUNT_SID": self.twilio.account_sid,
            "CLARION_TWILIO_AUTH_TOKEN": self.twilio.auth_token,
            "CLARION_TWILIO_FROM": self.twilio_from,
            "CLARION_TWILIO_BASE_URL": self.twilio.url,
            "CLARION_FCM_SERVICE_ACCOUNT_FILE": str(self.service_account),
            "CLARION_FCM_PROJECT_ID": self.fcm.project_id,
            "CLARION_FCM_ENDPOINT": self.fcm.endpoint,
            "CLARION_WEBHOOK_ALLOW_PRIVATE": "true",
        }

    def request_counts(self) -> dict[str, Any]:
        return {
            "ses": len(self.ses.requests_to("/outbound-emails")),
            "twilio": len(self.twilio.requests_to("/Messages.json")),
            "fcm": len(self.fcm.requests_to("messages:send")),
            "webhook": len(self.webhook.requests),
        }
