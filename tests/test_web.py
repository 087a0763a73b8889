"""``pprunner web``: routes, access and read-only mode through Starlette's TestClient,
the command's errors as a user meets them, and the whole dashboard in a real browser.

The browser test starts a real supervisor whose workers are busy and the real
``pprunner web`` command (the venv's script, from the project folder, no
PYTHONPATH), bound beyond loopback with a token, and drives Debian's headless
Chromium through its chromedriver with Selenium. Without the web extra's
libraries, Selenium or Chromium the tests are skipped, unless
``PPRUNNER_REQUIRE_BROWSER=1`` (set by CI) makes that a failure.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pprunner import App, ExitCode, Status
from pprunner.errors import ConfigError
from pprunner.invocation import ErrorInfo, RunnerInfo, RunnerKind
from pprunner.plugins import install_extra
from pprunner.testing import make_invocation
from pprunner_plugins.memory import MemoryBackend
from tests import apps
from tests.conftest import REPO, cli_env, live_workers, reap, run_cli, wait_until
from tests.redis_server import free_port


def skip_or_fail(reason: str) -> None:
    if os.environ.get("PPRUNNER_REQUIRE_BROWSER", "") not in ("", "0"):
        pytest.fail(f"PPRUNNER_REQUIRE_BROWSER is set but {reason}")
    pytest.skip(reason)


try:
    from starlette.testclient import TestClient

    from pprunner_plugins.web import access
    from pprunner_plugins.web.app import create_app
    from pprunner_plugins.web.watch import Watch
except ImportError as exc:
    skip_or_fail(f"the web extra is not installed ({exc}): {install_extra('web')}")

TOKEN = "a-test-token-that-is-long-enough"
#: where the TestClient sends its requests, and so the Origin the dashboard's own pages have
ORIGIN = "http://localhost:8420"


def client_for(backend: Any, *, token: str | None = None, read_only: bool = False,
               dead_after: float = 30.0) -> TestClient:
    watch = Watch(backend, dead_after, interval=0.0, failures=10)
    return TestClient(create_app(watch, title="test", token=token, read_only=read_only),
                      base_url=ORIGIN, follow_redirects=False)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "the page has no form with the CSRF field"
    return match.group(1)


def gone_pid() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    return gone.pid


def failed_invocation(backend: MemoryBackend, task: str, message: str) -> str:
    invocation = make_invocation(task=task, max_attempts=1)
    backend.enqueue(invocation)
    claimed = backend.claim("worker-1", 0)
    assert claimed is not None and claimed.id == invocation.id
    backend.fail(invocation.id, "worker-1", ErrorInfo(
        "ValueError", message, f"Traceback (most recent call last):\nValueError: {message}\n"))
    return invocation.id


# -- pages ------------------------------------------------------------------------------


def test_the_overview_shows_the_queue_and_runners_as_top_does_lost_ones_marked() -> None:
    backend = MemoryBackend("memory://")
    pid = os.getpid()
    backend.record_heartbeats([
        RunnerInfo(id="sup", kind=RunnerKind.SUPERVISOR, pid=pid),
        RunnerInfo(id="busy-worker", kind=RunnerKind.WORKER, pid=pid, supervisor="sup", slot=1,
                   phase="serving"),
        RunnerInfo(id="gone-sup", kind=RunnerKind.SUPERVISOR, pid=(dead := gone_pid()))],
        at=time.time())
    backend.enqueue(make_invocation(task="slow.task"))
    assert backend.claim("busy-worker", 0) is not None
    backend.enqueue(make_invocation(task="queued.task"))

    page = client_for(backend).get("/")
    assert page.status_code == 200
    html = page.text
    counts = re.search(r'<table id="counts">(.*?)</table>', html, re.S)
    assert counts is not None
    cells = re.findall(r"<t[hd]>(\w+)</t[hd]>", counts.group(1))
    assert dict(zip(cells[:5], cells[5:], strict=True)) == {
        "PENDING": "1", "RUNNING": "1", "PAUSED": "0", "SUCCESS": "0", "FAILED": "0"}
    assert "supervisors: 2 (1 lost)" in html and "workers: 1, 1 busy" in html
    assert re.search(rf'<tr class="lost">\s*<td class="">gone-sup</td>.*?LOST: pid {dead} is '
                     r"gone", html, re.S)
    assert re.search(r'<td class="state-busy">busy</td>.*?slow\.task', html, re.S)
    assert "<!doctype html>" in html


def test_the_live_part_alone_when_live_js_asks_and_rates_drawn_over_time() -> None:
    backend = MemoryBackend("memory://")
    client = client_for(backend)
    failed_invocation(backend, "t", "one")
    first = client.get("/", headers={"X-Pprunner-Live": "1"})
    assert first.status_code == 200 and "<html" not in first.text
    assert "<svg" not in first.text  # one point is not a line yet
    second = client.get("/", headers={"X-Pprunner-Live": "1"})
    assert re.search(r'<polyline points="[\d., ]+" fill="none" stroke="#b00"', second.text)
    assert first.headers["cache-control"] == "no-store"


def test_failures_show_tracebacks_and_a_search_by_task_name() -> None:
    backend = MemoryBackend("memory://")
    wanted = failed_invocation(backend, "billing.charge_card", "card declined")
    other = failed_invocation(backend, "mail.send", "smtp down")
    client = client_for(backend)

    latest = client.get("/failures").text
    assert wanted in latest and other in latest
    assert "ValueError: card declined\n</pre>" in latest
    found = client.get("/failures", params={"task": "CHARGE"}).text
    assert wanted in found and other not in found
    assert "1 failure(s) of tasks named like “CHARGE”" in found
    assert "no.such.task" not in client.get("/failures", params={"task": "no.such"}).text


# -- actions ----------------------------------------------------------------------------


def test_retry_requeues_a_failure_only_with_the_page_s_csrf_field() -> None:
    backend = MemoryBackend("memory://")
    failed = failed_invocation(backend, "t", "boom")
    client = client_for(backend)
    csrf = csrf_of(client.get("/failures").text)

    forged = client.post("/retry", data={"id": failed, "csrf": "guessed"})
    assert forged.status_code == 403 and backend.get(failed).status is Status.FAILED
    cross_site = client.post("/retry", data={"id": failed, "csrf": csrf},
                             headers={"Origin": "http://evil.example"})
    assert cross_site.status_code == 403 and backend.get(failed).status is Status.FAILED

    done = client.post("/retry", data={"id": failed, "csrf": csrf},
                       headers={"Origin": ORIGIN})
    assert done.status_code == 303 and done.headers["location"].startswith("/failures?notice=")
    assert backend.get(failed).status is Status.PENDING
    assert f"requeued {failed}" in client.get(done.headers["location"]).text
    again = client.post("/retry", data={"id": failed, "csrf": csrf})
    assert f"{failed} is not FAILED (or unknown): left alone" in \
        client.get(again.headers["location"]).text


def test_purge_deletes_finished_invocations_and_names_a_bad_duration() -> None:
    backend = MemoryBackend("memory://")
    failed = failed_invocation(backend, "t", "old")
    backend.enqueue(pending := make_invocation())
    client = client_for(backend)
    csrf = csrf_of(client.get("/").text)

    bad = client.post("/purge", data={"older_than": "soon", "csrf": csrf})
    assert "purge: &#39;soon&#39;: unknown duration unit" in \
        client.get(bad.headers["location"]).text
    done = client.post("/purge", data={"older_than": "0", "csrf": csrf})
    assert "deleted 1 invocation(s)" in client.get(done.headers["location"]).text
    assert [i.id for i in backend.invocations(Status.FAILED, 10)] == []
    assert backend.get(pending.id).status is Status.PENDING
    assert failed not in client.get("/failures").text


@pytest.mark.slow
def test_scale_reaches_a_live_supervisor_and_names_a_lost_one(app: App, supervise) -> None:
    supervisor = supervise(processes=1)
    lost = RunnerInfo(id="lost-sup", kind=RunnerKind.SUPERVISOR, pid=gone_pid())
    app.backend.record_heartbeats([lost], at=time.time())
    client = client_for(app.backend, dead_after=app.config.dead_after)
    html = client.get("/").text
    assert f'name="supervisor" value="{supervisor.id}"' in html
    assert 'name="supervisor" value="lost-sup"' not in html  # no button for a lost one

    done = client.post("/scale", data={"supervisor": supervisor.id, "processes": "2",
                                       "csrf": csrf_of(html)})
    assert f"supervisor {supervisor.id} (pid {os.getpid()}): scaling to 2" in \
        client.get(done.headers["location"]).text
    wait_until(lambda: live_workers(app) == 2, what="the supervisor to scale to 2")
    refused = client.post("/scale", data={"supervisor": "lost-sup", "processes": "2",
                                          "csrf": csrf_of(html)})
    assert "error: supervisor lost-sup" in client.get(refused.headers["location"]).text
    zero = client.post("/scale", data={"supervisor": supervisor.id, "processes": "0",
                                       "csrf": csrf_of(html)})
    assert "at least 1" in client.get(zero.headers["location"]).text


def test_read_only_shows_no_buttons_and_refuses_every_post() -> None:
    backend = MemoryBackend("memory://")
    failed = failed_invocation(backend, "t", "boom")
    client = client_for(backend, read_only=True)
    pages = client.get("/").text + client.get("/failures").text
    assert 'method="post"' not in pages and "read-only" in pages
    assert failed in pages  # what it shows is all there
    for path, data in (("/retry", {"id": failed}), ("/purge", {"older_than": "0"}),
                       ("/scale", {"supervisor": "x", "processes": "1"})):
        refused = client.post(path, data={**data, "csrf": "anything"})
        assert refused.status_code == 403 and "read-only" in refused.text
    assert backend.get(failed).status is Status.FAILED


# -- access -----------------------------------------------------------------------------


def test_with_a_token_every_request_must_carry_it() -> None:
    client = client_for(MemoryBackend("memory://"), token=TOKEN)
    refused = client.get("/")
    assert refused.status_code == 401 and "needs its token" in refused.text
    assert refused.headers["www-authenticate"].startswith("Basic")
    assert client.get("/static/live.js").status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
    assert client.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    assert client.get("/", headers={"Authorization": f"Basic {basic}"}).status_code == 200

    login = client.get("/failures", params={"token": TOKEN, "task": "x"})
    assert login.status_code == 303 and login.headers["location"] == "/failures?task=x"
    cookie = login.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert client.get("/").status_code == 200  # the cookie now
    client.cookies.clear()
    assert client.get("/").status_code == 401


def test_without_a_token_only_requests_addressed_to_loopback_are_answered() -> None:
    client = client_for(MemoryBackend("memory://"))
    for host in ("localhost:8420", "127.0.0.1:8420", "[::1]:8420", "localhost"):
        assert client.get("/", headers={"Host": host}).status_code == 200, host
    for host in ("rebound.example:8420", "192.168.1.20:8420", ""):
        refused = client.get("/", headers={"Host": host})
        assert refused.status_code == 403 and "loopback" in refused.text, host
    with_token = client_for(MemoryBackend("memory://"), token=TOKEN)
    assert with_token.get("/", headers={"Host": "dashboard.example:8420",
                                        "Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_the_token_rules_for_each_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(access.TOKEN_VARIABLE, raising=False)
    for loopback in ("127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost"):
        assert access.required_token(loopback, None) is None
        assert access.required_token(loopback, TOKEN) == TOKEN
    for beyond in ("0.0.0.0", "::", "192.168.1.20", "dashboard.example"):
        with pytest.raises(ConfigError, match=f"--host {re.escape(beyond)} listens beyond "
                                              "loopback.*give --token or set "
                                              "PPRUNNER_WEB_TOKEN"):
            access.required_token(beyond, None)
    with pytest.raises(ConfigError, match="token is 5 characters long; use at least 16"):
        access.required_token("0.0.0.0", "short")
    monkeypatch.setenv(access.TOKEN_VARIABLE, TOKEN)
    assert access.required_token("0.0.0.0", None) == TOKEN


# -- the command ------------------------------------------------------------------------


def web_cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("web", "--app", "tests.apps:app", *args, env=cli_env(db_url))


def test_the_command_s_mistakes_are_one_line_each(db_url: str, app: App) -> None:
    missing = web_cli(db_url)  # nothing listens for a store that is not there
    assert missing.returncode == ExitCode.CONFIG_ERROR
    [line] = missing.stderr.splitlines()
    assert line.startswith("pprunner: error: no SQLite database at ")
    apps.add.enqueue(1, 2)  # the store exists from here on
    exposed = web_cli(db_url, "--host", "0.0.0.0")
    assert exposed.returncode == ExitCode.CONFIG_ERROR
    [line] = exposed.stderr.splitlines()
    assert "listens beyond loopback" in line and "--token" in line
    bad_port = web_cli(db_url, "--port", "70000")
    assert bad_port.returncode == ExitCode.USAGE_ERROR
    assert "expected a port from 1 to 65535, got '70000'" in bad_port.stderr
    bad_interval = web_cli(db_url, "--interval", "0")
    assert "expected more than 0 seconds, got '0'" in bad_interval.stderr

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = web_cli(db_url, "--port", str(port))
    assert busy.returncode == ExitCode.CONFIG_ERROR
    [line] = busy.stderr.splitlines()
    assert line == f"pprunner: error: pprunner web cannot listen on 127.0.0.1:{port}: " \
                   "Address already in use"


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_it_serves_until_a_signal_stops_it_with_0(
        app: App, db_url: str, cli_process, stop: signal.Signals) -> None:
    apps.add.enqueue(1, 2)
    web = cli_process("web", "--app", "tests.apps:app", "--port", str(port := free_port()),
                      env=cli_env(db_url))
    banner = web.stdout.readline()
    assert banner.startswith(f"pprunner web: tests, {db_url}: serving on "
                             f"http://127.0.0.1:{port}/"), web.communicate()
    assert status_of(f"http://127.0.0.1:{port}/") == 200  # loopback: no token asked
    web.send_signal(stop)
    assert web.wait(timeout=30) == ExitCode.OK, web.communicate()


def test_a_missing_web_extra_names_the_command_that_installs_it(db_url: str) -> None:
    hide = ("import sys; sys.modules['starlette'] = None; from pprunner.cli import main; "
            "sys.exit(main())")
    done = subprocess.run([sys.executable, "-c", hide, "web", "--app", "tests.apps:app"],
                          cwd=REPO, env=cli_env(db_url), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == ExitCode.CONFIG_ERROR
    assert done.stderr.strip() == (f"pprunner: error: the starlette package is not "
                                   f"installed: {install_extra('web')}")


# -- in a real browser ------------------------------------------------------------------


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium driven by Selenium through Debian's chromedriver."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        skip_or_fail("chromium and chromedriver are not on PATH (Debian: apt-get install "
                     "chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        skip_or_fail(f"selenium is not installed: {install_extra('test')}")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1280,900"):
        options.add_argument(argument)
    chrome = webdriver.Chrome(options=options, service=Service(driver))
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture
def pprunner_command() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """The venv's ``pprunner`` script, from the project folder, with no PYTHONPATH: as
    a user starts it. Every process it starts is reaped at teardown."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
        env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
        process = subprocess.Popen([str(Path(sys.executable).with_name("pprunner")), *args],
                                   cwd=REPO, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        started.append(process)
        return process

    yield start
    for process in started:
        reap(process)


def fresh(what: Callable[[], Any], description: str) -> Any:
    """``what()``'s answer once it is truthy, tried again while live.js has just
    swapped the elements it was reaching for (stale) or not drawn them yet."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    def attempt() -> Any:
        try:
            return what()
        except (NoSuchElementException, StaleElementReferenceException):
            return None

    return wait_until(attempt, what=description)


def text_of(browser: Any, element_id: str) -> str:
    """An element's text, or "" while live.js swaps the page's live part."""
    return str(fresh(lambda: browser.find_element("id", element_id).text or " ",
                     f"#{element_id}")).strip()


def shown_counts(browser: Any) -> dict[str, int]:
    lines = text_of(browser, "counts").splitlines()
    if len(lines) != 2:
        return {}
    return {status: int(n) for status, n in zip(lines[0].split(), lines[1].split(),
                                                strict=True)}


def status_of(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                    timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0  # not listening yet


@pytest.mark.slow
def test_in_a_browser_live_workers_a_failure_and_its_retry(
        app: App, db_url: str, marker_dir: Path, browser: Any, pprunner_command) -> None:
    env = cli_env(db_url, PPRUNNER_HEARTBEAT_INTERVAL="0.1")
    apps.add.enqueue(0, 0)  # the store exists before the supervisor and the dashboard
    supervisor = pprunner_command("run", "--app", "tests.apps:app", "--processes", "3",
                                  env=env)
    wait_until(lambda: live_workers(app) == 3 or supervisor.poll() is not None,
               what="the three workers to report")
    busy = [apps.whoami_slowly.enqueue(120) for _ in range(2)]
    port = free_port()
    web = pprunner_command("web", "--app", "tests.apps:app", "--host", "0.0.0.0", "--port",
                           str(port), "--token", TOKEN, "--interval", "0.2", env=env)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: status_of(base) or web.poll() is not None, what="pprunner web to listen")
    assert web.poll() is None, web.communicate()

    # bound beyond loopback: nothing without the token
    assert status_of(f"{base}/") == 401
    assert status_of(f"{base}/failures") == 401
    browser.get(f"{base}/")  # Chromium asks for a login (Basic) and shows nothing else
    assert browser.find_elements("id", "live") == [] and "pprunner" not in browser.title
    assert status_of(f"{base}/", {"Authorization": f"Bearer {TOKEN}"}) == 200

    # the token once, then the cookie: the live workers and counts
    browser.get(f"{base}/?token={TOKEN}")
    assert browser.current_url == f"{base}/"
    workers = {r.id: r for r in app.backend.runners() if r.kind is RunnerKind.WORKER}
    wait_until(lambda: shown_counts(browser).get("RUNNING") == 2, what="2 RUNNING shown")
    table = wait_until(lambda: "2 busy" in text_of(browser, "workers") and
                       text_of(browser, "workers"), what="the busy workers shown")
    for worker in workers.values():
        assert f"{worker.pid} " in table and worker.id in table
    assert sum(" busy " in line and "tests.apps.whoami_slowly" in line
               for line in table.splitlines()) == 2
    assert {h.id for h in busy} <= set(table.split())

    # a failure appears without a reload (live.js), then with its traceback
    failing = apps.fails_first_time.enqueue(str(marker_dir))
    wait_until(lambda: shown_counts(browser).get("FAILED") == 1, what="the failure counted")
    _screenshot(browser, "web-overview.png")
    browser.get(f"{base}/failures")
    row = f"failure-{failing.id}"
    assert "RuntimeError: the first run fails; a retry succeeds" in text_of(browser, row)
    fresh(lambda: browser.find_element("css selector", f"#{row} summary").click() or True,
          "a click on the traceback's summary")
    traceback = fresh(lambda: browser.find_element("css selector", f"#{row} pre").text,
                      "the traceback shown, and kept open by the refreshes")
    assert traceback.startswith("Traceback (most recent call last):")
    assert 'raise RuntimeError("the first run fails; a retry succeeds")' in traceback
    _screenshot(browser, "web-failures.png")

    # the retry button re-queues it, and it then succeeds
    fresh(lambda: browser.find_element("css selector", f"#{row} button").click() or True,
          "a click on retry")
    wait_until(lambda: f"requeued {failing.id}" in browser.find_element("tag name",
                                                                        "body").text,
               what="the retry's notice")
    assert failing.result(timeout=30) == "succeeded on retry"
    wait_until(lambda: f"failure-{failing.id}" not in browser.page_source,
               what="the failure gone from the live list")
    browser.get(f"{base}/")
    wait_until(lambda: shown_counts(browser).get("FAILED") == 0 and
               shown_counts(browser).get("SUCCESS") == 2, what="the success counted")


def _screenshot(browser: Any, name: str) -> None:
    """The docs' screenshots come from this test: ``PPRUNNER_WEB_SCREENSHOTS=docs/img``."""
    folder = os.environ.get("PPRUNNER_WEB_SCREENSHOTS")
    if folder:
        browser.save_screenshot(str(Path(REPO, folder, name)))
