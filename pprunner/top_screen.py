"""The screen of ``pprunner top``, drawn with Textual (the ``top`` extra).

Textual owns the terminal: it switches to the alternate screen, reads keys,
follows resizes and gives the terminal back as it found it on every way
out. The store is read in a thread of its own every interval, so a slow
store (a Redis outage is waited out up to ``outage_timeout``) never keeps
the screen from answering ``q``; each reading reaches the screen as a
message, and a reading that failed shows its error until one succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Footer, Static

from .errors import PprunnerError
from .snapshot import Snapshot
from .top import sections, summary

#: the sections' ids, in the order :func:`pprunner.top.sections` gives them
SECTION_IDS = ("supervisors", "workers", "failures")


class Refreshed(Message):
    """A reading of the store (or why there is none this time)."""

    def __init__(self, snapshot: Snapshot | None, error: str | None) -> None:
        super().__init__()
        self.snapshot = snapshot
        self.error = error


class TopApp(App[None]):
    """Supervisors, workers, the queue and the latest failures, refreshed."""

    TITLE = "pprunner top"
    ENABLE_COMMAND_PALETTE = False  # a view to watch: q is the one key it needs
    CSS = """
    #heading { height: auto; padding: 0 1; background: $boost; }
    .title { height: auto; padding: 1 1 0 1; text-style: bold; }
    DataTable { height: auto; margin: 0 1; }
    """
    # Ctrl-C quits too (Textual's own binding only says how to quit), and before any
    # widget sees it; ``q`` and Ctrl-C both end with exit status 0
    BINDINGS: ClassVar = [Binding("q", "quit", "Quit"),
                Binding("ctrl+c", "quit", "Quit", show=False, priority=True)]

    def __init__(self, look: Callable[[], Snapshot], title: str, interval: float,
                 first: Snapshot) -> None:
        super().__init__()
        self._look = look
        self._heading_text = title
        self._interval = interval
        self._first = first
        self._stop = threading.Event()

    def compose(self) -> ComposeResult:
        # no markup anywhere: task names and error messages are shown as they are
        yield Static(id="heading", markup=False)
        with VerticalScroll():
            for section_id in SECTION_IDS:
                yield Static(classes="title", id=f"{section_id}-title", markup=False)
                yield DataTable(id=section_id, show_cursor=False, zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        for section, section_id in zip(sections(self._first), SECTION_IDS, strict=True):
            self.query_one(f"#{section_id}", DataTable).add_columns(*section.header)
        self._show(self._first, None)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            loop.add_signal_handler(signum, self.exit)
        threading.Thread(target=self._poll, name="pprunner-top-poller", daemon=True).start()

    def on_unmount(self) -> None:
        self._stop.set()

    def _poll(self) -> None:
        """Read the store every interval until the screen closes."""
        next_at = time.monotonic()
        while True:
            next_at += self._interval
            if self._stop.wait(max(0.0, next_at - time.monotonic())):
                return
            try:
                message = Refreshed(self._look(), None)
            except PprunnerError as exc:
                message = Refreshed(None, str(exc))
            except Exception as exc:  # anything else too: a thread's traceback would be lost
                message = Refreshed(None, f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(RuntimeError):  # the screen closed meanwhile
                self.post_message(message)

    def on_refreshed(self, message: Refreshed) -> None:
        self._show(message.snapshot, message.error)

    def _show(self, snapshot: Snapshot | None, error: str | None) -> None:
        heading = self.query_one("#heading", Static)
        if snapshot is None:
            heading.update(f"{self._heading_text}\ncannot read the store: {error}\n"
                           "(trying again every interval)")
            return
        stamp = time.strftime("%H:%M:%S", time.localtime(snapshot.taken_at))
        heading.update("\n".join([f"{self._heading_text}  {stamp}  (every "
                                  f"{self._interval:g} s; q to quit)", *summary(snapshot)]))
        for section, section_id in zip(sections(snapshot), SECTION_IDS, strict=True):
            self.query_one(f"#{section_id}-title", Static).update(section.title)
            table = self.query_one(f"#{section_id}", DataTable)
            table.clear()
            table.add_rows([tuple(Text(cell) for cell in row) for row in section.rows])


def show(look: Callable[[], Snapshot], title: str, interval: float, first: Snapshot) -> int:
    """Run the screen until ``q``, Ctrl-C or SIGTERM; the exit status (0, or 1 when
    the screen itself failed: Textual has then printed why)."""
    app = TopApp(look, title, interval, first)
    app.run()
    return app.return_code or 0
