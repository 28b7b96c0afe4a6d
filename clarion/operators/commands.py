"""``clarion dlq list|show|requeue|purge``, ``clarion status``, ``clarion inspect``.

Every option can also be given as an environment variable named
``CLARION_<COMMAND>_<OPTION>`` (``--max-due-age`` of ``status`` is
``CLARION_STATUS_MAX_DUE_AGE``; the ``dlq`` subcommands share
``CLARION_DLQ_*``: ``CLARION_DLQ_CHANNEL``, ``CLARION_DLQ_JSON``, ...). A flag
given on the command line wins over its variable; flags take true/false.

Output is a table for people, or with ``--json`` one JSON object per line.
Errors are one line on stderr with the exit code of :mod:`clarion.cli`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from clarion.core.errors import ValidationError
from clarion.core.settings import Settings, get_settings
from clarion.exitcodes import ExitCode

if TYPE_CHECKING:
    from rich.console import Console
    from sqlalchemy.orm import Session, sessionmaker

    from clarion.operators.deadletters import DeadLetters
    from clarion.operators.dlq import DeadLetterOps, Entry, ItemResult


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


# --- options with environment variables ------------------------------------------------


def _option(
    parser: argparse.ArgumentParser,
    flag: str,
    env: str,
    help_text: str,
    *,
    boolean: bool = False,
    metavar: str | None = None,
) -> None:
    if boolean:
        parser.add_argument(flag, action="store_true", default=None, help=f"{help_text} [{env}]")
    else:
        parser.add_argument(flag, default=None, metavar=metavar, help=f"{help_text} [{env}]")
    dest = flag.lstrip("-").replace("-", "_")
    envs: list[tuple[str, str, bool]] = parser.get_default("env_options")
    envs.append((dest, env, boolean))


def _env_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.set_defaults(env_options=[])
    return parser


def apply_env(args: argparse.Namespace) -> None:
    """Fill options not given on the command line from their variables."""
    for dest, env, boolean in getattr(args, "env_options", []):
        if getattr(args, dest, None) is not None:
            continue
        raw = os.environ.get(env)
        if boolean:
            value = False
            if raw is not None:
                low = raw.strip().lower()
                if low not in _TRUE | _FALSE:
                    raise ValidationError(env, f"expected true or false, got {raw!r}")
                value = low in _TRUE
            setattr(args, dest, value)
        else:
            setattr(args, dest, raw if raw not in (None, "") else None)


def _number(value: str | None, name: str, default: float) -> float:
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if number < 0:
        raise ValidationError(name, f"must be a number of 0 or more, got {value!r}")
    return number


def _filter_options(parser: argparse.ArgumentParser) -> None:
    _option(parser, "--channel", "CLARION_DLQ_CHANNEL", "only this channel", metavar="CHANNEL")
    _option(parser, "--queue", "CLARION_DLQ_QUEUE", "only this queue", metavar="QUEUE")
    _option(
        parser,
        "--since",
        "CLARION_DLQ_SINCE",
        "died at or after: ISO 8601 or an age (30m, 1h, 2d)",
        metavar="WHEN",
    )
    _option(parser, "--until", "CLARION_DLQ_UNTIL", "died at or before", metavar="WHEN")
    _option(
        parser,
        "--error",
        "CLARION_DLQ_ERROR",
        "last error (as the database recorded it) contains this text",
        metavar="TEXT",
    )
    _option(parser, "--limit", "CLARION_DLQ_LIMIT", "at most this many, newest first", metavar="N")


def add_parsers(sub: Any) -> None:
    """Add ``dlq``, ``status`` and ``inspect`` to clarion's subcommands."""
    dlq = sub.add_parser("dlq", help="dead-letter queues: list, show, requeue, purge")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")

    ls = _env_parser(dlq_sub.add_parser("list", help="dead-lettered deliveries, newest first"))
    _filter_options(ls)
    _option(
        ls,
        "--source",
        "CLARION_DLQ_SOURCE",
        "database (default: PostgreSQL, the system of record) or broker (the dead-letter queues)",
        metavar="SOURCE",
    )
    _option(ls, "--json", "CLARION_DLQ_JSON", "one JSON object per line", boolean=True)
    ls.set_defaults(func=cmd_dlq_list)

    diff = _env_parser(
        dlq_sub.add_parser(
            "diff", help="dead letters in the database and not in the broker, or the reverse"
        )
    )
    _option(diff, "--channel", "CLARION_DLQ_CHANNEL", "only this channel", metavar="CHANNEL")
    _option(diff, "--queue", "CLARION_DLQ_QUEUE", "only this queue", metavar="QUEUE")
    _option(diff, "--json", "CLARION_DLQ_JSON", "one JSON object per line", boolean=True)
    diff.set_defaults(func=cmd_dlq_diff)

    show = _env_parser(dlq_sub.add_parser("show", help="one dead letter, its row and history"))
    show.add_argument("id", metavar="ID", help="message id or delivery id")
    _option(show, "--json", "CLARION_DLQ_JSON", "one JSON object", boolean=True)
    show.set_defaults(func=cmd_dlq_show)

    for name, verb in (("requeue", "requeue"), ("purge", "purge")):
        p = _env_parser(
            dlq_sub.add_parser(
                name,
                help="send dead letters back to their queues"
                if name == "requeue"
                else "drop dead letters (deliveries stay failed, reason 'purged')",
            )
        )
        p.add_argument("ids", nargs="*", metavar="ID", help="message ids or delivery ids")
        _option(
            p,
            "--all",
            "CLARION_DLQ_ALL",
            f"{verb} every dead letter the filters match",
            boolean=True,
        )
        _filter_options(p)
        _option(p, "--dry-run", "CLARION_DLQ_DRY_RUN", f"show what would {verb}", boolean=True)
        _option(p, "--json", "CLARION_DLQ_JSON", "one JSON object per line", boolean=True)
        if name == "purge":
            _option(p, "--yes", "CLARION_DLQ_YES", "do not ask for confirmation", boolean=True)
        else:
            _option(
                p,
                "--rate",
                "CLARION_DLQ_RATE",
                "at most this many per second (200/s, 6000/m, 200); default: as fast as it goes",
                metavar="N/s",
            )
        p.set_defaults(func=cmd_dlq_requeue if name == "requeue" else cmd_dlq_purge)

    st = _env_parser(sub.add_parser("status", help="queues, notifications, leases, workers"))
    _option(st, "--json", "CLARION_STATUS_JSON", "one JSON object", boolean=True)
    _option(
        st,
        "--check",
        "CLARION_STATUS_CHECK",
        "exit 7 when unhealthy (a health probe)",
        boolean=True,
    )
    _option(
        st,
        "--max-due-age",
        "CLARION_STATUS_MAX_DUE_AGE",
        "unhealthy when the oldest due notification waited longer, seconds (default 60)",
        metavar="S",
    )
    _option(
        st,
        "--min-workers",
        "CLARION_STATUS_MIN_WORKERS",
        "unhealthy with fewer live workers (default 1)",
        metavar="N",
    )
    _option(
        st,
        "--max-dead",
        "CLARION_STATUS_MAX_DEAD",
        "unhealthy with more dead letters (default: not checked)",
        metavar="N",
    )
    _option(
        st,
        "--heartbeat-window",
        "CLARION_STATUS_HEARTBEAT_WINDOW",
        "Redis: a worker is live if it polled within this many seconds (default 60)",
        metavar="S",
    )
    st.set_defaults(func=cmd_status)

    ins = _env_parser(sub.add_parser("inspect", help="one notification: rows, history, content"))
    ins.add_argument("notification_id", metavar="NOTIFICATION_ID")
    _option(ins, "--json", "CLARION_INSPECT_JSON", "one JSON object", boolean=True)
    ins.set_defaults(func=cmd_inspect)


# --- plumbing --------------------------------------------------------------------------


def _sessions(settings: Settings) -> sessionmaker[Session]:
    import sqlalchemy as sa

    from clarion.core.db import make_engine, session_factory

    url = settings.effective_database_url
    kwargs: dict[str, Any] = {"poolclass": sa.NullPool}
    if not url.startswith("sqlite"):
        kwargs["connect_args"] = {"connect_timeout": 5}
    engine = make_engine(url, **kwargs)
    with engine.connect():  # an unreachable database fails here, before the broker is touched
        pass
    return session_factory(engine)


@contextmanager
def _broker(settings: Settings) -> Iterator[DeadLetters]:
    from clarion.operators.deadletters import open_dead_letters

    store = open_dead_letters(settings.broker_url)
    try:
        yield store
    finally:
        store.close()


def _console(*, stderr: bool = False) -> Console:
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=stderr, highlight=False, width=200, soft_wrap=False)
    return console


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")


def _prepare(args: argparse.Namespace) -> Settings:
    apply_env(args)
    return get_settings()


def _filters(args: argparse.Namespace) -> Any:
    from clarion.operators.dlq import Filters

    return Filters.parse(
        channel=args.channel,
        queue=args.queue,
        since=args.since,
        until=args.until,
        error=args.error,
        limit=args.limit,
    )


def _entries_table(entries: list[Entry], title: str) -> Any:
    return _rows_table([e.to_json() for e in entries], title)


def _rows_table(rows: list[dict[str, Any]], title: str, *, side: bool = False) -> Any:
    from rich.table import Table

    from clarion.operators.inspect import mask_text

    table = Table(title=title, title_justify="left")
    for col in (
        *(("only in",) if side else ()),
        "died at",
        "message id",
        "channel",
        "queue",
        "notification",
        "user",
        "attempts",
        "last error",
    ):
        table.add_column(col, overflow="fold")
    for j in rows:
        attempts = f"{j['attempts']}/{j['max_attempts']}" if j["attempts"] is not None else "-"
        table.add_row(
            *((str(j["side"]).removesuffix(" only"),) if side else ()),
            j["died_at"] or "-",
            j["message_id"],
            j["channel"],
            j["queue"],
            j["notification_id"] or "(no row)",
            j["user_id"] or "-",
            attempts,
            mask_text(j["last_error"]) or "-",
        )
    return table


# --- dlq -------------------------------------------------------------------------------


_SOURCES = ("database", "broker")


def cmd_dlq_list(args: argparse.Namespace) -> int:
    from clarion.operators.dlq import DeadLetterOps
    from clarion.operators.inspect import mask_text

    settings = _prepare(args)
    source = (args.source or "database").strip().lower()
    if source not in _SOURCES:
        raise ValidationError("--source", f"expected database or broker, got {args.source!r}")
    filters = _filters(args)
    sessions = _sessions(settings)
    with _broker(settings) as store:
        ops = DeadLetterOps(store, sessions)
        # Streamed: each line goes out as its rows are read, so a large backlog
        # starts flowing into jq at once and is never all in memory. The
        # database view never touches the broker (it works while it is down).
        found: Iterator[Any] = (
            ops.iter_rows(filters) if source == "database" else ops.iter_select(filters)
        )
        if args.json:
            for item in found:
                row = item.to_json()
                row["last_error"] = mask_text(row["last_error"])
                _emit(row)
            return ExitCode.OK
        rows = [item.to_json() for item in found]
        footer = _database_footer(ops, filters) if source == "database" else None
    console = _console()
    if source == "broker":
        title = f"{len(rows)} dead letters (broker view: the dead-letter queues, joined with rows)"
    else:
        title = f"{len(rows)} dead letters (database view: PostgreSQL, the system of record)"
    if rows:
        console.print(_rows_table(rows, title))
    else:
        console.print(f"no dead letters match ({source} view)")
    if footer:
        console.print(footer)
    return ExitCode.OK


def cmd_dlq_diff(args: argparse.Namespace) -> int:
    from clarion.operators.dlq import DeadLetterOps, Filters
    from clarion.operators.inspect import mask_text

    settings = _prepare(args)
    filters = Filters.parse(channel=args.channel, queue=args.queue)
    sessions = _sessions(settings)
    with _broker(settings) as store:
        found = DeadLetterOps(store, sessions).compare(filters)
    rows = [{**r.to_json(), "side": "database only"} for r in found.database_only]
    rows += [{**e.to_json(), "side": "broker only"} for e in found.broker_only]
    for row in rows:
        row["last_error"] = mask_text(row["last_error"])
    summary = {
        "both": found.both,
        "database_only": len(found.database_only),
        "broker_only": len(found.broker_only),
    }
    if args.json:
        for row in rows:
            _emit(row)
        _emit(summary)
        return ExitCode.OK
    console = _console()
    if rows:
        console.print(_rows_table(rows, f"{len(rows)} dead letters in one view only", side=True))
    console.print(
        f"in both {found.both}, database only {summary['database_only']},"
        f" broker only {summary['broker_only']}"
        + ("" if rows else ": the database and the broker agree")
    )
    return ExitCode.OK


def _database_footer(ops: DeadLetterOps, filters: Any) -> str:
    """Under the database view: whether the broker agrees, per queue, on how
    many dead letters there are (so a difference is never hidden)."""
    from clarion.core.errors import BrokerUnavailable
    from clarion.operators.dlq import compare_counts

    hint = "`--source broker` lists the broker's own entries"
    queues = filters.queues()
    try:
        held = ops.dead_letters.counts(queues)
    except BrokerUnavailable:
        return f"the broker is unreachable: its dead letters were not compared; {hint}"
    database = ops.database_counts()
    if filters.channel is not None or filters.queue:
        database = {q: n for q, n in database.items() if q in queues}
    differ = compare_counts(held, database)
    if not differ:
        total = sum(q.dead for q in held)
        return f"database and broker agree: {total} dead letters on these queues; {hint}"
    return (
        "the database and the broker disagree: "
        + "; ".join(d.describe() for d in differ)
        + f"; {hint}, `clarion dlq diff` lists each one"
    )


def cmd_dlq_show(args: argparse.Namespace) -> int:
    from clarion.operators.dlq import DeadLetterOps
    from clarion.operators.inspect import delivery_json, mask_text, notification_json

    settings = _prepare(args)
    sessions = _sessions(settings)
    with _broker(settings) as store:
        ops = DeadLetterOps(store, sessions)
        [entry] = ops.find([args.id])[:1]
    letter = entry.letter
    options = {k: v for k, v in letter.message.options.items() if k != "traceback"}
    traceback = letter.message.options.get("traceback")
    message = {
        "message_id": letter.message_id,
        "queue": letter.queue,
        "actor": letter.actor,
        "args": list(letter.args),
        "died_at": entry.to_json()["died_at"],
        "enqueued_at": letter.message.message_datetime.isoformat(timespec="seconds"),
        "options": options,
        "traceback_last_line": mask_text(traceback.strip().splitlines()[-1]) if traceback else None,
    }
    notification = delivery = None
    history: list[Any] = []
    if letter.delivery_id is not None:
        n, d, attempts = ops.history(letter.delivery_id)
        notification = notification_json(n) if n else None
        delivery = delivery_json(d, attempts) if d else None
        history = delivery.pop("history") if delivery else []
    out = {
        "message": message,
        "notification": notification,
        "delivery": delivery,
        "history": history,
    }
    if args.json:
        _emit(out)
        return ExitCode.OK
    _print_sections(out)
    return ExitCode.OK


def _print_sections(out: dict[str, Any]) -> None:
    from rich.table import Table

    console = _console()
    for section in ("message", "notification", "content", "delivery"):
        data = out.get(section)
        if data is None:
            if section in out:
                console.print(f"[bold]{section}[/]: (none)")
            continue
        table = Table(title=section, title_justify="left", show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        for key, value in data.items():
            shown = json.dumps(value, default=str) if isinstance(value, dict | list) else value
            table.add_row(key, "-" if shown is None else str(shown))
        console.print(table)
    if "history" in out:
        _print_history(console, out["history"], "attempt history")


def _print_history(console: Console, history: list[dict[str, Any]], title: str) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("#", "at", "provider", "outcome", "ms", "error"):
        table.add_column(col, overflow="fold")
    for a in history:
        table.add_row(
            str(a["attempt_number"]),
            a["at"] or "-",
            a["provider"],
            a["outcome"],
            str(a["duration_ms"]),
            a["error"] or "-",
        )
    console.print(table if history else f"{title}: (none)")


def _select(ops: DeadLetterOps, args: argparse.Namespace, verb: str) -> list[Entry]:
    filters = _filters(args)
    if args.ids and args.all:
        raise ValidationError("--all", "give IDs or --all, not both")
    if args.ids:
        return ops.find(args.ids, filters)
    if not args.all:
        raise ValidationError("ID", f"give the ids to {verb}, or --all (narrowed by the filters)")
    return ops.select(filters)


def _run_bulk(args: argparse.Namespace, verb: str, done_word: str, *, confirm: bool) -> int:
    from clarion.operators.dlq import DeadLetterOps, parse_rate

    settings = _prepare(args)
    rate = parse_rate(args.rate) if getattr(args, "rate", None) else None
    sessions = _sessions(settings)
    with _broker(settings) as store:
        ops = DeadLetterOps(store, sessions, lease_seconds=settings.queued_lease_seconds)
        entries = _select(ops, args, verb)
        if confirm and entries and not args.dry_run and not args.yes:
            if not sys.stdin.isatty():
                raise ValidationError(
                    "--yes", f"refusing to {verb} {len(entries)} without a terminal to confirm on"
                )
            _console(stderr=True).print(_entries_table(entries, f"{len(entries)} to {verb}"))
            answer = input(f"{verb} these {len(entries)} dead letters? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print(f"{verb} cancelled; nothing changed")
                return ExitCode.OK
        if verb == "requeue":
            run: Any = functools.partial(ops.requeue, rate=rate)
        else:
            run = ops.purge
        counts, results = _with_progress(args, entries, verb, run)
    if args.json:
        for r in results:
            _emit(r.to_json())
        _emit(
            {
                "dry_run": bool(args.dry_run),
                done_word: counts.done,
                "skipped": counts.skipped,
                "failed": counts.failed,
            }
        )
    else:
        console = _console()
        for r in results:
            if r.reason or r.outcome.value.startswith("would"):
                console.print(
                    f"{r.outcome.value:>13}  {r.entry.letter.message_id}  {r.entry.letter.queue}"
                    + (f"  ({r.reason})" if r.reason else "")
                )
        word = f"would {verb}" if args.dry_run else done_word
        console.print(f"{word} {counts.done}, skipped {counts.skipped}, failed {counts.failed}")
    return ExitCode.PARTIAL if counts.failed else ExitCode.OK


def _with_progress(args: argparse.Namespace, entries: list[Entry], verb: str, run: Any) -> Any:
    show = not args.json and len(entries) > 1 and not args.dry_run
    if not show:
        return run(entries, dry_run=bool(args.dry_run))
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn(f"{verb}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=_console(stderr=True),
        transient=False,
    ) as progress:
        task = progress.add_task(verb, total=len(entries))

        def tick(_result: ItemResult) -> None:
            progress.advance(task)

        return run(entries, dry_run=False, progress=tick)


def cmd_dlq_requeue(args: argparse.Namespace) -> int:
    return _run_bulk(args, "requeue", "requeued", confirm=False)


def cmd_dlq_purge(args: argparse.Namespace) -> int:
    return _run_bulk(args, "purge", "purged", confirm=True)


# --- status ----------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    from clarion.operators.status import Thresholds, gather

    settings = _prepare(args)
    min_workers = _number(args.min_workers, "--min-workers", 1)
    max_dead = None if args.max_dead is None else int(_number(args.max_dead, "--max-dead", 0))
    thresholds = Thresholds(
        max_due_age=_number(args.max_due_age, "--max-due-age", 60.0),
        min_workers=int(min_workers),
        max_dead=max_dead,
        heartbeat_window=_number(args.heartbeat_window, "--heartbeat-window", 60.0),
    )
    sessions = _sessions(settings)
    broker = "rabbitmq" if settings.broker_url.startswith("amqp") else "redis"
    from channels.registry import failover_chains
    from workers.breaker import Breaker

    breaker = Breaker.from_url(
        settings.redis_url,
        threshold=settings.breaker_threshold,
        window=settings.breaker_window,
        cooldown=settings.breaker_cooldown,
    )

    def breaker_states(names: list[str]) -> dict[str, str]:
        # Only where there is failover (a chain) is there a breaker.
        chain = [name for names in failover_chains(settings).values() for name in names]
        return {p: breaker.state(p).value for p in sorted(set(names) | set(chain)) if p in chain}

    try:
        with _broker(settings) as store:
            report = gather(
                sessions, store, thresholds, broker=broker, breaker_states=breaker_states
            )
    finally:
        breaker.close()
    if args.json:
        _emit(report.to_json())
    else:
        _print_status(report)
    if args.check and not report.healthy:
        if not args.json:
            print("unhealthy: " + "; ".join(report.problems), file=sys.stderr)
        return ExitCode.UNHEALTHY
    return ExitCode.OK


def _print_status(report: Any) -> None:
    from rich.table import Table

    console = _console()
    queues = Table(title=f"queues ({report.broker})", title_justify="left")
    for col in (
        "queue",
        "ready",
        "delayed",
        "dead",
        "dead (database)",
        "unacked" if report.broker == "redis" else "consumers",
    ):
        queues.add_column(col, justify="right" if col != "queue" else "left")
    for q in report.queues:
        extra = q.unacked if report.broker == "redis" else q.consumers
        in_db = report.dead_in_database.get(q.queue, 0)
        queues.add_row(q.queue, str(q.ready), str(q.delayed), str(q.dead), str(in_db), str(extra))
    console.print(queues)
    if report.disagree:
        console.print(
            "dead letters: the database and the broker disagree: "
            + "; ".join(d.describe() for d in report.disagree)
            + " (`clarion dlq diff` lists each one)"
        )
    else:
        dead = sum(q.dead for q in report.queues)
        console.print(f"dead letters: the database and the broker agree ({dead})")
    notes = Table(title="notifications by status", title_justify="left")
    notes.add_column("status")
    notes.add_column("last hour", justify="right")
    notes.add_column("last day", justify="right")
    for status, count in report.last_day.items():
        notes.add_row(status, str(report.last_hour.get(status, 0)), str(count))
    console.print(notes)
    age = "none waiting" if report.oldest_due_age is None else f"{report.oldest_due_age:.1f} s"
    console.print(f"oldest due, unclaimed notification: {age}")
    console.print(f"claims past their lease: {report.expired_leases}")
    console.print(f"live workers: {report.live_workers}")
    release = "" if report.next_release is None else f", next at {report.next_release:%H:%M:%S}Z"
    console.print(f"held by the delivery policy: {report.held}{release}")
    if any(report.policy_last_hour.values()):
        decided = ", ".join(f"{v} {k}" for k, v in report.policy_last_hour.items() if v)
        console.print(f"policy decisions, last hour: {decided}")
    if report.providers:
        providers = Table(title="providers (attempts, last hour)", title_justify="left")
        for col in ("provider", "sent", "delivered", "retryable", "throttled", "failed", "breaker"):
            providers.add_column(col, justify="left" if col in ("provider", "breaker") else "right")
        for name, entry in sorted(report.providers.items()):
            got = entry["attempts"]
            failed = got.get("permanent", 0) + got.get("bad_address", 0)
            providers.add_row(
                name,
                *(str(got.get(k, 0)) for k in ("sent", "delivered", "retryable", "throttled")),
                str(failed),
                entry["breaker"],
            )
        console.print(providers)
    console.print("healthy" if report.healthy else "unhealthy: " + "; ".join(report.problems))


# --- inspect ---------------------------------------------------------------------------


def cmd_inspect(args: argparse.Namespace) -> int:
    from clarion.operators.inspect import inspect_notification, parse_id

    settings = _prepare(args)
    notification_id = parse_id(args.notification_id)
    data = inspect_notification(_sessions(settings), notification_id)
    if args.json:
        _emit(data)
        return ExitCode.OK
    console = _console()
    _print_sections({"notification": data["notification"], "content": data["content"]})
    from rich.table import Table

    addresses = Table(title="addresses (masked)", title_justify="left")
    for col in ("channel", "address", "active", "disabled reason"):
        addresses.add_column(col)
    for a in data["addresses"]:
        addresses.add_row(a["channel"], a["address"], str(a["active"]), a["disabled_reason"] or "-")
    console.print(addresses)
    for d in data["deliveries"]:
        history = d.pop("history")
        _print_sections({"delivery": d})
        _print_history(console, history, f"{d['channel']} attempts")
    return ExitCode.OK
