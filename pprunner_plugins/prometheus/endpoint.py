"""The HTTP endpoint: prometheus_client's WSGI app, served from a thread of ours.

prometheus_client's ``start_http_server`` polls for its shutdown every half
second; a supervisor's stop would wait for that. This server polls every
:data:`POLL_INTERVAL` (a ``select`` ten times a second: nothing measurable)
and logs no request lines.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from pprunner.config import listen_address
from pprunner.errors import ConfigError

logger = logging.getLogger("pprunner.metrics")

#: seconds between the server thread's looks at whether it should stop
POLL_INTERVAL = 0.1


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """A scrape every few seconds is not worth a log line."""


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in progress never holds up the process's exit


class Endpoint:
    """Serves ``app`` on the first free port of the ``metrics_port`` setting's."""

    def __init__(self, app: Any, setting: str) -> None:
        host, first, last = listen_address(setting)
        for port in range(first, last + 1):
            try:
                self._server = _listen(host, port, app)
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise ConfigError(f"metrics_port {setting}: cannot listen on "
                                      f"{host}:{port}: {exc.strerror or exc}") from None
        else:
            ports = f"port {first} is" if first == last else f"ports {first} to {last} are"
            raise ConfigError(f"metrics_port {setting}: {ports} already in use (another "
                              "supervisor or exporter on this host?); choose another, or a "
                              "range such as 9100-9103 to take the first free one")
        self.host, self.port = host, port
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": POLL_INTERVAL},
                                        name="pprunner-metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _listen(host: str, port: int, app: Any) -> WSGIServer:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    server_class = type("Server", (_Server,), {"address_family": family})
    return make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
