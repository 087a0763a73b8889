"""A PostgreSQL for the tests: ``$PPRUNNER_POSTGRES_URL``, else the machine's own on
127.0.0.1:5432 (database ``test``). Each test gets a schema of its own, dropped after.
Without a server or psycopg the tests are skipped with the reason, which
``PPRUNNER_REQUIRE_POSTGRES=1`` (set by CI) turns into a failure."""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

SERVER = os.environ.get("PPRUNNER_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def skip_or_fail(reason: str) -> None:
    if os.environ.get("PPRUNNER_REQUIRE_POSTGRES", "") not in ("", "0"):
        pytest.fail(f"PPRUNNER_REQUIRE_POSTGRES is set but {reason}")
    pytest.skip(reason)


def admin_connection() -> Any:
    """A psycopg connection to the test server (autocommit), or a skip saying why not."""
    try:
        import psycopg
    except ImportError:
        skip_or_fail("psycopg is not installed (pip install 'pprunner[postgres]')")
    try:
        return psycopg.connect(SERVER, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        skip_or_fail(f"no PostgreSQL at {SERVER}: {str(exc).strip()}")


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A backend URL with a schema of this test's own; the schema is dropped after."""
    schema = f"pprunner_test_{os.getpid()}_{abs(hash(request.node.nodeid)) % 10**8}"
    admin = admin_connection()
    try:
        yield f"{SERVER}?schema={schema}"
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        admin.close()


class Forwarder:
    """Passes TCP connections made to ``addresses`` (one port on each) on to the test
    server, for clients in network namespaces: the server listens on loopback only.
    A client that dies (SIGKILL) closes its side; the server's side is closed with it."""

    def __init__(self, addresses: Sequence[str]) -> None:
        target = urllib.parse.urlsplit(SERVER)
        self._target = (target.hostname or "127.0.0.1", target.port or 5432)
        first = socket.create_server((addresses[0], 0))
        self.port: int = first.getsockname()[1]
        self._listeners = [first, *(socket.create_server((a, self.port)) for a in addresses[1:])]
        self._open: list[socket.socket] = []
        self._stopping = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, name="forwarder", daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        with selectors.DefaultSelector() as selector:
            for listener in self._listeners:
                selector.register(listener, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select(timeout=0.1):
                    client, _ = key.fileobj.accept()  # type: ignore[union-attr]
                    server = socket.create_connection(self._target)
                    self._open += [client, server]
                    for source, sink in ((client, server), (server, client)):
                        threading.Thread(target=self._pump, args=(source, sink),
                                         daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._stopping.set()
        self._acceptor.join(timeout=10)
        for sock in [*self._listeners, *self._open]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
