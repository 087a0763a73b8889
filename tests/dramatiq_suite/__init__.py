"""Dramatiq's own command-line tests, with ``pprunner dramatiq`` swapped in for ``dramatiq``.

``python -m tests.dramatiq_suite`` fetches the source distribution of the installed
Dramatiq version, unpacks the test modules that start Dramatiq's command (its worker
processes) into a cache folder, and runs them twice: with Dramatiq's own command,
then with ``pprunner dramatiq``. Every test that passes with Dramatiq's own must
pass with ours (the run fails otherwise), unless :data:`~.__main__.EXCLUDED` says
why not. The source distribution ships no ``tests/conftest.py`` nor
``tests/common.py``: :mod:`.swapped_cli` and :mod:`.common` are ours, copied there.
Extra arguments go to pytest.
"""
