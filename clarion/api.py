"""The application API: create notifications inside the caller's transaction.

``notify()`` writes one pending row to ``notifications``; the scheduler picks
it up after the transaction commits (a transactional outbox). Nothing is sent
if the caller rolls back.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from channels.base import OutgoingMessage
from channels.limits import overrun
from clarion.core.db import get_engine, session_factory
from clarion.core.errors import NotFoundError, TemplateError, ValidationError
from clarion.core.parse import (
    as_enum,
    as_enum_list,
    as_json,
    as_optional_uuid,
    as_text,
    as_uuid,
    check_text,
    shown,
)
from clarion.core.settings import Settings, get_settings
from clarion.emails import Layout, load_layout, render_email, single_line
from clarion.locales import (
    fallback_chain,
    formatting_locale,
    localize_data,
    normalize_locale,
    typed_json,
)
from clarion.metrics import notification_created
from clarion.templating import render
from models import (
    Category,
    Channel,
    Notification,
    NotificationStatus,
    NotificationTemplate,
    Priority,
)
from models import locales as locale_rows

UUIDLike = uuid.UUID | str

#: The template data of a notification given none (one object: see Lookups.rendered).
NO_DATA: Mapping[str, Any] = types.MappingProxyType({})

# The documented limits of notify()'s arguments (README, "Creating
# notifications"). Texts in characters (title, action URL and label are
# bounded by their columns); JSON arguments in bytes of compact UTF-8 JSON.
# A channel may carry less: see channels.limits, checked for the chosen channels.
TITLE_MAX = 255
MESSAGE_MAX = 100_000
ACTION_URL_MAX = 500
ACTION_LABEL_MAX = 100
IDEMPOTENCY_KEY_MAX = 255
TEMPLATE_KEY_MAX = 200
MAX_ATTEMPTS_LIMIT = 100
TEMPLATE_DATA_MAX_BYTES = 64 * 1024
RICH_CONTENT_MAX_BYTES = 64 * 1024
METADATA_MAX_BYTES = 16 * 1024
TAGS_MAX_BYTES = 4 * 1024


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NotifyRequest:
    """The arguments of one :func:`notify` call, as the caller gave them.

    Typed as ``notify`` declares them but not yet checked: application code
    is not type-checked, so every field is validated when the row is built.
    """

    user_id: UUIDLike
    template: str | None = None
    template_data: Mapping[str, Any] | None = None
    title: str | None = None
    message: str | None = None
    category: Category | str | None = None
    priority: Priority | str | None = None
    channels: Sequence[Channel | str] | None = None
    scheduled_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None
    auction_id: UUIDLike | None = None
    bid_id: UUIDLike | None = None
    item_id: UUIDLike | None = None
    action_url: str | None = None
    action_label: str | None = None
    rich_content: Any = None
    tags: Any = None
    metadata: Any = None
    max_attempts: int = 3
    idempotency_key: str | None = None
    locale: str | None = None
    cancellation_key: str | None = None


def notify(
    user_id: UUIDLike,
    *,
    template: str | None = None,
    template_data: Mapping[str, Any] | None = None,
    title: str | None = None,
    message: str | None = None,
    category: Category | str | None = None,
    priority: Priority | str | None = None,
    channels: Sequence[Channel | str] | None = None,
    scheduled_at: dt.datetime | None = None,
    expires_at: dt.datetime | None = None,
    auction_id: UUIDLike | None = None,
    bid_id: UUIDLike | None = None,
    item_id: UUIDLike | None = None,
    action_url: str | None = None,
    action_label: str | None = None,
    rich_content: Any = None,
    tags: Any = None,
    metadata: Any = None,
    max_attempts: int = 3,
    idempotency_key: str | None = None,
    locale: str | None = None,
    cancellation_key: str | None = None,
    session: Session | None = None,
) -> Notification:
    """Create a pending notification for ``user_id`` and return its row.

    Give either ``template`` (``"auction_type/event"``, e.g. ``"english/outbid"``,
    rendered with ``template_data``) or ``title`` and ``message``. ``category``,
    ``priority`` and ``channels`` default to the template's (without a
    template, ``category`` and ``channels`` are required and ``priority``
    defaults to normal).

    With ``session`` the row joins the caller's transaction and is flushed,
    not committed: it is sent only if the caller commits. Without, Clarion
    commits it in a transaction of its own.

    The template is the one for ``locale`` (default: the user's stored
    locale, else ``CLARION_DEFAULT_LOCALE``), falling back along the chain
    ``pt-BR`` -> ``pt`` -> the default; typed values in ``template_data``
    (:mod:`clarion.locales`) are formatted for the reader. The row records
    the locale and template version it was rendered with and, when it goes
    by email, the rendered email (:mod:`clarion.emails`).

    With ``idempotency_key``, a second call with the same key returns the
    first notification instead of creating another, also when two calls race.
    ``cancellation_key`` names it for :func:`clarion.cancel` (e.g.
    ``f"outbid:{auction_id}:{user_id}"``): what is not yet handed to a
    provider is cancelled then.

    Raises :class:`~clarion.core.errors.ValidationError` naming the first invalid
    argument, :class:`~clarion.core.errors.TemplateError` for a template that cannot
    be rendered, :class:`~clarion.core.errors.NotFoundError` for an unknown template.
    """
    request = NotifyRequest(
        user_id=user_id,
        template=template,
        template_data=template_data,
        title=title,
        message=message,
        category=category,
        priority=priority,
        channels=channels,
        scheduled_at=scheduled_at,
        expires_at=expires_at,
        auction_id=auction_id,
        bid_id=bid_id,
        item_id=item_id,
        action_url=action_url,
        action_label=action_label,
        rich_content=rich_content,
        tags=tags,
        metadata=metadata,
        max_attempts=max_attempts,
        idempotency_key=idempotency_key,
        locale=locale,
        cancellation_key=cancellation_key,
    )
    if session is None:
        engine = get_engine(get_settings().effective_database_url)
        with session_factory(engine)() as own, own.begin():
            return _create(own, request)
    return _create(session, request)


@dataclasses.dataclass
class Lookups:
    """What building a row reads besides its request: the settings, users'
    locales, templates and the email layout. One per call of :func:`notify`;
    ``clarion.bulk.notify_many`` shares one across its entries, with the
    users' locales read in one query beforehand."""

    session: Session
    settings: Settings = dataclasses.field(default_factory=get_settings)
    #: user id -> stored locale, for the users read beforehand (None: none stored).
    locales: dict[uuid.UUID, str | None] | None = None
    templates: dict[tuple[str, tuple[str, ...]], NotificationTemplate] = dataclasses.field(
        default_factory=dict
    )
    layout: Layout | None = None
    _data: dict[int, tuple[object, Mapping[str, Any]]] = dataclasses.field(default_factory=dict)
    _rendered: dict[tuple[Any, ...], tuple[str, str]] = dataclasses.field(default_factory=dict)
    _fits: set[tuple[Any, ...]] = dataclasses.field(default_factory=set)

    def user_locale(self, user: uuid.UUID) -> str | None:
        if self.locales is not None and user in self.locales:
            return self.locales[user]
        return locale_rows.get_locale(self.session, user)

    def template(self, key: str, chain: Sequence[str]) -> NotificationTemplate:
        if not isinstance(key, str):  # refused by name before it is used as a cache key
            _template_key(key)
        cache_key = (key, tuple(chain))
        found = self.templates.get(cache_key)
        if found is None:
            found = self.templates[cache_key] = load_template(self.session, key, chain)
        return found

    def checked_data(self, value: object) -> Mapping[str, Any]:
        """``template_data`` checked and typed, once per object however many rows share it.

        The objects are kept until the end of the call, so that an id names
        one object throughout.
        """
        hit = self._data.get(id(value))
        if hit is not None and hit[0] is value:
            return hit[1]
        checked = _template_data(typed_json(value) if isinstance(value, Mapping) else value)
        self._data[id(value)] = (value, checked)
        return checked

    def rendered(
        self, tmpl: NotificationTemplate, locale: str, data: Mapping[str, Any]
    ) -> tuple[str, str]:
        """Title and message of ``tmpl`` for ``data`` (from :meth:`checked_data`) in ``locale``.

        Rendered once per template version, locale and data object: the
        watchers of one auction in one locale read the same text.
        """
        key = (tmpl.template_id, tmpl.version, locale, id(data))
        hit = self._rendered.get(key)
        if hit is not None:
            return hit
        values = localize_data(data, locale)
        try:
            # A subject line is one line, whatever the values hold.
            title = single_line(render(tmpl.title, values))
            message = render(tmpl.message, values, html=tmpl.body_format == "html")
        except TemplateError as exc:
            # Keep the type (MissingVariableError and its .name) and say which template.
            exc.add_note(f"while rendering template {tmpl.key}")
            raise
        self._rendered[key] = (title, message)
        return title, message

    def check_channel_limits(
        self, values: dict[str, Any], chosen: list[Channel], *, html: bool
    ) -> None:
        """:func:`_check_channel_limits`, once per distinct content (a fan-out shares it)."""
        key = (
            tuple(chosen),
            html,
            values["auction_id"] is None,
            *(
                values.get(k)
                for k in ("title", "message", "email_text", "email_html", "action_url")
            ),
            values["action_label"],
            values["category"],
            values["priority"],
        )
        if key in self._fits:
            return
        _check_channel_limits(values, chosen, html=html)
        self._fits.add(key)

    def email_layout(self) -> Layout:
        if self.layout is None:
            self.layout = load_layout(self.session, self.settings.email_layout)
        return self.layout


def _create(session: Session, r: NotifyRequest) -> Notification:
    """Validate ``r``, insert its row in ``session`` (flushed, not committed), return it."""
    return _insert(session, build_values(r, Lookups(session)))


def build_values(r: NotifyRequest, lookups: Lookups) -> dict[str, Any]:
    """Validate and render ``r``: the column values of its row (no id, no timestamps)."""
    # Filled in from the template when one is given.
    title, message = r.title, r.message
    category, priority, channels = r.category, r.priority, r.channels
    template_data = r.template_data

    user = as_uuid(r.user_id, "user_id")
    settings = lookups.settings
    default_locale = settings.default_locale
    if r.locale is not None:
        wanted = normalize_locale(r.locale)
    else:
        wanted = lookups.user_locale(user) or default_locale
    # Checked before rendering, so that a bad value is named as template_data
    # and not as the title or message it would have ended up in.
    checked = lookups.checked_data(template_data) if template_data is not None else NO_DATA
    tmpl = (
        lookups.template(r.template, fallback_chain(wanted, default_locale))
        if r.template is not None
        else None
    )
    rendered_locale = tmpl.locale if tmpl is not None else wanted
    if tmpl is not None:
        if title is not None or message is not None:
            raise ValidationError("template", "give either a template or title and message")
        title, message = lookups.rendered(tmpl, formatting_locale(wanted, tmpl.locale), checked)
        category = category if category is not None else tmpl.category
        priority = priority if priority is not None else tmpl.priority
        channels = channels if channels is not None else tmpl.channels
    else:
        if title is None or message is None:
            raise ValidationError(
                "title" if title is None else "message",
                "is required when no template is given",
            )
        if category is None:
            raise ValidationError("category", "is required when no template is given")
        if channels is None:
            raise ValidationError("channels", "is required when no template is given")

    values = {
        "user_id": user,
        "category": as_enum(Category, category, "category"),
        "priority": as_enum(
            Priority, Priority.NORMAL if priority is None else priority, "priority"
        ),
        "title": _text("title", title, TITLE_MAX),
        "message": _text("message", message, MESSAGE_MAX),
        "auction_id": as_optional_uuid(r.auction_id, "auction_id"),
        "bid_id": as_optional_uuid(r.bid_id, "bid_id"),
        "item_id": as_optional_uuid(r.item_id, "item_id"),
        "action_url": _action_url(r.action_url),
        "action_label": _optional_text("action_label", r.action_label, ACTION_LABEL_MAX),
        "rich_content": _json("rich_content", r.rich_content, RICH_CONTENT_MAX_BYTES),
        "template_id": tmpl.template_id if tmpl is not None else None,
        "template_data": dict(checked) if template_data is not None else None,
        "tags": _json("tags", r.tags, TAGS_MAX_BYTES),
        "metadata": _json("metadata", r.metadata, METADATA_MAX_BYTES),
        "max_attempts": _max_attempts(r.max_attempts),
        "idempotency_key": _optional_text(
            "idempotency_key", r.idempotency_key, IDEMPOTENCY_KEY_MAX
        ),
        "cancellation_key": _optional_text(
            "cancellation_key", r.cancellation_key, IDEMPOTENCY_KEY_MAX
        ),
        "status": NotificationStatus.PENDING,
    }
    chosen = as_enum_list(Channel, channels, "channels")
    values["delivery_channels"] = [c.value for c in chosen]
    # The spec's single-valued notification_type is the first (primary) channel.
    values["notification_type"] = chosen[0]
    values["scheduled_at"], values["expires_at"] = _schedule(r.scheduled_at, r.expires_at)
    values["locale"] = rendered_locale
    values["template_version"] = tmpl.version if tmpl is not None else None
    html_body = tmpl is not None and tmpl.body_format == "html"
    if Channel.EMAIL in chosen:
        email = render_email(
            lookups.email_layout(),
            locale=rendered_locale,
            default_locale=default_locale,
            title=values["title"],
            message=values["message"],
            body_format="html" if html_body else "text",
            category=Category(values["category"]).value,
            action_url=values["action_url"],
            action_label=values["action_label"],
            platform=settings.platform_name,
            logo_url=settings.platform_logo_url,
        )
        values["email_html"] = email.html
        values["email_text"] = email.text
        values["email_layout_version"] = email.layout_version
    lookups.check_channel_limits(values, chosen, html=html_body)
    return values


def _check_channel_limits(values: dict[str, Any], chosen: list[Channel], *, html: bool) -> None:
    """Refuse a notification one of its channels could not carry, naming the channel.

    The message is measured as the worker will build it (the same data
    fields, ids of the same length), with the limits the adapters enforce
    again at send time.
    """
    data = {
        "notification_id": str(uuid.uuid4()),
        "category": Category(values["category"]).value,
        "priority": Priority(values["priority"]).value,
    }
    if values["auction_id"] is not None:
        data["auction_id"] = str(values["auction_id"])
    for channel in chosen:
        email = channel is Channel.EMAIL and values.get("email_html") is not None
        message = OutgoingMessage(
            notification_id=uuid.uuid4(),
            delivery_id=uuid.uuid4(),
            channel=channel,
            to="",
            title=values["title"],
            body=values["email_text"] if email else values["message"],
            html=values["email_html"] if email else (values["message"] if html else None),
            action_url=values["action_url"],
            action_label=values["action_label"],
            data=data,
        )
        too_large = overrun(message)
        if too_large is not None:
            raise ValidationError("message", f"too large for channel {channel.value}: {too_large}")


# --- insertion -----------------------------------------------------------------


def _insert(session: Session, values: dict[str, Any]) -> Notification:
    now = dt.datetime.now(dt.UTC)
    notification_id = uuid.uuid4()
    row = {**values, "notification_id": notification_id, "created_at": now, "updated_at": now}
    row["delivery_attempts"] = 0
    row["is_read"] = False
    row["is_archived"] = False
    key = values["idempotency_key"]
    table = Notification.__table__
    assert isinstance(table, sa.Table)
    if key is None:
        session.execute(sa.insert(table).values(row))
    else:
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        # ON CONFLICT makes a racing second insert wait for the first
        # transaction, then do nothing if it committed: exactly one row.
        stmt = (
            insert(table)
            .values(row)
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(table.c.notification_id)
        )
        inserted = session.execute(stmt).scalar_one_or_none()
        if inserted is None:
            existing = session.scalars(
                sa.select(Notification).where(Notification.idempotency_key == key)
            ).one()
            if existing.user_id != values["user_id"]:
                raise ValidationError(
                    "idempotency_key", "is already used by a notification for another user"
                )
            return existing
    priority = values["priority"]
    notification_created(str(getattr(priority, "value", priority)))
    return session.get_one(Notification, notification_id)


def template_rows(session: Session, key: str) -> list[NotificationTemplate]:
    """Every active row of template ``key``, one per locale; NotFoundError if none."""
    auction_type, event = _template_key(key)
    rows = list(
        session.scalars(
            sa.select(NotificationTemplate).where(
                NotificationTemplate.auction_type == auction_type,
                NotificationTemplate.event == event,
                NotificationTemplate.is_active.is_(True),
            )
        )
    )
    if not rows:
        raise NotFoundError(f"template: no active template {key!r}")
    return rows


def _template_key(key: str) -> tuple[str, str]:
    if not isinstance(key, str) or key.count("/") != 1 or len(key) > TEMPLATE_KEY_MAX:
        raise ValidationError("template", f"expected 'auction_type/event', got {shown(key)}")
    check_text(key, "template")
    auction_type, event = key.split("/")
    return auction_type, event


def load_template(session: Session, key: str, chain: Sequence[str]) -> NotificationTemplate:
    """The active template ``key`` in the first locale of ``chain`` that has one."""
    auction_type, event = _template_key(key)
    found = {
        t.locale: t
        for t in session.scalars(
            sa.select(NotificationTemplate).where(
                NotificationTemplate.auction_type == auction_type,
                NotificationTemplate.event == event,
                NotificationTemplate.locale.in_(list(chain)),
                NotificationTemplate.is_active.is_(True),
            )
        )
    }
    for locale in chain:
        if locale in found:
            return found[locale]
    raise NotFoundError(f"template: no active template {key!r} in {', '.join(chain)}")


# --- validation ------------------------------------------------------------------


def _text(field: str, value: object, limit: int) -> str:
    return as_text(value, field, limit=limit)


def _optional_text(field: str, value: object, limit: int) -> str | None:
    return None if value is None else _text(field, value, limit)


def _action_url(value: str | None) -> str | None:
    url = _optional_text("action_url", value, ACTION_URL_MAX)
    if url is not None and not url.startswith(("https://", "http://", "/")):
        raise ValidationError("action_url", "must be an http(s) URL or a path starting with /")
    return url


def _json(field: str, value: Any, limit: int) -> Any:
    return None if value is None else as_json(value, field, limit=limit)


def _template_data(value: object) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValidationError("template_data", "expected a mapping of names to values")
    plain: dict[str, Any] = as_json(value, "template_data", limit=TEMPLATE_DATA_MAX_BYTES)
    return plain


def _max_attempts(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("max_attempts", f"expected an integer, got {shown(value)}")
    if not 1 <= value <= MAX_ATTEMPTS_LIMIT:
        raise ValidationError("max_attempts", f"must be between 1 and {MAX_ATTEMPTS_LIMIT}")
    return value


def _aware(field: str, value: object) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        raise ValidationError(field, f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(field, "must be timezone-aware (e.g. datetime.now(UTC))")
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:  # e.g. datetime.max at a negative offset
        raise ValidationError(field, "is out of range") from None


def _schedule(
    scheduled_at: object, expires_at: object
) -> tuple[dt.datetime | None, dt.datetime | None]:
    start = _aware("scheduled_at", scheduled_at)
    end = _aware("expires_at", expires_at)
    if end is not None:
        if end <= dt.datetime.now(dt.UTC):
            raise ValidationError("expires_at", "is in the past")
        if start is not None and end <= start:
            raise ValidationError("expires_at", "must be after scheduled_at")
    return start, end
