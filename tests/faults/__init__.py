"""Fault suite: scenarios, a TCP fault proxy and an independent oracle (``python -m tests.faults``)."""
