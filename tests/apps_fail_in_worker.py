"""An app the supervisor can import but its workers cannot (a broken worker environment)."""

import multiprocessing

from pprunner import App

if multiprocessing.parent_process() is not None:
    raise ImportError("this module refuses to load in a worker process")

app = App(name="fails-in-worker")
