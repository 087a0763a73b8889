"""The same project's tasks on a Huey whose ``create_consumer`` is pprunner's (the
class route): started with Huey's own ``huey_consumer huey_supervised.huey``."""

from __future__ import annotations

import os
from typing import Any

import huey_tasks
from huey import RedisHuey

from pprunner_plugins.huey.supervised import Consumer


class SupervisedHuey(RedisHuey):
    def create_consumer(self, **options: Any) -> Consumer:
        return Consumer(self, **options)


huey = SupervisedHuey("pprunner-tests-supervised", url=os.environ.get(
    "HUEY_TEST_REDIS_URL", "redis://127.0.0.1:6379/13"))

pid = huey.task()(huey_tasks.pid.func)
block_first = huey.task()(huey_tasks.block_first.func)
