"""``clarion prefs ...`` and ``clarion cancel``: the delivery policy from the shell.

Thin: each command parses its arguments, calls :mod:`clarion.policy` and
prints the result. Bad arguments raise :class:`~clarion.core.errors.ValidationError`,
which the CLI turns into exit code 2 with the message naming the argument.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_parsers"]


def cmd_prefs(args: argparse.Namespace) -> int:
    from clarion import policy

    action = args.prefs_command
    if action == "opt-out":
        added = policy.opt_out(args.user_id, args.channel, args.category)
        scope = f"{args.category} on {args.channel}" if args.category else args.channel
        print(f"opted out of {scope}" if added else f"already opted out of {scope}")
        return 0
    if action == "opt-in":
        removed = policy.opt_in(args.user_id, args.channel, args.category)
        scope = f"{args.category} on {args.channel}" if args.category else args.channel
        print(f"opted in to {scope}" if removed else f"no opt-out of {scope} to remove")
        return 0
    if action == "quiet-hours":
        if args.clear:
            cleared = policy.clear_quiet_hours(args.user_id)
            print("quiet hours cleared" if cleared else "no quiet hours to clear")
            return 0
        if args.start is None or args.end is None or args.tz is None:
            from clarion.core.errors import ValidationError

            raise ValidationError("quiet-hours", "give START END --tz ZONE, or --clear")
        quiet = policy.set_quiet_hours(args.user_id, args.start, args.end, args.tz)
        print(f"quiet hours {quiet.start:%H:%M}-{quiet.end:%H:%M} {quiet.time_zone}")
        return 0
    if action == "template":
        policy.set_template_policy(
            args.template,
            required=args.required,
            collapsible=args.collapsible,
            collapse_window=args.window,
            collapse_title=args.collapse_title,
            collapse_message=args.collapse_message,
            locale=args.locale,
        )
        print(f"template {args.template} updated")
        return 0
    prefs = policy.get_preferences(args.user_id)
    shown: dict[str, Any] = {
        "user_id": str(prefs.user_id),
        "opt_outs": [
            {"channel": o.channel.value, "category": o.category.value if o.category else None}
            for o in prefs.opt_outs
        ],
        "quiet_hours": None
        if prefs.quiet_hours is None
        else {
            "start": f"{prefs.quiet_hours.start:%H:%M}",
            "end": f"{prefs.quiet_hours.end:%H:%M}",
            "time_zone": prefs.quiet_hours.time_zone,
        },
    }
    if args.json:
        print(json.dumps(shown))
        return 0
    if not prefs.opt_outs:
        print("opt-outs: none")
    for o in prefs.opt_outs:
        print(f"opted out: {o.category.value + ' on ' if o.category else ''}{o.channel.value}")
    q = shown["quiet_hours"]
    print(f"quiet hours: {q['start']}-{q['end']} {q['time_zone']}" if q else "quiet hours: none")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from clarion import policy

    done = policy.cancel(
        user_id=args.user,
        auction_id=args.auction,
        template=args.template,
        cancellation_key=args.key,
        reason=args.reason,
    )
    print(
        f"cancelled {done.deliveries} deliveries of {done.notifications} notifications; "
        f"{done.not_recalled} already with a provider (not recalled)"
    )
    return 0


def add_parsers(sub: Any) -> None:
    prefs = sub.add_parser(
        "prefs", help="users' opt-outs and quiet hours, templates' policy (README: Delivery policy)"
    )
    ps = prefs.add_subparsers(dest="prefs_command", required=True, metavar="ACTION")
    show = ps.add_parser("show", help="a user's opt-outs and quiet hours")
    show.add_argument("user_id")
    show.add_argument("--json", action="store_true", help="print JSON")
    for name, text in (("opt-out", "stop a channel"), ("opt-in", "remove an opt-out")):
        p = ps.add_parser(name, help=f"{text} for a user (all categories, or --category)")
        p.add_argument("user_id")
        p.add_argument("channel", help="email, sms, push, in_app or webhook")
        p.add_argument("--category", help="only this category (auction, bid, payment, ...)")
    quiet = ps.add_parser("quiet-hours", help="set or clear a user's quiet hours")
    quiet.add_argument("user_id")
    quiet.add_argument("start", nargs="?", help="HH:MM, e.g. 22:00")
    quiet.add_argument("end", nargs="?", help="HH:MM, e.g. 07:00")
    quiet.add_argument("--tz", help="IANA time zone, e.g. Europe/Paris")
    quiet.add_argument("--clear", action="store_true", help="remove the user's quiet hours")
    tmpl = ps.add_parser("template", help="mark a template required or collapsible")
    tmpl.add_argument("template", help="auction_type/event")
    tmpl.add_argument(
        "--required", action=argparse.BooleanOptionalAction, help="ignores opt-outs, quiet hours"
    )
    tmpl.add_argument(
        "--collapsible", action=argparse.BooleanOptionalAction, help="fold bursts per auction"
    )
    tmpl.add_argument("--window", type=int, help="collapse window, seconds")
    tmpl.add_argument("--collapse-title", help="follow-up title ({count}, {more}, data)")
    tmpl.add_argument("--collapse-message", help="follow-up message ({count}, {more}, data)")
    tmpl.add_argument(
        "--locale", help="set the follow-up texts of this language's row only (e.g. de)"
    )
    prefs.set_defaults(func=cmd_prefs)

    cancel = sub.add_parser(
        "cancel", help="cancel what is not yet handed to a provider (by user, auction, key)"
    )
    cancel.add_argument("--user", help="user id")
    cancel.add_argument("--auction", help="auction id")
    cancel.add_argument("--template", help="auction_type/event, e.g. english/outbid")
    cancel.add_argument("--key", help="the cancellation_key given to notify")
    cancel.add_argument("--reason", help="recorded on the cancelled rows")
    cancel.set_defaults(func=cmd_cancel)
