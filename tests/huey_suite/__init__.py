"""Huey's own consumer tests, with ``pprunner_plugins.huey.supervised.Consumer`` swapped
in for Huey's ``Consumer``.

``python -m tests.huey_suite -q`` fetches the source distribution of the installed
Huey version, unpacks its tests into a cache folder, and runs the ones that build a
consumer with :mod:`tests.huey_suite.swapped_consumer`, copied there as their
conftest.py. Extra arguments go to pytest. ``--huey-consumer`` runs the same
selection with Huey's own consumer, to compare.
"""
