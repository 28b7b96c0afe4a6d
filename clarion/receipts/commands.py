"""``clarion suppression list / add / remove``: the operators' view of suppressed addresses.

Addresses are shown masked, as ``clarion address list`` shows them; ``list
--address A`` answers whether one given address is suppressed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from clarion.core.errors import ValidationError
from clarion.exitcodes import ExitCode

_CHANNELS = ("email", "sms", "push", "webhook")


def add_parsers(sub: Any) -> None:
    """``clarion suppression`` (registered by ``clarion.cli``)."""
    parser = sub.add_parser(
        "suppression", help="addresses never sent to again (bounces, complaints, dead tokens)"
    )
    actions = parser.add_subparsers(dest="suppression_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="active suppressions, newest first, masked")
    listing.add_argument("--channel", help="only this channel")
    listing.add_argument("--address", help="only this address (is it suppressed?)")
    listing.add_argument("--all", action="store_true", help="include lifted ones")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    add = actions.add_parser("add", help="suppress an address by hand")
    add.add_argument("channel", help="email, sms, push or webhook")
    add.add_argument("address")
    add.add_argument("--reason", default="operator", help="why (default: operator)")
    remove = actions.add_parser("remove", help="lift a suppression: the address is sent to again")
    remove.add_argument("channel", help="email, sms, push or webhook")
    remove.add_argument("address")
    remove.add_argument("--reason", default="lifted by an operator")
    parser.set_defaults(func=cmd_suppression)


def _channel(value: str | None) -> Any:
    from models.enums import Channel

    if value is None:
        return None
    if value not in _CHANNELS:
        raise ValidationError("channel", f"must be one of {', '.join(_CHANNELS)}, got {value!r}")
    return Channel(value)


def cmd_suppression(args: argparse.Namespace) -> int:
    from clarion.core.db import make_engine
    from clarion.core.settings import get_settings
    from clarion.operators.inspect import mask_address
    from models import suppressions

    settings = get_settings()
    channel = _channel(args.channel)
    if args.suppression_command in ("add", "remove") and not args.address.strip():
        raise ValidationError("address", "is empty")
    engine = make_engine(settings.effective_database_url)
    try:
        with engine.begin() as conn:
            if args.suppression_command == "add":
                new = suppressions.suppress(
                    conn, channel, args.address, reason=args.reason[:50], source="operator"
                )
                print("suppressed" if new else "already suppressed")
                return ExitCode.OK
            if args.suppression_command == "remove":
                if not suppressions.lift(conn, channel, args.address, reason=args.reason[:255]):
                    print("clarion: not found: that address is not suppressed", file=sys.stderr)
                    return ExitCode.NOT_FOUND
                print("lifted: the address will be sent to again")
                return ExitCode.OK
            rows = suppressions.list_suppressions(conn, channel=channel, include_lifted=args.all)
    finally:
        engine.dispose()
    if args.address:
        rows = [
            r for r in rows if r.address == suppressions.normal_address(r.channel, args.address)
        ]
    for r in rows:
        item = {
            "suppression_id": str(r.suppression_id),
            "channel": _name(r.channel),
            "address": mask_address(_name(r.channel), r.address),
            "reason": r.reason,
            "source": r.source,
            "created_at": r.created_at.isoformat(),
            "lifted_at": r.lifted_at.isoformat() if r.lifted_at else None,
        }
        if args.json:
            print(json.dumps(item))
        else:
            lifted = f"  lifted {item['lifted_at']}" if item["lifted_at"] else ""
            print(
                f"{item['channel']:<8} {item['address']:<32} {item['reason']:<13} "
                f"{item['source']:<9} {item['created_at']}{lifted}"
            )
    if not rows and not args.json:
        print("no suppressions")
    return ExitCode.OK


def _name(channel: Any) -> str:
    return str(getattr(channel, "value", channel))
