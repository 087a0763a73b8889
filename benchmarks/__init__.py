"""Benchmarks of pprunner against other ways of running Python tasks.

Run ``python -m benchmarks run --quick``; see ``benchmarks/README.md``.
Nothing heavy is imported here: pool workers import this package too.
"""
