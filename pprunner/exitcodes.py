"""The documented exit codes of ``pprunner`` commands."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """What a ``pprunner`` process's exit status means.

    Scripts and process managers may rely on these numbers; they never change
    meaning, new ones are only added.
    """

    #: The command did what was asked (``run``: stopped gracefully, or a
    #: ``--burst`` run drained the queue).
    OK = 0
    #: An unexpected internal error; the traceback is printed.
    INTERNAL_ERROR = 1
    #: Wrong command-line usage (unknown flag, missing argument).
    USAGE_ERROR = 2
    #: A setting had a bad value; the message names it and its source.
    CONFIG_ERROR = 3
    #: The app (``--app module:attribute``) could not be imported, in the
    #: supervisor or in a worker at boot; respawning would only repeat it.
    APP_LOAD_ERROR = 4
    #: The backend could not be opened or reached, or no plugin provides it.
    BACKEND_ERROR = 5
    #: ``pprunner enqueue --wait`` / ``result``: the invocation ended FAILED.
    TASK_FAILED = 6
    #: Workers kept dying before they booted for ``crash_loop_period``
    #: seconds; the last cause is logged.
    CRASH_LOOP = 7
    #: ``pprunner health``: the supervisor is not alive (or not ready, with --ready).
    UNHEALTHY = 8
    #: ``pprunner enqueue --wait``: the invocation had not ended when the wait
    #: ran out (it stays queued or running); the number ``timeout(1)`` uses.
    TIMEOUT = 124
    #: Stopped at once by a second SIGINT; invocations that were running
    #: were handed back to the queue.
    INTERRUPTED = 130
    #: Whoever read the output went away (``pprunner plugins | head -1``): the
    #: command stopped quietly, with the status a shell reports for a Unix
    #: tool killed by SIGPIPE (128 + 13).
    BROKEN_PIPE = 141
