"""An app the supervisor can import but its workers cannot (a broken worker environment)."""

from pprunner import App
from tests.first_importer import imported_by_a_child

if imported_by_a_child():
    raise ImportError("this module refuses to load in a worker process")

app = App(name="fails-in-worker")
