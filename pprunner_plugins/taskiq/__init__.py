"""taskiq's sync tasks on pprunner's supervised workers: one option of ``taskiq worker``.

Install ``pprunner[taskiq]`` and add the receiver to the command you run today::

    taskiq worker myapp.tasks:broker --receiver pprunner_plugins.taskiq:Receiver

Each ``taskiq worker`` process keeps its event loop, its broker, its
middleware, its acks and its result backend; async tasks run on that loop as
before. Sync tasks, which taskiq runs in a thread pool (or, with
``--use-process-pool``, a ``ProcessPoolExecutor``), run instead on a
``pprunner.Executor``: persistent, supervised worker processes where a task
past its ``timeout`` label is stopped, a worker that dies fails (or, with late
acks, requeues) only the task it ran, and workers are recycled by task count
and memory without losing their slot. :mod:`.receiver` says how.
"""

from __future__ import annotations

from .receiver import Receiver

__all__ = ["Receiver"]
