"""The MIME message of an email, built once for every email adapter.

SMTP sends it as is; SES gets it as ``Raw`` content, so both providers carry
the same ``multipart/alternative`` (the text part first, the layout's HTML
last, as RFC 2046 orders alternatives from plainest to richest).
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from channels.base import OutgoingMessage


def build_mime(message: OutgoingMessage, *, from_address: str, msgid_domain: str) -> EmailMessage:
    """``message`` as MIME: its text, plus an HTML alternative when it has one.

    Raises ``ValueError`` for a header that would carry a CR or LF (header
    injection is refused, never folded away).
    """
    mail = EmailMessage()
    mail["Subject"] = message.title
    mail["From"] = from_address
    mail["To"] = message.to
    mail["Date"] = formatdate(localtime=False)
    # Our own domain: make_msgid()'s default calls socket.getfqdn(), a DNS
    # lookup with no timeout, on every send.
    mail["Message-ID"] = make_msgid(domain=msgid_domain)
    # Lets a bounce or a support question be traced back to the notification.
    mail["X-Clarion-Notification-Id"] = str(message.notification_id)
    mail["X-Clarion-Delivery-Id"] = str(message.delivery_id)
    for name, value in message.headers.items():  # List-Unsubscribe (RFC 8058), ...
        mail[name] = value
    mail.set_content(message.body)
    if message.html:
        mail.add_alternative(message.html, subtype="html")
    return mail
