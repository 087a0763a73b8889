"""RQ's own tests, with ``pprunner_plugins.rq.Worker`` swapped in for RQ's workers.

``python -m tests.rq_suite -q`` fetches the source distribution of the installed
RQ version (its ``tests/`` are not in the wheel, nor in this repository), unpacks
its tests into a cache folder, and runs the files that build a worker with
:mod:`tests.rq_suite.swapped_worker`, copied there as their conftest.py
(``Worker`` and ``SimpleWorker`` are ours). Extra arguments go to pytest.
``--rq-worker`` runs the same selection with RQ's own workers, to compare.
"""
