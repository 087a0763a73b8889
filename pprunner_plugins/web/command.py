"""``pprunner web``: its options, its checks, and uvicorn serving the dashboard.

Everything that can be wrong is found before the first request, each as one
line and an exit code: a missing library of the web extra, a non-loopback
address without a token, a store that is missing or lacks ``Admin``, a port
that cannot be bound.
"""

from __future__ import annotations

import argparse
import signal
import socket

from pprunner.cli import add_app_options, admin_backend, app_from_args, number_argument
from pprunner.errors import ConfigError
from pprunner.exitcodes import ExitCode

from .._optional import OptionalLibrary
from . import access

#: the web extra's libraries, each named with the command that installs it when missing
LIBRARIES = tuple(OptionalLibrary(name, "web") for name in ("starlette", "uvicorn", "jinja2"))
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8420
#: seconds between looks at the store (shared by every open page) and page refreshes
DEFAULT_INTERVAL = 2.0
#: the latest failures listed on the pages
DEFAULT_FAILURES = 20


#: the port to listen on: an argument parser
_port_number = number_argument(int, "port", 1)


def _port(text: str) -> int:
    port = int(_port_number(text))
    if port > 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {text!r}")
    return port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_app_options(parser)
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"the address to listen on (default {DEFAULT_HOST}); any address "
                             f"beyond loopback needs --token")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT,
                        help=f"the port to listen on (default {DEFAULT_PORT})")
    parser.add_argument("--token", help=f"ask every request for this secret (default: "
                                        f"${access.TOKEN_VARIABLE}; at least 16 characters)")
    parser.add_argument("--read-only", action="store_true",
                        help="show no buttons and refuse retry, purge and scale")
    parser.add_argument("--interval", type=number_argument(float, "seconds", 0, above=True),
                        default=DEFAULT_INTERVAL, metavar="SECONDS",
                        help=f"seconds between looks at the store and page refreshes "
                             f"(default {DEFAULT_INTERVAL:g})")
    parser.add_argument("--failures", type=number_argument(int, "failures", 1),
                        default=DEFAULT_FAILURES, metavar="N",
                        help=f"how many of the latest failures to list (default "
                             f"{DEFAULT_FAILURES})")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    for library in LIBRARIES:
        library.module  # noqa: B018 - the install command when one is missing
    import uvicorn

    from .app import create_app, title_for
    from .watch import Watch

    token = access.required_token(args.host, args.token)
    app = app_from_args(args, parser)
    backend = admin_backend(app, args)
    watch = Watch(backend, app.config.dead_after, args.interval, args.failures)
    watch.snapshot()  # a missing or unreachable store is one line before anything listens
    listener = _listen(args.host, args.port)
    title = title_for(app.name, backend.url)
    asgi = create_app(watch, title=title, token=token, read_only=args.read_only)
    host, port = listener.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"{title}: serving on http://{shown}:{port}/"
          + (" (token required)" if token else "")
          + (" (read-only)" if args.read_only else ""), flush=True)
    config = uvicorn.Config(asgi, log_level="warning", access_log=False, lifespan="off")
    # uvicorn stops gracefully on SIGINT and SIGTERM, then raises the signal again for the
    # handler it found: these two end the command with 0, as ``q`` ends ``top``
    previous = signal.signal(signal.SIGTERM, _stopped)
    try:
        uvicorn.Server(config).run(sockets=[listener])
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    return ExitCode.OK


class _Stopped(Exception):
    """SIGTERM, after uvicorn's graceful stop."""


def _stopped(signum: int, frame: object) -> None:
    raise _Stopped


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a taken port or an unknown address
    is a ConfigError that names it, not a log line from inside uvicorn."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM)[0]
        listener = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"pprunner web --host {host}: {exc.strerror or exc}") from None
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(128)
    except OSError as exc:
        listener.close()
        raise ConfigError(f"pprunner web cannot listen on {host}:{port}: "
                          f"{exc.strerror or exc}") from None
    return listener
