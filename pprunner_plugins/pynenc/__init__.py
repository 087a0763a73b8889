"""pynenc runner plugin: pynenc's PersistentProcessRunner on pprunner's supervisor.

Install ``pprunner[pynenc]`` and select the runner the way pynenc selects
any runner — nothing else in the app changes::

    [tool.pynenc]
    runner_cls = "PprunnerRunner"
    num_processes = 4                 # PersistentProcessRunner's setting, same meaning
    pprunner_time_limit = 300         # pprunner's settings: pprunner_<name>

or ``PYNENC__RUNNER_CLS=PprunnerRunner``, or ``PynencBuilder().runner(...)``;
then ``pynenc --app myapp runner start``. pynenc imports this module through
the ``pynenc.plugins`` entry-point group whenever an app is created, which
is how ``runner_cls`` finds the class by name::

    [project.entry-points."pynenc.plugins"]
    pprunner = "pprunner_plugins.pynenc"

See :mod:`.runner` for the design and :mod:`.config` for every setting.
"""

from .runner import PprunnerRunner

__all__ = ["PprunnerRunner"]
