"""What a --burst run shows while it drains the queue."""

from __future__ import annotations

import logging

import pytest

from pprunner import App, Supervisor
from pprunner.progress import BurstProgress


def test_the_bar_counts_done_out_of_total_with_a_rate(capsys: pytest.CaptureFixture[str]) -> None:
    app = App(backend="memory://")
    task = app.task(name="noop")(lambda: None)
    for _ in range(3):
        task.enqueue()
    progress = BurstProgress(app.backend, enabled=True)
    assert progress.update() == 3
    Supervisor(app, processes=0, burst=True).run()
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
