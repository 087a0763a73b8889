"""An app whose only task lives in a module its workers import (``include``) and
the supervisor's process never does: the supervisor must not need it."""

from pprunner import App

app = App(name="included", include=["tests.apps_included_tasks"])
