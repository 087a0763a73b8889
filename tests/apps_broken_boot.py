"""An app whose workers cannot boot, the way $PPRUNNER_TEST_BOOT says.

``exit``: the worker process exits during import (a broken environment);
``hang``: the import never finishes (a boot that would hang forever).
The supervisor itself imports it fine.
"""

import os
import time

from pprunner import App
from tests.first_importer import imported_by_a_child

if imported_by_a_child():
    if os.environ.get("PPRUNNER_TEST_BOOT") == "exit":
        os._exit(3)
    if os.environ.get("PPRUNNER_TEST_BOOT") == "hang":
        time.sleep(3600)

app = App(name="broken-boot")
