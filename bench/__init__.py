"""Benchmarks of the tombstone pipeline against a real local Kafka broker.

``python -m bench`` (or ``make bench``) runs the ratio benchmarks B1 to B10 and writes
``build/bench.json``; ``docs/benchmarks.md`` defines each ratio and records results.
The package is a development tool: it is not part of the ``tombstone`` wheel.
"""
