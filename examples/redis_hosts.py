"""Two hosts on one Redis; one dies in the middle of a batch, and nothing is lost.

    python -m examples.redis_hosts [REDIS_URL] [COUNT]    # default redis://127.0.0.1:6379/0, 200

Starts two ``pprunner run`` supervisors with 2 workers each, as hosts "a"
and "b" (``PPRUNNER_HOST``), on the same Redis; enqueues COUNT tasks that
take 10 ms each and say which host ran them; SIGKILLs host a's whole
process group once a quarter of them are done, as a power cut would. Host
b's supervisor sees host a's heartbeats go stale (``dead_after`` is 3 s
here, 30 s by default), takes back what its workers held, and runs it.
Every invocation ends SUCCESS exactly once. Without ``?prefix=`` in the URL
the example uses a key prefix of its own and deletes its keys at the end.

Needs the redis extra (``pip install -e '.[redis]'``) and a Redis server.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time

from pprunner import App, Status, gather

app = App()


@app.task
def which_host(n: int) -> str:
    time.sleep(0.01)
    return os.environ.get("PPRUNNER_HOST", "?")


def start_host(name: str, url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PPRUNNER_BACKEND": url, "PPRUNNER_HOST": name,
           "PPRUNNER_DEAD_AFTER": "3", "PPRUNNER_HEARTBEAT_INTERVAL": "0.5"}
    return subprocess.Popen(
        [sys.executable, "-m", "pprunner", "run", "--app", "examples.redis_hosts:app",
         "--processes", "2"], env=env, start_new_session=True, stderr=subprocess.DEVNULL)


def wait_for(done: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while app.backend.counts()[Status.SUCCESS] < done:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {done} invocations done after {timeout} s")
        time.sleep(0.01)


def run(url: str, count: int) -> None:
    app.configure(source="examples.redis_hosts", backend=url)
    hosts = {name: start_host(name, url) for name in ("a", "b")}
    try:
        handles = [which_host.enqueue(n) for n in range(count)]
        wait_for(count // 4, timeout=60)
        os.killpg(hosts["a"].pid, signal.SIGKILL)
        hosts["a"].wait()
        killed_at = time.monotonic()
        ran_on = collections.Counter(gather(handles, timeout=120))
        print(f"host a killed; all {count} invocations ended SUCCESS "
              f"{time.monotonic() - killed_at:.1f} s later")
        print("ran on: " + ", ".join(f"host {h} {n}" for h, n in sorted(ran_on.items())))
        again = [i for i in (h.invocation() for h in handles) if i.attempts > 1]
        for invocation in again:
            print(f"{invocation.id} ran again on host b after: {invocation.history[-1].message}")
    finally:
        for process in hosts.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(60)
        app.close()


def main(url: str, count: int) -> None:
    try:
        import redis  # here, not at the top: the hosts' workers import this module too
    except ModuleNotFoundError:
        sys.exit("examples.redis_hosts needs the redis extra: pip install -e '.[redis]'")
    if "prefix=" in url:
        run(url, count)
        return
    prefix = f"pprunner-example-{os.getpid()}"
    try:
        run(f"{url}{'&' if '?' in url else '?'}prefix={prefix}", count)
    finally:
        client = redis.Redis.from_url(url)
        for key in client.scan_iter(f"{prefix}:*", count=500):
            client.delete(key)
        client.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/0",
         int(sys.argv[2]) if len(sys.argv) > 2 else 200)
