"""Reusable contract tests for backend and serializer plugins.

A plugin proves it keeps the promises of :class:`pprunner.backend.Backend` or
:class:`pprunner.serializer.Serializer` by subclassing the matching contract
in its own test suite (under a name pytest collects) and providing one
fixture; every contract test then runs against the plugin::

    import pytest
    from pprunner.testing import BackendContract, SerializerContract

    from my_plugin import MsgpackSerializer, RedisBackend


    class TestRedisBackend(BackendContract):
        @pytest.fixture
        def backend(self, redis_url):
            backend = RedisBackend(redis_url)  # a fresh, EMPTY store
            yield backend
            backend.close()


    class TestMsgpackSerializer(SerializerContract):
        roundtrip_values = [*SerializerContract.roundtrip_values, b"raw bytes"]
        unsupported_values = [object()]

        @pytest.fixture
        def serializer(self):
            return MsgpackSerializer()

A backend runs the tests of the core and of each optional capability it
declares (:class:`~pprunner.backend.Pausing`, ``Admin``, ``Recovery``); the
others are reported as skipped, naming the capability.

:func:`make_invocation` builds the PENDING invocations the backend contract
enqueues, for a plugin's own extra tests. Importing this package needs pytest
(the ``test`` extra); the contract modules are registered for pytest's
assertion rewriting so their failures show the compared values.
"""

from __future__ import annotations

import pytest

# Must run before the submodules are imported, or their asserts stay plain.
pytest.register_assert_rewrite("pprunner.testing.backend_contract",
                               "pprunner.testing.serializer_contract")

from .backend_contract import BackendContract, make_invocation  # noqa: E402
from .serializer_contract import SerializerContract  # noqa: E402

__all__ = ["BackendContract", "SerializerContract", "make_invocation"]
