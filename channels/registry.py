"""Which providers serve which channel, in failover order, built from the settings on first use.

Email may have several (``CLARION_EMAIL_PROVIDERS=ses,smtp``), and so may
SMS (``CLARION_SMS_PROVIDERS=twilio,twilio_backup``: two Twilio accounts or
messaging services); the other channels have one. The worker tries them in order: the one after the
provider whose attempt failed retryably, skipping those whose circuit
breaker is open (``workers.breaker``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence

from channels.base import PermanentError, Provider
from clarion.core.errors import SettingsError
from clarion.core.settings import Settings
from models.enums import Channel

Factory = Callable[[Settings], Provider]


def _email(settings: Settings) -> Provider:
    return _email_named(settings, settings.email_provider)


def _email_named(settings: Settings, name: str) -> Provider:
    if name == "smtp":
        from channels.smtp import SMTPProvider

        return SMTPProvider.from_settings(settings)
    from channels.ses import SESProvider

    return SESProvider.from_settings(settings)


def email_chain(settings: Settings) -> tuple[str, ...]:
    """The email providers' names in failover order."""
    return settings.email_providers or (settings.email_provider,)


def sms_chain(settings: Settings) -> tuple[str, ...]:
    """The SMS providers' names in failover order."""
    return settings.sms_providers or ("twilio",)


def failover_chains(settings: Settings) -> dict[Channel, tuple[str, ...]]:
    """The channels with more than one provider, and their providers in order."""
    chains = {Channel.EMAIL: email_chain(settings), Channel.SMS: sms_chain(settings)}
    return {channel: names for channel, names in chains.items() if len(names) > 1}


def _sms(settings: Settings) -> Provider:
    return _sms_named(settings, sms_chain(settings)[0])


def _sms_named(settings: Settings, name: str) -> Provider:
    from channels.twilio import TwilioProvider

    if name == "twilio_backup":
        return TwilioProvider.backup_from_settings(settings)
    return TwilioProvider.from_settings(settings)


_NAMED: Mapping[Channel, Callable[[Settings, str], Provider]] = {
    Channel.EMAIL: _email_named,
    Channel.SMS: _sms_named,
}


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
        chains: Mapping[Channel, Sequence[Provider]] | None = None,
    ) -> None:
        self._settings = settings
        self._factories = factories
        self._providers: dict[Channel, Provider] = dict(overrides or {})
        self._chains = {c: list(p) for c, p in (chains or {}).items()}
        self._lock = threading.Lock()

    def chain(self, channel: Channel) -> list[Provider]:
        """The channel's providers in failover order (at least one).

        Raises :class:`PermanentError` when the first is not configured; a
        later one that is not configured is left out of the chain.
        """
        chain = self._chains.get(channel)
        if chain is not None:
            return chain
        names = failover_chains(self._settings).get(channel, ())
        if len(names) < 2 or channel in self._providers:
            return [self.get(channel)]
        with self._lock:
            chain = self._chains.get(channel)
            if chain is None:
                chain = []
                for name in names:
                    try:
                        chain.append(_NAMED[channel](self._settings, name))
                    except SettingsError as exc:
                        if not chain:
                            raise PermanentError(
                                f"{channel.value} provider {name} is not configured: {exc}",
                                provider=name,
                            ) from exc
                self._chains[channel] = chain
        return chain

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
            for chain in self._chains.values():
                for provider in chain:
                    provider.close()
            self._providers.clear()
            self._chains.clear()
