"""What a --burst run shows while it drains the queue."""

from __future__ import annotations

import io
import logging
import re
import sys

import pytest

from pprunner import App, InlineSupervisor, log
from pprunner.progress import BurstProgress


def test_the_bar_counts_done_out_of_total_with_a_rate(capsys: pytest.CaptureFixture[str]) -> None:
    app = App(backend="memory://")
    task = app.task(name="noop")(lambda: None)
    for _ in range(3):
        task.enqueue()
    progress = BurstProgress(app.backend, enabled=True)
    assert progress.update() == 3
    InlineSupervisor(app, burst=True).run()
    assert progress.update() == 0
    progress.close()
    drawn = capsys.readouterr().err
    assert "0/3" in drawn and "3/3" in drawn and "task/s" in drawn


def test_without_a_terminal_progress_is_logged(caplog: pytest.LogCaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    app = App(backend="memory://")
    app.task(name="noop")(lambda: None).enqueue()
    monkeypatch.setattr("pprunner.progress.LOG_EVERY", 0.0)
    progress = BurstProgress(app.backend, enabled=False)
    with caplog.at_level(logging.INFO, logger="pprunner.progress"):
        assert progress.update() == 1
    assert "burst: 0/1 done" in caplog.text


class Terminal(io.StringIO):
    """What was written to a terminal, which can say how a terminal shows it."""

    def isatty(self) -> bool:
        return True

    def shown(self) -> list[str]:
        """The lines as a terminal shows them: ``\\r`` returns to the start of the line,
        ``ESC [K`` erases from the cursor to the end of the line."""
        lines, line, column = [], "", 0
        for token in re.split(r"(\r|\n|\x1b\[K)", self.getvalue()):
            if token == "\n":
                lines.append(line)
                line, column = "", 0
            elif token == "\r":
                column = 0
            elif token == "\x1b[K":
                line = line[:column]
            else:
                line = line[:column] + token + line[column + len(token):]
                column += len(token)
        return [*lines, line]


def test_log_lines_and_the_bar_never_share_a_line(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)  # where the bar draws itself
    monkeypatch.delenv("TERM", raising=False)
    logger = logging.getLogger("tests.progress")
    handler = log.stream_handler(terminal)
    logger.addHandler(handler)
    app = App(backend="memory://")
    app.task(name="noop")(lambda: None).enqueue()
    progress = BurstProgress(app.backend, enabled=True)
    try:
        progress.update()
        logger.warning("a line from a worker")
        progress.update()
    finally:
        progress.close()
        logger.removeHandler(handler)
    shown = terminal.shown()
    (logged,) = (line for line in shown if "a line from a worker" in line)
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING ", logged), shown
    assert "pprunner: " in shown[shown.index(logged) + 1]  # the bar is back below it
