"""Sends work to the running runner and prints the results."""

from __future__ import annotations

import os
import tempfile

from app import crash_once, sum_of_squares

if __name__ == "__main__":
    print("sum of squares 0..9:", sum_of_squares(10).result)
    marker = os.path.join(tempfile.mkdtemp(), "crashed")
    print("crash_once:", crash_once(marker).result)
