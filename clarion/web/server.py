"""Running ``clarion web`` on uvicorn, and the ``clarion web`` / ``clarion apikey`` commands.

uvicorn handles SIGTERM and SIGINT gracefully: it stops accepting, lets the
requests in flight finish (at most ``GRACEFUL_SECONDS``), runs the
application's shutdown (engine and Redis closed) and exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from clarion.core.settings import Settings, get_settings
from clarion.exitcodes import ExitCode

#: Seconds requests in flight get to finish on SIGTERM.
GRACEFUL_SECONDS = 20


def serve(settings: Settings, *, host: str, port: int, workers: int) -> None:
    import uvicorn

    from clarion.core.logging import configure_logging

    configure_logging(settings.log_level)
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "timeout_graceful_shutdown": GRACEFUL_SECONDS,
        "log_level": settings.log_level.lower(),
        "access_log": False,  # paths carry ids, never bodies; keep the log for errors
        "proxy_headers": False,
    }
    if workers > 1:
        uvicorn.run("clarion.web.app:app_from_env", factory=True, workers=workers, **common)
        return
    from clarion.web.app import create_app

    uvicorn.run(create_app(settings), **common)


def add_parsers(sub: Any) -> None:
    """``clarion web`` and ``clarion apikey`` (registered by ``clarion.cli``)."""
    web = sub.add_parser("web", help="run the HTTP API and the operators' console (uvicorn)")
    web.add_argument("--host", help="listen address (default: CLARION_WEB_HOST)")
    web.add_argument("--port", type=int, help="port (default: CLARION_WEB_PORT)")
    web.add_argument("--workers", type=int, help="processes (default: CLARION_WEB_WORKERS)")
    web.add_argument(
        "--openapi", action="store_true", help="print the OpenAPI schema (JSON) and exit"
    )
    web.set_defaults(func=cmd_web)

    key = sub.add_parser("apikey", help="create, list and revoke API keys of clarion web")
    key_sub = key.add_subparsers(dest="apikey_command", required=True, metavar="ACTION")
    create = key_sub.add_parser("create", help="a new key, printed once")
    create.add_argument("name", help="whose key, e.g. 'auction-platform' or 'on-call'")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        help="send, read or operate (repeatable, or comma-separated)",
    )
    listing = key_sub.add_parser("list", help="every key: id, name, scopes, state (never the key)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    revoke = key_sub.add_parser("revoke", help="revoke a key at once (by id or its clk_ prefix)")
    revoke.add_argument("key", metavar="KEY_ID")
    key.set_defaults(func=cmd_apikey)


def cmd_web(args: argparse.Namespace) -> int:
    from clarion.core.errors import ValidationError

    settings = get_settings()
    if args.openapi:
        from clarion.web.app import create_app

        app = create_app(settings)
        print(json.dumps(app.openapi(), indent=2, sort_keys=True))
        app.state.clarion.close()
        return ExitCode.OK
    port = settings.web_port if args.port is None else args.port
    workers = settings.web_workers if args.workers is None else args.workers
    if not 0 < port < 65536:
        raise ValidationError("--port", f"must be between 1 and 65535, got {port}")
    if workers < 1:
        raise ValidationError("--workers", f"must be at least 1, got {workers}")
    if workers > 1 and settings.web_session_secret is None:
        raise ValidationError(
            "--workers", "more than one worker needs CLARION_WEB_SESSION_SECRET (shared sessions)"
        )
    serve(settings, host=args.host or settings.web_host, port=port, workers=workers)
    return ExitCode.OK


def cmd_apikey(args: argparse.Namespace) -> int:
    from clarion.core.db import make_engine, session_factory
    from models.apikeys import ApiKeys, parse_scopes

    settings = get_settings()
    engine = make_engine(settings.effective_database_url)
    try:
        keys = ApiKeys(session_factory(engine))
        if args.apikey_command == "create":
            scopes = parse_scopes(args.scope)
            info, key = keys.create(args.name, scopes)
            print(f"created {info.key_id} {info.name} [{', '.join(s.value for s in scopes)}]")
            # Made here, stored only hashed: this is the one copy there will ever be.
            print(f"key (shown once, keep it secret): {key}")
            return ExitCode.OK
        if args.apikey_command == "revoke":
            info = keys.revoke(args.key)
            print(f"revoked {info.key_id} {info.name}")
            return ExitCode.OK
        rows = keys.list()
    finally:
        engine.dispose()
    if not rows:
        print("no API keys")
    for k in rows:
        row = {
            "key_id": str(k.key_id),
            "name": k.name,
            "prefix": f"clk_{k.lookup}",
            "scopes": [s.value for s in k.scopes],
            "created_at": k.created_at.isoformat(timespec="seconds"),
            "last_used_at": k.last_used_at.isoformat(timespec="seconds")
            if k.last_used_at
            else None,
            "revoked_at": k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else None,
        }
        if args.json:
            sys.stdout.write(json.dumps(row) + "\n")
        else:
            state = f"revoked {row['revoked_at']}" if k.revoked_at else "active"
            shown = ",".join(s.value for s in k.scopes)
            print(f"{row['key_id']}  {row['prefix']}  {k.name:<24} {shown:<20} {state}")
    return ExitCode.OK
