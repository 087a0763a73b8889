"""The other queues' apps: one module per peer, wrapping :mod:`benchmarks.workload`."""
