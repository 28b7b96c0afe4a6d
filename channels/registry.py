"""Which provider serves which channel, built from the settings on first use."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from channels.base import PermanentError, Provider
from clarion.core.errors import SettingsError
from clarion.core.settings import Settings
from models.enums import Channel

Factory = Callable[[Settings], Provider]


def _email(settings: Settings) -> Provider:
    if settings.email_provider == "smtp":
        from channels.smtp import SMTPProvider

        return SMTPProvider.from_settings(settings)
    from channels.ses import SESProvider

    return SESProvider.from_settings(settings)


def _sms(settings: Settings) -> Provider:
    from channels.twilio import TwilioProvider

    return TwilioProvider.from_settings(settings)


def _push(settings: Settings) -> Provider:
    from channels.fcm import FCMProvider

    return FCMProvider.from_settings(settings)


def _webhook(settings: Settings) -> Provider:
    from channels.webhook import WebhookProvider

    return WebhookProvider.from_settings(settings)


def _in_app(settings: Settings) -> Provider:
    from channels.in_app import InAppProvider, RedisPublisher

    return InAppProvider(RedisPublisher(settings.redis_url, timeout=settings.provider_timeout))


DEFAULT_FACTORIES: Mapping[Channel, Factory] = {
    Channel.EMAIL: _email,
    Channel.SMS: _sms,
    Channel.PUSH: _push,
    Channel.WEBHOOK: _webhook,
    Channel.IN_APP: _in_app,
}


class Providers:
    """Providers by channel, created lazily and shared by a worker's threads.

    A channel whose provider is not configured fails its deliveries with a
    :class:`PermanentError` naming the missing setting; the other channels
    go on.
    """

    def __init__(
        self,
        settings: Settings,
        overrides: Mapping[Channel, Provider] | None = None,
        factories: Mapping[Channel, Factory] = DEFAULT_FACTORIES,
    ) -> None:
        self._settings = settings
        self._factories = factories
        self._providers: dict[Channel, Provider] = dict(overrides or {})
        self._lock = threading.Lock()

    def get(self, channel: Channel) -> Provider:
        provider = self._providers.get(channel)
        if provider is not None:
            return provider
        with self._lock:
            provider = self._providers.get(channel)
            if provider is None:
                try:
                    provider = self._factories[channel](self._settings)
                except SettingsError as exc:
                    raise PermanentError(
                        f"{channel.value} provider is not configured: {exc}",
                        provider=channel.value,
                    ) from exc
                self._providers[channel] = provider
        return provider

    def close(self) -> None:
        with self._lock:
            for provider in self._providers.values():
                provider.close()
            self._providers.clear()
