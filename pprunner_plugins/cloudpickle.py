"""The ``cloudpickle`` serializer: pickle that also carries lambdas and closures.

Needs the ``cloudpickle`` package (``pip install -e '.[cloudpickle]'`` in the clone).
Functions defined in ``__main__``, lambdas and closures travel by value
(their code, not their import path), which plain pickle refuses. Loading
is plain ``pickle.loads``: like pickle, anyone who can write to the queue
can run code in the workers, so it is never a default. The intended use is
one task that needs it: ``@app.task(serializer="cloudpickle")``, which the
workers then accept for that task alone.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import pprunner

from ._optional import LibrarySerializer, OptionalLibrary
from .pickle import PickleSerializer


class CloudpickleSerializer(LibrarySerializer):
    name = "cloudpickle"
    safe = False

    library = OptionalLibrary("cloudpickle", "cloudpickle")

    def dumps(self, value: Any) -> bytes:
        try:
            data: bytes = self.library.module.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, AttributeError) as exc:
            raise TypeError(str(exc)) from exc
        return data

    #: what cloudpickle writes is ordinary pickle data (cloudpickle.loads is pickle.loads)
    loads = PickleSerializer.loads


@pprunner.hookimpl
def pprunner_register_serializers(register: Callable[..., None]) -> None:
    register(CloudpickleSerializer())
