"""The exit codes of ``clarion`` and its subcommands, named once.

The CLI, the operators' commands and the demo all end a process; scripts and
health checks read the number, so each meaning has exactly one number. The
README's table lists them.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """What a ``clarion`` process's exit status means."""

    OK = 0
    #: a bug (the traceback is printed), ``db check`` found a difference, or the
    #: demo's notifications did not end as expected
    UNEXPECTED = 1
    #: bad arguments
    USAGE = 2
    #: a setting has a bad value (the message names the variable)
    SETTINGS = 3
    #: the database is unreachable
    DATABASE = 4
    #: the broker is unreachable
    BROKER = 5
    #: not found
    NOT_FOUND = 6
    #: ``clarion status --check`` found a problem
    UNHEALTHY = 7
    #: ``clarion dlq requeue|purge`` finished, but some entries failed
    PARTIAL = 8
    #: interrupted (Ctrl-C): 128 + SIGINT, as shells report it
    INTERRUPTED = 130
