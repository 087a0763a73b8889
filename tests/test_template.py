"""Workers forked from a template process (``start_method = "template"``, the default)."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import psutil
import pytest

from pprunner import App, Supervisor, template
from tests import apps
from tests.conftest import on_fresh_store, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="templates fork workers on Linux (pidfds)")


def template_of(supervisor: Supervisor) -> psutil.Process:
    """The template that forked ``supervisor``'s workers (a child of this process)."""
    workers = {c.info.pid for c in supervisor.workers.values()}

    def forked_them(process: psutil.Process) -> bool:
        try:  # an earlier test's template may be exiting (a zombie until it is waited for)
            return ("pprunner template" in " ".join(process.cmdline())
                    and bool(workers & {w.pid for w in process.children()}))
        except psutil.Error:
            return False

    (found,) = [p for p in psutil.Process().children() if forked_them(p)]
    return found


def booted_pids(supervisor: Supervisor) -> set[int]:
    return {c.info.pid for c in supervisor.workers.values() if c.booted}


def test_workers_are_forked_from_the_template_and_a_dead_one_is_replaced_from_it(
        app: App, supervise, caplog) -> None:
    supervisor = supervise(processes=2)
    assert supervisor.wait_until_ready(60)
    forked_from = template_of(supervisor)
    assert {w.pid for w in forked_from.children()} == booted_pids(supervisor)
    victim = apps.whoami.enqueue().result(timeout=30)["pid"]
    with caplog.at_level(logging.WARNING, logger="pprunner.supervisor"):
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(booted_pids(supervisor) - {victim}) == 2,
                   what="the dead worker's replacement")
    replacement = (booted_pids(supervisor) - {victim}).pop()
    assert psutil.Process(replacement).ppid() == forked_from.pid
    # the template reaped it and said how it ended: the supervisor's usual diagnosis
    assert f"pid {victim}) was killed by SIGKILL" in caplog.text
    assert apps.add.enqueue(2, 3).result(timeout=30) == 5


def test_a_worker_that_exits_by_itself_is_reported_with_its_exit_code(
        app: App, supervise, caplog) -> None:
    supervisor = supervise(processes=1)
    assert supervisor.wait_until_ready(60)
    with caplog.at_level(logging.WARNING, logger="pprunner.supervisor"):
        apps.exit_hard.enqueue(3)
        wait_until(lambda: "exited with code 3" in caplog.text, what="the exit's report")


def test_a_reload_forks_new_workers_from_a_new_template_and_the_old_one_exits(
        app: App, supervise) -> None:
    supervisor = supervise(processes=2)
    assert supervisor.wait_until_ready(60)
    old_template, old_workers = template_of(supervisor), booted_pids(supervisor)
    supervisor.reload()
    wait_until(lambda: len(booted_pids(supervisor)) == 2
               and not booted_pids(supervisor) & old_workers, what="the reload")
    new_template = template_of(supervisor)
    assert new_template.pid != old_template.pid
    old_template.wait(timeout=10)  # gone once its last worker was reaped
    assert apps.add.enqueue(1, 1).result(timeout=30) == 2


def test_a_stopped_supervisor_leaves_no_template_behind(app: App) -> None:
    supervisor = Supervisor(app, processes=1).start()
    assert supervisor.wait_until_ready(60)
    forked_from = template_of(supervisor)
    supervisor.stop(timeout=30)
    forked_from.wait(timeout=10)
    assert not forked_from.is_running()


#: an app module whose import does ``{setup}`` first; its task returns the worker's pid
UNSAFE_APP = '''
{setup}
from pprunner import App

app = App("unsafe")

@app.task
def pid() -> int:
    import os
    return os.getpid()
'''
THREAD_AT_IMPORT = ('import threading\n'
                    'threading.Thread(target=threading.Event().wait, name="started-at-import",'
                    ' daemon=True).start()')
#: a connection made at import time, as a module-level database client might
SOCKET_AT_IMPORT = 'import socket\nconnection = socket.create_connection(("127.0.0.1", {port}))'


@pytest.mark.parametrize(("setup", "warning"), [
    (THREAD_AT_IMPORT, "importing the app started thread(s) started-at-import"),
    (SOCKET_AT_IMPORT, "importing the app opened 1 socket(s)")], ids=["thread", "socket"])
def test_an_app_whose_import_is_unsafe_to_fork_gets_fresh_workers_with_a_warning(
        setup: str, warning: str, tmp_path: Path, db_url: str, caplog) -> None:
    module = f"unsafe_app_{tmp_path.name}"
    with socket.create_server(("127.0.0.1", 0)) as listener:
        (tmp_path / f"{module}.py").write_text(
            UNSAFE_APP.format(setup=setup.format(port=listener.getsockname()[1])))
        sys.path.insert(0, str(tmp_path))  # as a script's folder is: workers see it
        try:
            unsafe = importlib.import_module(module)
            with on_fresh_store(unsafe.app, db_url), \
                    caplog.at_level(logging.WARNING, logger="pprunner.supervisor"):
                supervisor = Supervisor(unsafe.app, processes=1).start()
                try:
                    worker = unsafe.pid.enqueue().result(timeout=60)
                    assert psutil.Process(worker).ppid() == os.getpid()  # started fresh
                finally:
                    supervisor.stop(timeout=30)
            assert warning in caplog.text
            assert "starts its workers fresh" in caplog.text
        finally:
            sys.path.remove(str(tmp_path))
            with contextlib.suppress(KeyError, AttributeError):
                sys.modules.pop(module).connection.close()


def test_a_template_that_died_is_replaced_for_the_next_worker(app: App, supervise) -> None:
    supervisor = supervise(processes=1)
    assert supervisor.wait_until_ready(60)
    first = template_of(supervisor)
    first.kill()
    first.wait(timeout=10)
    victim = apps.whoami.enqueue().result(timeout=30)["pid"]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: booted_pids(supervisor) - {victim}, what="a replacement")
    assert template_of(supervisor).pid != first.pid
    assert apps.add.enqueue(4, 4).result(timeout=30) == 8


def test_a_spec_that_may_name_main_functions_is_not_forked(app: App) -> None:
    """Calls that may name the parent's ``__main__`` need multiprocessing's preparation."""
    from pprunner.spawn import WorkerSpec

    spec = WorkerSpec(runner_id="r", slot=1, supervisor_id="s", app_path=None, settings={},
                      stop_event=None, lifeline=None, lifeline_writer_fd=-1, channel=None,
                      calls_from_main=True)
    assert template.fork_for(spec) is None


@pytest.mark.parametrize("start_method", ["template", "spawn"])
def test_a_hosts_preparation_runs_once_in_the_template_else_in_each_worker(
        start_method: str, tmp_path: Path) -> None:
    from pprunner.dispatch import Dispatcher
    from pprunner.jobs import Call, Finished
    from tests import executor_calls, host_adapter

    dispatcher = Dispatcher(deliver="thread", calls_from_main=False)
    config = host_adapter.config_module.resolve(
        [("test", {"log_level": "WARNING", "start_method": start_method})])
    prepare = Call(executor_calls.note_preparing_pid, (str(tmp_path),))
    supervisor = Supervisor(dispatcher=dispatcher, processes=2, config=config,
                            prepare=prepare).start()
    try:
        assert supervisor.wait_until_ready(timeout=60)
        workers = {c.info.pid for c in supervisor.workers.values()}
        events: list[object] = []
        dispatcher.submit(Call(os.getpid), events.append)
        wait_until(lambda: any(isinstance(e, Finished) for e in events), what="a call's end")
        prepared_in = {int(p.name) for p in tmp_path.iterdir()}
        if start_method == "template":  # once, in the process the workers were forked from
            (template_pid,) = prepared_in
            assert {psutil.Process(w).ppid() for w in workers} == {template_pid}
        else:
            assert prepared_in == workers
    finally:
        supervisor.stop(timeout=30)
        dispatcher.shutdown()
