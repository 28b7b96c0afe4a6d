"""Clarion's settings: one typed, frozen object read from ``CLARION_*`` variables.

Every field documents its variable and default; :func:`Settings.from_env`
fails at start-up with a :class:`~clarion.core.errors.SettingsError` naming the
variable whose value it cannot use. ``clarion settings`` prints them all.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from clarion.core.errors import SettingsError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"expected one of {sorted(_TRUE | _FALSE - {''})}, got {raw!r}")


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError(f"must be a number greater than 0, got {raw!r}")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError(f"must be an integer greater than 0, got {raw!r}")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError(f"must be an integer, 0 or more, got {raw!r}")
    return value


def _port_or_off(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError(f"must be a TCP port, 1 to 65535, or 0 (off), got {raw!r}")
    return value


def _days(raw: str) -> float:
    value = float(raw)
    if not value >= 0:
        raise ValueError(f"must be a number of days, 0 or more (0 keeps the rows), got {raw!r}")
    return value


def _category_list(raw: str) -> str:
    # Checked against the schema's categories; kept as text so that the
    # settings table shows it as written. (The ground cannot import models.)
    known = {"auction", "bid", "payment", "system", "marketing"}
    names = [part.strip() for part in raw.split(",") if part.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown category {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return ",".join(names)


def _str(raw: str) -> str:
    return raw


def _optional_str(raw: str) -> str | None:
    return raw or None


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        scheme = raw.split(":", 1)[0].split("+", 1)[0].lower()
        if "://" not in raw or scheme not in schemes:
            raise ValueError(f"must be a URL with scheme {' or '.join(schemes)}, got {scheme!r}")
        return raw

    return parse


def _optional_path(raw: str) -> str | None:
    if not raw:
        return None
    if not os.path.isfile(raw):
        raise ValueError(f"no such file: {raw!r}")
    return raw


def _paths(raw: str) -> tuple[str, ...]:
    paths = tuple(p.strip() for p in raw.split(",") if p.strip())
    for path in paths:
        if not os.path.isfile(path):
            raise ValueError(f"no such file: {path!r}")
    return paths


def _origins(raw: str) -> tuple[str, ...] | None:
    """Comma-separated ``scheme://host[:port]`` origins, as browsers send them."""
    if not raw.strip():
        return None
    origins = []
    for item in raw.split(","):
        origin = item.strip().rstrip("/").lower()
        parts = urllib.parse.urlsplit(origin)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path
            or parts.query
            or parts.username
        ):
            raise ValueError(f"an origin is scheme://host[:port] (http or https), got {item!r}")
        origins.append(origin)
    return tuple(origins)


def _networks(raw: str) -> tuple[str, ...]:
    """Comma-separated IP addresses or networks (CIDR), e.g. ``10.0.0.0/8, 127.0.0.1``."""
    networks = []
    for item in raw.split(","):
        if not item.strip():
            continue
        try:
            networks.append(str(ipaddress.ip_network(item.strip(), strict=False)))
        except ValueError:
            raise ValueError(f"not an IP address or network: {item.strip()!r}") from None
    return tuple(networks)


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {raw!r}")
        return raw

    return parse


_LOCALE_TAG = re.compile(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8}){0,3}")


def _locale(raw: str) -> str:
    # The shape only: the ground does not load Babel; clarion.locales checks
    # that the locale exists when it first uses it.
    if not _LOCALE_TAG.fullmatch(raw):
        raise ValueError(f"must be a locale tag such as en, de or pt-BR, got {raw!r}")
    return raw.replace("_", "-")


def _optional_https_url(raw: str) -> str | None:
    if not raw:
        return None
    if not raw.startswith(("https://", "http://")) or any(c.isspace() for c in raw):
        raise ValueError(f"must be an http(s) URL without spaces, got {raw!r}")
    return raw


def _providers(*choices: str) -> Callable[[str], tuple[str, ...]]:
    def parse(raw: str) -> tuple[str, ...]:
        names = tuple(n.strip() for n in raw.split(",") if n.strip())
        for name in names:
            if name not in choices:
                raise ValueError(f"providers must be among {', '.join(choices)}, got {name!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"a provider is listed twice in {raw!r}")
        return names

    return parse


def _optional_https_base(raw: str) -> str | None:
    if not raw:
        return None
    parsed = urllib.parse.urlsplit(raw)
    if parsed.scheme not in ("https", "http") or not parsed.netloc:
        raise ValueError(f"must be an https:// URL (http:// for local trials), got {raw!r}")
    if parsed.query or parsed.fragment:
        raise ValueError("must not carry a query or a fragment")
    return raw.rstrip("/")


def _optional_secret_key(raw: str) -> str | None:
    if not raw:
        return None
    if len(raw) < 32:
        raise ValueError("must be at least 32 characters long")
    return raw


def _optional_callback_url(raw: str) -> str | None:
    if not raw:
        return None
    parsed = urllib.parse.urlsplit(raw)
    if parsed.scheme not in ("https", "http") or not parsed.netloc:
        raise ValueError(f"must be an https:// URL (http:// inside your network), got {raw!r}")
    if parsed.username or parsed.password:
        raise ValueError("must not carry credentials (the requests are signed instead)")
    return raw


def _optional_webhook_secret(raw: str) -> str | None:
    if not raw:
        return None
    if not raw.startswith("whsec_"):
        raise ValueError("must be a Standard Webhooks secret: whsec_ then base64 of 24 to 64 bytes")
    try:
        key = base64.b64decode(raw[len("whsec_") :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the text after whsec_ is not base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"the key must be 24 to 64 bytes, got {len(key)}")
    return raw


#: What a status callback can report (``CLARION_STATUS_CALLBACK_EVENTS``).
CALLBACK_EVENTS = ("sent", "delivered", "failed", "bounced")


def _callback_events(raw: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    for name in names:
        if name not in CALLBACK_EVENTS:
            raise ValueError(f"events must be among {', '.join(CALLBACK_EVENTS)}, got {name!r}")
    return tuple(dict.fromkeys(names))


def _arns(raw: str) -> tuple[str, ...]:
    arns = tuple(a.strip() for a in raw.split(",") if a.strip())
    for arn in arns:
        if not arn.startswith("arn:") or arn.count(":") < 5:
            raise ValueError(f"not an SNS topic ARN: {arn!r}")
    return arns


def setting(
    env: str, default: Any, parse: Callable[[str], Any], doc: str, *, secret: bool = False
) -> Any:
    return dataclasses.field(
        default=default,
        metadata={"env": env, "parse": parse, "doc": doc, "secret": secret},
    )


@dataclasses.dataclass(frozen=True)
class Settings:
    # --- storage and broker -------------------------------------------------
    database_url: str | None = setting(
        "CLARION_DATABASE_URL",
        None,
        _url("postgresql", "postgres", "sqlite"),
        "SQLAlchemy URL of the database. Unset: the embedded default, a SQLite file "
        "clarion.db in the working directory (demo and local trials only).",
    )
    broker_url: str = setting(
        "CLARION_BROKER_URL",
        "redis://127.0.0.1:6379/0",
        _url("redis", "rediss", "amqp", "amqps"),
        "Dramatiq broker: redis:// (default) or amqp:// for RabbitMQ.",
    )
    redis_url: str = setting(
        "CLARION_REDIS_URL",
        "redis://127.0.0.1:6379/0",
        _url("redis", "rediss"),
        "Redis for real-time publishing (in-app channel, event stream).",
    )
    platform_foreign_keys: bool = setting(
        "CLARION_PLATFORM_FOREIGN_KEYS",
        False,
        _bool,
        "true where the platform's users, auctions, bids and auction_items tables exist in "
        "the same database: migrations then create the spec's foreign keys to them. false "
        "(standalone): the columns stay, indexed, without those constraints.",
    )
    # --- scheduler ------------------------------------------------------------
    poll_interval: float = setting(
        "CLARION_POLL_INTERVAL",
        2.0,
        _positive_float,
        "Seconds between scheduler polls when no NOTIFY wakes it.",
    )
    batch_size: int = setting(
        "CLARION_BATCH_SIZE", 500, _positive_int, "Notifications claimed per scheduler batch."
    )
    lease_seconds: float = setting(
        "CLARION_LEASE_SECONDS",
        600.0,
        _positive_float,
        "How long a delivery may stay 'sending' with no outcome (a worker died mid-send) "
        "before the scheduler queues it again. Keep it above the delivery actors' time "
        "limit (5 minutes), or a slow send still in progress is sent a second time.",
    )
    queued_lease_seconds: float = setting(
        "CLARION_QUEUED_LEASE_SECONDS",
        3600.0,
        _positive_float,
        "How long a delivery may wait 'queued' for a worker (a lost message, a broker "
        "flushed) before the scheduler enqueues it again. Longer than the deepest backlog "
        "you expect to drain, or backlogged messages are enqueued twice (harmless: the "
        "redelivery guard drops the second copy, but wasteful).",
    )
    delivery_batch: int = setting(
        "CLARION_DELIVERY_BATCH",
        50,
        _positive_int,
        "Most deliveries of one queue in one broker message: a claim's deliveries travel in "
        "batches sharing one guard, one write-back and their provider calls' latency. 1 sends "
        "every delivery as a message of its own.",
    )
    send_concurrency: int = setting(
        "CLARION_SEND_CONCURRENCY",
        64,
        _positive_int,
        "Provider calls in flight at once per worker process (a pool of sending threads shared "
        "by the worker's threads; the webhook client's connection pool has as many connections).",
    )
    worker_idle_poll_ms: int = setting(
        "CLARION_WORKER_IDLE_POLL_MS",
        100,
        _positive_int,
        "Longest a worker waits between polls of an empty queue (Redis): bounds the pick-up "
        "latency of an idle queue, such as an urgent lane.",
    )
    # --- retries ----------------------------------------------------------------
    retry_min_backoff: float = setting(
        "CLARION_RETRY_MIN_BACKOFF",
        5.0,
        _positive_float,
        "Seconds before the first retry of a retryable error; doubles each attempt, with jitter.",
    )
    retry_max_backoff: float = setting(
        "CLARION_RETRY_MAX_BACKOFF",
        3600.0,
        _positive_float,
        "Upper bound of a retry backoff, seconds.",
    )
    max_retry_after: float = setting(
        "CLARION_MAX_RETRY_AFTER",
        900.0,
        _positive_float,
        "A provider's Retry-After is clamped to this many seconds.",
    )
    outage_threshold: int = setting(
        "CLARION_OUTAGE_THRESHOLD",
        5,
        _non_negative_int,
        "Retryable failures of a provider in a row, across deliveries, after which it counts "
        "as down: its next retryable failures wait without burning an attempt. 0: never "
        "(every retryable failure burns an attempt).",
    )
    outage_max_wait: float = setting(
        "CLARION_OUTAGE_MAX_WAIT",
        60.0,
        _positive_float,
        "Longest wait between two tries of a delivery while its provider is down: once the "
        "provider is back, every waiting delivery is tried within this many seconds.",
    )
    # --- providers --------------------------------------------------------------
    provider_timeout: float = setting(
        "CLARION_PROVIDER_TIMEOUT",
        10.0,
        _positive_float,
        "Timeout in seconds of every provider network call.",
    )
    email_provider: str = setting(
        "CLARION_EMAIL_PROVIDER", "ses", _choice("ses", "smtp"), "Email provider: ses or smtp."
    )
    email_providers: tuple[str, ...] = setting(
        "CLARION_EMAIL_PROVIDERS",
        (),
        _providers("ses", "smtp"),
        "Email providers in failover order, comma-separated (ses,smtp). Unset: only "
        "CLARION_EMAIL_PROVIDER. A delivery that failed retryably on one tries the next one on "
        "its next attempt; a provider whose circuit breaker is open is skipped.",
    )
    breaker_threshold: int = setting(
        "CLARION_BREAKER_THRESHOLD",
        5,
        _non_negative_int,
        "Retryable failures (timeouts, 5xx, throttling) of a provider within "
        "CLARION_BREAKER_WINDOW seconds, across all workers, that open its circuit breaker. "
        "0: no breaker.",
    )
    breaker_window: float = setting(
        "CLARION_BREAKER_WINDOW",
        30.0,
        _positive_float,
        "Seconds over which a provider's failures are counted for its circuit breaker.",
    )
    breaker_cooldown: float = setting(
        "CLARION_BREAKER_COOLDOWN",
        30.0,
        _positive_float,
        "Seconds an open circuit breaker skips its provider; then one delivery probes it "
        "(half-open): a success closes it, a failure opens it again.",
    )
    email_from: str = setting(
        "CLARION_EMAIL_FROM", "notifications@clarion.invalid", _str, "From address of emails."
    )
    default_locale: str = setting(
        "CLARION_DEFAULT_LOCALE",
        "en",
        _locale,
        "Locale of users who set none, and the last step of every fallback chain "
        "(pt-BR -> pt -> this).",
    )
    platform_name: str = setting(
        "CLARION_PLATFORM_NAME",
        "Clarion Auctions",
        _str,
        "The platform's name in the email layout's header and footer.",
    )
    platform_logo_url: str | None = setting(
        "CLARION_PLATFORM_LOGO_URL",
        None,
        _optional_https_url,
        "URL of the logo in the email layout's header; unset: the platform's name as text.",
    )
    email_layout: str = setting(
        "CLARION_EMAIL_LAYOUT",
        "default",
        _str,
        "Name of the email layout (email_layouts.name); its highest active version is used.",
    )
    ses_region: str = setting("CLARION_SES_REGION", "us-east-1", _str, "AWS region of SES.")
    ses_endpoint_url: str | None = setting(
        "CLARION_SES_ENDPOINT_URL",
        None,
        _optional_str,
        "Override of the SES endpoint (a local sandbox in tests and the demo).",
    )
    ses_configuration_set: str | None = setting(
        "CLARION_SES_CONFIGURATION_SET", None, _optional_str, "SES configuration set name."
    )
    aws_access_key_id: str | None = setting(
        "CLARION_AWS_ACCESS_KEY_ID",
        None,
        _optional_str,
        "AWS key id for SES; unset: boto3's own credential chain.",
        secret=True,
    )
    aws_secret_access_key: str | None = setting(
        "CLARION_AWS_SECRET_ACCESS_KEY", None, _optional_str, "AWS secret key for SES.", secret=True
    )
    smtp_host: str = setting("CLARION_SMTP_HOST", "127.0.0.1", _str, "SMTP server host.")
    smtp_port: int = setting("CLARION_SMTP_PORT", 25, _positive_int, "SMTP server port.")
    smtp_username: str | None = setting(
        "CLARION_SMTP_USERNAME", None, _optional_str, "SMTP user name.", secret=True
    )
    smtp_password: str | None = setting(
        "CLARION_SMTP_PASSWORD", None, _optional_str, "SMTP password.", secret=True
    )
    smtp_starttls: bool = setting("CLARION_SMTP_STARTTLS", False, _bool, "Use STARTTLS.")
    twilio_account_sid: str | None = setting(
        "CLARION_TWILIO_ACCOUNT_SID", None, _optional_str, "Twilio account SID.", secret=True
    )
    twilio_auth_token: str | None = setting(
        "CLARION_TWILIO_AUTH_TOKEN", None, _optional_str, "Twilio auth token.", secret=True
    )
    twilio_from: str | None = setting(
        "CLARION_TWILIO_FROM", None, _optional_str, "Sender number (E.164) for SMS."
    )
    twilio_messaging_service_sid: str | None = setting(
        "CLARION_TWILIO_MESSAGING_SERVICE_SID",
        None,
        _optional_str,
        "Twilio messaging service; used instead of CLARION_TWILIO_FROM when set.",
    )
    twilio_base_url: str | None = setting(
        "CLARION_TWILIO_BASE_URL",
        None,
        _optional_str,
        "Override of the Twilio API base URL (a local sandbox).",
    )
    sms_providers: tuple[str, ...] = setting(
        "CLARION_SMS_PROVIDERS",
        (),
        _providers("twilio", "twilio_backup"),
        "SMS providers in failover order, comma-separated (twilio,twilio_backup). Unset: only "
        "twilio. twilio_backup is a second Twilio account or messaging service "
        "(CLARION_TWILIO_BACKUP_*); the circuit breaker and failover work as for email.",
    )
    twilio_backup_account_sid: str | None = setting(
        "CLARION_TWILIO_BACKUP_ACCOUNT_SID",
        None,
        _optional_str,
        "Account SID of twilio_backup; unset: the same account as twilio (another sender).",
        secret=True,
    )
    twilio_backup_auth_token: str | None = setting(
        "CLARION_TWILIO_BACKUP_AUTH_TOKEN",
        None,
        _optional_str,
        "Auth token of twilio_backup's account (with CLARION_TWILIO_BACKUP_ACCOUNT_SID).",
        secret=True,
    )
    twilio_backup_from: str | None = setting(
        "CLARION_TWILIO_BACKUP_FROM", None, _optional_str, "Sender number (E.164) of twilio_backup."
    )
    twilio_backup_messaging_service_sid: str | None = setting(
        "CLARION_TWILIO_BACKUP_MESSAGING_SERVICE_SID",
        None,
        _optional_str,
        "Messaging service of twilio_backup; used instead of CLARION_TWILIO_BACKUP_FROM when set.",
    )
    fcm_service_account_file: str | None = setting(
        "CLARION_FCM_SERVICE_ACCOUNT_FILE",
        None,
        _optional_str,
        "Path of the Firebase service account JSON.",
    )
    fcm_project_id: str | None = setting(
        "CLARION_FCM_PROJECT_ID", None, _optional_str, "Firebase project id."
    )
    fcm_endpoint: str | None = setting(
        "CLARION_FCM_ENDPOINT",
        None,
        _optional_str,
        "Override of the FCM v1 base URL, e.g. http://127.0.0.1:PORT/v1/projects (a sandbox).",
    )
    webhook_allow_private: bool = setting(
        "CLARION_WEBHOOK_ALLOW_PRIVATE",
        False,
        _bool,
        "Allow webhook endpoints on loopback, private and link-local addresses.",
    )
    # --- real time -------------------------------------------------------------------
    gateway_host: str = setting(
        "CLARION_GATEWAY_HOST", "127.0.0.1", _str, "Address the WebSocket gateway listens on."
    )
    gateway_port: int = setting(
        "CLARION_GATEWAY_PORT", 8765, _positive_int, "Port of the WebSocket gateway."
    )
    jwt_secret: str | None = setting(
        "CLARION_JWT_SECRET",
        None,
        _optional_str,
        "HS256 key of the gateway's connection tokens (claims: sub = user id, exp), at least "
        "32 bytes. The gateway needs it, CLARION_JWKS_URL or CLARION_JWT_PUBLIC_KEYS, unless "
        "CLARION_ALLOW_ANONYMOUS is true.",
        secret=True,
    )
    jwks_url: str | None = setting(
        "CLARION_JWKS_URL",
        None,
        _url("https"),
        "HTTPS URL of the identity provider's JWKS (RS256 and ES256 keys by kid), e.g. "
        "https://TENANT.auth0.com/.well-known/jwks.json. Needs CLARION_JWT_ISSUER and "
        "CLARION_JWT_AUDIENCE.",
    )
    jwks_ca_bundle: str | None = setting(
        "CLARION_JWKS_CA_BUNDLE",
        None,
        _optional_path,
        "PEM file of the certificate authorities trusted for CLARION_JWKS_URL (default: the "
        "system's).",
    )
    jwks_refresh_interval: float = setting(
        "CLARION_JWKS_REFRESH_INTERVAL",
        60.0,
        _positive_float,
        "A token with an unknown kid fetches the JWKS again at most once per this many seconds "
        "(key rotation is picked up; forged kids cannot flood the provider).",
    )
    jwks_max_age: float = setting(
        "CLARION_JWKS_MAX_AGE",
        3600.0,
        _positive_float,
        "Seconds the fetched keys are used before they are fetched again; when the JWKS cannot be "
        "fetched past this age, tokens are refused (fail closed, HTTP 503).",
    )
    jwt_public_keys: tuple[str, ...] = setting(
        "CLARION_JWT_PUBLIC_KEYS",
        (),
        _paths,
        "Comma-separated PEM files of RSA (RS256) or P-256 (ES256) public keys, instead of or "
        "beside a JWKS; a file's name without .pem is its kid.",
    )
    jwt_issuer: str | None = setting(
        "CLARION_JWT_ISSUER",
        None,
        _optional_str,
        "Required iss of connection tokens (required with RS256/ES256 keys; checked with HS256 "
        "when set).",
    )
    jwt_audience: str | None = setting(
        "CLARION_JWT_AUDIENCE",
        None,
        _optional_str,
        "Required aud of connection tokens (required with RS256/ES256 keys; checked with HS256 "
        "when set).",
    )
    jwt_user_claim: str = setting(
        "CLARION_JWT_USER_CLAIM",
        "sub",
        _str,
        "Claim holding the platform's user id (a UUID), e.g. a custom claim when the identity "
        "provider's sub is not the platform's id.",
    )
    jwt_channels_claim: str = setting(
        "CLARION_JWT_CHANNELS_CLAIM",
        "clarion_channels",
        _str,
        "Optional claim listing what the connection may subscribe to ('auction:<id>', topics, "
        "'prefix*'); without it, anything.",
    )
    allow_anonymous: bool = setting(
        "CLARION_ALLOW_ANONYMOUS",
        False,
        _bool,
        "Accept connections without a token; they see public events only.",
    )
    events_channel: str = setting(
        "CLARION_EVENTS_CHANNEL",
        "clarion:events",
        _str,
        "Redis pub/sub channel that carries real-time events to every gateway.",
    )
    event_history_seconds: float = setting(
        "CLARION_EVENT_HISTORY_SECONDS",
        300.0,
        _positive_float,
        "How far back a reconnecting client can resume; older misses are reported as a gap.",
    )
    event_relay_after: float = setting(
        "CLARION_EVENT_RELAY_AFTER",
        5.0,
        _positive_float,
        "An event still unpublished this many seconds after it was written (the publisher "
        "crashed after commit) is published by the gateway's relay.",
    )
    event_max_redeliveries: int = setting(
        "CLARION_EVENT_MAX_REDELIVERIES",
        3,
        _positive_int,
        "Times an event that needs an ack is sent again to a connection that did not ack.",
    )
    gateway_heartbeat: float = setting(
        "CLARION_GATEWAY_HEARTBEAT",
        25.0,
        _positive_float,
        "Seconds between pings to each client.",
    )
    gateway_heartbeat_timeout: float = setting(
        "CLARION_GATEWAY_HEARTBEAT_TIMEOUT",
        10.0,
        _positive_float,
        "A client that has not answered a ping within this many seconds is disconnected.",
    )
    gateway_outbound_queue: int = setting(
        "CLARION_GATEWAY_OUTBOUND_QUEUE",
        1000,
        _positive_int,
        "Frames queued for one connection before it is cut off as a slow consumer.",
    )
    gateway_send_timeout: float = setting(
        "CLARION_GATEWAY_SEND_TIMEOUT",
        5.0,
        _positive_float,
        "A connection whose socket has not taken one frame for this many seconds (the client "
        "stopped reading) is cut off as a slow consumer, whatever the heartbeat settings.",
    )
    gateway_flush_interval: float = setting(
        "CLARION_GATEWAY_FLUSH_INTERVAL",
        5.0,
        _positive_float,
        "Seconds between batched writes of connection counters, acks and delivery status.",
    )
    gateway_compression: bool = setting(
        "CLARION_GATEWAY_COMPRESSION",
        False,
        _bool,
        "Offer permessage-deflate (about 4x the memory per connection).",
    )
    gateway_max_message: int = setting(
        "CLARION_GATEWAY_MAX_MESSAGE",
        65536,
        _positive_int,
        "Largest frame accepted from a client, bytes.",
    )
    gateway_allowed_origins: tuple[str, ...] | None = setting(
        "CLARION_GATEWAY_ALLOWED_ORIGINS",
        None,
        _origins,
        "Comma-separated browser origins allowed to connect (https://auctions.example.com); "
        "another Origin gets HTTP 403 before the upgrade. Unset: any origin.",
    )
    gateway_allow_no_origin: bool = setting(
        "CLARION_GATEWAY_ALLOW_NO_ORIGIN",
        True,
        _bool,
        "Accept clients that send no Origin header (mobile apps, servers; not browsers).",
    )
    gateway_max_connections_per_user: int = setting(
        "CLARION_GATEWAY_MAX_CONNECTIONS_PER_USER",
        20,
        _non_negative_int,
        "Connections one user may hold on one gateway; 0: no limit.",
    )
    gateway_max_connections_per_ip: int = setting(
        "CLARION_GATEWAY_MAX_CONNECTIONS_PER_IP",
        0,
        _non_negative_int,
        "Connections one client IP may hold on one gateway; 0 (default): no limit.",
    )
    gateway_limit_policy: str = setting(
        "CLARION_GATEWAY_LIMIT_POLICY",
        "refuse_newest",
        _choice("refuse_newest", "close_oldest"),
        "Over a connection limit: refuse the new connection (close 4008 user, 4009 IP) or "
        "close the oldest one (close 4010) and accept the new.",
    )
    gateway_trusted_proxies: tuple[str, ...] = setting(
        "CLARION_GATEWAY_TRUSTED_PROXIES",
        (),
        _networks,
        "Comma-separated addresses or CIDR networks of the load balancers in front of the "
        "gateway: only their X-Forwarded-For is believed for the client IP.",
    )
    gateway_subscribe_rate: float = setting(
        "CLARION_GATEWAY_SUBSCRIBE_RATE",
        10.0,
        _positive_float,
        "Subscribe requests per second one connection may send (bursts up to as many); more are "
        "answered with a rate_limited error frame.",
    )
    gateway_max_subscriptions: int = setting(
        "CLARION_GATEWAY_MAX_SUBSCRIPTIONS",
        1000,
        _positive_int,
        "Topics plus auctions one connection may be subscribed to.",
    )
    gateway_fanout_log: str | None = setting(
        "CLARION_GATEWAY_FANOUT_LOG",
        None,
        _optional_str,
        "File to which every gateway process appends one JSON line per event it fanned out "
        "(publish, receipt and last socket write times; the benchmark reads it). Unset: off.",
    )
    presence_ttl: float = setting(
        "CLARION_PRESENCE_TTL",
        10.0,
        _positive_float,
        "Seconds a gateway process's presence entries in Redis outlive its last heartbeat "
        "(a killed gateway's users read as absent within this time).",
    )
    # --- retention (models.retention; run by the scheduler and `clarion purge`) ---------
    retention_interval: float = setting(
        "CLARION_RETENTION_INTERVAL",
        300.0,
        _positive_float,
        "Seconds between two purges of old rows by each scheduler.",
    )
    retention_max_seconds: float = setting(
        "CLARION_RETENTION_MAX_SECONDS",
        1.0,
        _positive_float,
        "Longest a scheduler's purge may run before it goes back to claiming (the rest waits "
        "for the next run); `clarion purge` runs to the end.",
    )
    retention_batch_size: int = setting(
        "CLARION_RETENTION_BATCH_SIZE",
        1000,
        _positive_int,
        "Rows deleted per purge transaction (short transactions, short row locks).",
    )
    retention_notifications_days: float = setting(
        "CLARION_RETENTION_NOTIFICATIONS_DAYS",
        30.0,
        _days,
        "Notifications sent, delivered, read, clicked or cancelled are deleted this many days "
        "after created_at, with their deliveries and attempts. 0 keeps them.",
    )
    retention_failed_days: float = setting(
        "CLARION_RETENTION_FAILED_DAYS",
        90.0,
        _days,
        "Failed notifications are deleted this many days after created_at, with their "
        "deliveries and attempts. 0 keeps them.",
    )
    retention_attempts_days: float = setting(
        "CLARION_RETENTION_ATTEMPTS_DAYS",
        0.0,
        _days,
        "delivery_attempts rows older than this many days are trimmed from notifications that "
        "are kept (never from a delivery still queued or sending). 0 (default): kept as long "
        "as their notification.",
    )
    retention_events_days: float = setting(
        "CLARION_RETENTION_EVENTS_DAYS",
        1.0,
        _days,
        "real_time_events whose retention_policy is 'standard' are deleted this many days after "
        "generated_at; must cover CLARION_EVENT_HISTORY_SECONDS (the resume window). 0 keeps them.",
    )
    retention_connections_days: float = setting(
        "CLARION_RETENTION_CONNECTIONS_DAYS",
        7.0,
        _days,
        "websocket_connections rows disconnected more than this many days ago are deleted. "
        "0 keeps them.",
    )
    retention_idempotency_days: float = setting(
        "CLARION_RETENTION_IDEMPOTENCY_DAYS",
        1.0,
        _days,
        "The HTTP API's stored first answers (idempotency_keys) are deleted this many days "
        "after the request; a repeat with the same Idempotency-Key after that is a new "
        "request. 0 keeps them.",
    )
    # --- receipts, suppression, unsubscribe ------------------------------------------
    public_base_url: str | None = setting(
        "CLARION_PUBLIC_BASE_URL",
        None,
        _optional_https_base,
        "The https URL at which `clarion web` is reached from outside (behind any proxy), "
        "e.g. https://notify.example.com. Twilio signatures are checked over it and "
        "List-Unsubscribe links point at it. Unset: emails carry no unsubscribe link.",
    )
    unsubscribe_secret: str | None = setting(
        "CLARION_UNSUBSCRIBE_SECRET",
        None,
        _optional_secret_key,
        "Key (at least 32 characters) signing the per-recipient one-click unsubscribe tokens.",
        secret=True,
    )
    sns_topic_arns: tuple[str, ...] = setting(
        "CLARION_SNS_TOPIC_ARNS",
        (),
        _arns,
        "Comma-separated SNS topic ARNs whose SES events are accepted; any other topic is "
        "refused (403). Unset: every SNS message is refused.",
    )
    twilio_status_callback: bool = setting(
        "CLARION_TWILIO_STATUS_CALLBACK",
        False,
        _bool,
        "Ask Twilio for delivery receipts: each SMS carries StatusCallback = "
        "CLARION_PUBLIC_BASE_URL + /receipts/twilio.",
    )
    # --- status callbacks to the platform --------------------------------------------
    status_callback_url: str | None = setting(
        "CLARION_STATUS_CALLBACK_URL",
        None,
        _optional_callback_url,
        "The platform's endpoint told when a delivery reaches one of "
        "CLARION_STATUS_CALLBACK_EVENTS (a signed JSON POST, Standard Webhooks). Unset: no "
        "status callbacks. Private and loopback hosts are allowed: the operator sets it.",
    )
    status_callback_secret: str | None = setting(
        "CLARION_STATUS_CALLBACK_SECRET",
        None,
        _optional_webhook_secret,
        "Key signing the status callbacks: whsec_ then base64 of 24 to 64 bytes; required with "
        "CLARION_STATUS_CALLBACK_URL.",
        secret=True,
    )
    status_callback_events: tuple[str, ...] = setting(
        "CLARION_STATUS_CALLBACK_EVENTS",
        CALLBACK_EVENTS,
        _callback_events,
        "Which delivery outcomes are called back, comma-separated: sent (a provider accepted "
        "it), delivered, failed (by Clarion), bounced (failed by a provider's later report).",
    )
    status_callback_max_attempts: int = setting(
        "CLARION_STATUS_CALLBACK_MAX_ATTEMPTS",
        12,
        _positive_int,
        "Attempts at posting one status callback (backoff between CLARION_RETRY_MIN_BACKOFF and "
        "CLARION_RETRY_MAX_BACKOFF) before it is failed and dead-lettered.",
    )
    status_callback_lease_seconds: float = setting(
        "CLARION_STATUS_CALLBACK_LEASE_SECONDS",
        300.0,
        _positive_float,
        "Seconds after which a status callback handed to the broker with no outcome (a lost "
        "message, a worker killed mid-post) is handed to it again by the scheduler.",
    )
    # --- web service -----------------------------------------------------------------
    web_host: str = setting(
        "CLARION_WEB_HOST", "127.0.0.1", _str, "Address clarion web (HTTP API, console) listens on."
    )
    web_port: int = setting("CLARION_WEB_PORT", 8080, _positive_int, "Port of clarion web.")
    web_workers: int = setting(
        "CLARION_WEB_WORKERS", 1, _positive_int, "Worker processes of clarion web (uvicorn)."
    )
    web_session_secret: str | None = setting(
        "CLARION_WEB_SESSION_SECRET",
        None,
        _optional_str,
        "Key that signs the console's session cookies, at least 32 characters. Unset: a random "
        "key per start (sessions end when clarion web restarts); required with more than one "
        "worker.",
        secret=True,
    )
    web_secure_cookies: bool = setting(
        "CLARION_WEB_SECURE_COOKIES",
        False,
        _bool,
        "Mark the console's cookies Secure (sent over HTTPS only): true behind TLS.",
    )
    web_session_hours: float = setting(
        "CLARION_WEB_SESSION_HOURS",
        8.0,
        _positive_float,
        "A console session ends this many hours after sign-in.",
    )
    # --- delivery policy ----------------------------------------------------------
    policy_enabled: bool = setting(
        "CLARION_POLICY",
        True,
        _bool,
        "Apply the delivery policy when notifications are claimed: opt-outs, quiet hours, "
        "collapse, presence and the per-user rate limit. false: every channel is sent as "
        "asked (the behaviour before the policy; for comparison runs).",
    )
    policy_rate_limit: int = setting(
        "CLARION_POLICY_RATE_LIMIT",
        1000,
        _non_negative_int,
        "Most non-required messages one user gets per channel per clock hour (in-app not "
        "counted); more are held to the next hour, not dropped. A safety net against a "
        "runaway sender, generous by default. 0: no limit.",
    )
    policy_collapse_window: float = setting(
        "CLARION_POLICY_COLLAPSE_WINDOW",
        60.0,
        _positive_float,
        "Seconds during which further notifications of a collapsible template for the same "
        "user and auction are folded into one follow-up, unless the template sets its own.",
    )
    policy_presence_max_age: float = setting(
        "CLARION_POLICY_PRESENCE_MAX_AGE",
        60.0,
        _positive_float,
        "A gateway connection counts as live for presence only if its last_heartbeat is at "
        "most this many seconds old (keep it above CLARION_GATEWAY_HEARTBEAT plus "
        "CLARION_GATEWAY_FLUSH_INTERVAL, or watching users get every channel).",
    )
    policy_presence: str = setting(
        "CLARION_POLICY_PRESENCE",
        "live",
        _choice("live", "rows"),
        "Where the policy learns that a user watches an auction: live (the gateways' "
        "presence in CLARION_REDIS_URL, one round trip per claimed batch; the connection "
        "rows when Redis does not answer) or rows (websocket_connections only, for "
        "gateways that do not share that Redis).",
    )
    policy_required_categories: str = setting(
        "CLARION_POLICY_REQUIRED_CATEGORIES",
        "payment",
        _category_list,
        "Comma-separated categories that ignore opt-outs, quiet hours and the rate limit "
        "(like templates marked required). Empty: none.",
    )
    # --- metrics (Prometheus) --------------------------------------------------------
    worker_metrics_host: str = setting(
        "CLARION_WORKER_METRICS_HOST",
        "127.0.0.1",
        _str,
        "Address of the /metrics endpoint of clarion worker (overridden by --host).",
    )
    worker_metrics_port: int = setting(
        "CLARION_WORKER_METRICS_PORT",
        9191,
        _port_or_off,
        "Port of the /metrics endpoint of clarion worker, one for all its processes "
        "(overridden by --port); 0 turns it off.",
    )
    scheduler_metrics_host: str = setting(
        "CLARION_SCHEDULER_METRICS_HOST",
        "127.0.0.1",
        _str,
        "Address of the /metrics endpoint of clarion scheduler (overridden by --host).",
    )
    scheduler_metrics_port: int = setting(
        "CLARION_SCHEDULER_METRICS_PORT",
        9192,
        _port_or_off,
        "Port of the /metrics endpoint of clarion scheduler (overridden by --port); "
        "0 turns it off.",
    )
    # --- logging --------------------------------------------------------------------
    log_level: str = setting(
        "CLARION_LOG_LEVEL", "INFO", _choice("DEBUG", "INFO", "WARNING", "ERROR"), "Log level."
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from ``environ`` (default ``os.environ``).

        Raises :class:`SettingsError` naming the first variable with a bad value.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            name = field.metadata["env"]
            if name not in env:
                continue
            try:
                values[field.name] = field.metadata["parse"](env[name])
            except ValueError as exc:
                raise SettingsError(name, str(exc)) from None
        settings = cls(**values)
        if settings.retry_max_backoff < settings.retry_min_backoff:
            raise SettingsError(
                "CLARION_RETRY_MAX_BACKOFF", "must not be smaller than CLARION_RETRY_MIN_BACKOFF"
            )
        events_kept = settings.retention_events_days * 86400.0
        if 0 < events_kept < settings.event_history_seconds:
            # A resuming client would be told "gap" for events the window promises.
            raise SettingsError(
                "CLARION_RETENTION_EVENTS_DAYS",
                "must keep events at least CLARION_EVENT_HISTORY_SECONDS (the resume window)",
            )
        if settings.status_callback_url and not settings.status_callback_secret:
            raise SettingsError(
                "CLARION_STATUS_CALLBACK_SECRET", "is required with CLARION_STATUS_CALLBACK_URL"
            )
        if bool(settings.twilio_backup_account_sid) != bool(settings.twilio_backup_auth_token):
            missing = (
                "CLARION_TWILIO_BACKUP_AUTH_TOKEN"
                if settings.twilio_backup_account_sid
                else "CLARION_TWILIO_BACKUP_ACCOUNT_SID"
            )
            raise SettingsError(
                missing,
                "CLARION_TWILIO_BACKUP_ACCOUNT_SID and _AUTH_TOKEN are set together or not at all",
            )
        if settings.web_session_secret is not None and len(settings.web_session_secret) < 32:
            raise SettingsError("CLARION_WEB_SESSION_SECRET", "must be at least 32 characters")
        if settings.web_workers > 1 and settings.web_session_secret is None:
            # Each process would sign with a key of its own: sessions would break at random.
            raise SettingsError(
                "CLARION_WEB_SESSION_SECRET", "is required when CLARION_WEB_WORKERS is above 1"
            )
        return settings

    @property
    def effective_database_url(self) -> str:
        """The configured URL, or the embedded SQLite default."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path.cwd() / 'clarion.db'}"

    @property
    def embedded(self) -> bool:
        """True when no database is configured and Clarion runs on SQLite."""
        return self.effective_database_url.startswith("sqlite")

    def describe(self) -> list[tuple[str, str, str]]:
        """(variable, shown value, doc) for each setting; secrets are masked."""
        rows = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None:
                shown = "(unset)"
            elif isinstance(value, tuple):
                shown = ",".join(value) or "(none)"
            else:
                shown = str(value)
            if field.metadata["secret"] and value is not None:
                shown = "********"
            elif isinstance(value, str):
                shown = safe_url(value)  # a password inside a database or broker URL
            rows.append((field.metadata["env"], shown, field.metadata["doc"]))
        return rows


def safe_url(url: str) -> str:
    """``url`` with its password, if it has one, replaced by ``***``; other text as is."""
    if "://" not in url or "@" not in url:
        return url
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return url.rsplit("@", 1)[-1]  # unparseable: keep only what follows the credentials
    if password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


_current: Settings | None = None


def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    global _current
    if _current is None:
        _current = Settings.from_env()
    return _current


def reset_settings(settings: Settings | None = None) -> None:
    """Replace (or forget) the cached settings; for tests and the demo."""
    global _current
    _current = settings
