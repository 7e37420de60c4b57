"""A logging filter that keeps a flapping connection from flooding the log."""

from __future__ import annotations

import logging
import time


class RepeatFilter(logging.Filter):
    """Pass the first of equal records, then at most one per ``interval_s`` with a count.

    Records are equal when they have the same logger, level and message template and the
    same first argument (librdkafka's facility, such as FAIL or GETPID).
    """

    def __init__(self, interval_s: float = 30.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[tuple[str, int, str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        first = str(record.args[0]) if isinstance(record.args, tuple) and record.args else ""
        key = (record.name, record.levelno, str(record.msg), first)
        now = time.monotonic()
        last, suppressed = self._last.get(key, (float("-inf"), 0))
        if now - last < self.interval_s:
            self._last[key] = (last, suppressed + 1)
            return False
        self._last[key] = (now, 0)
        if suppressed:
            record.msg = f"{record.msg} (and {suppressed} similar messages in the last {self.interval_s:.0f} s)"
        return True


LIBRDKAFKA_LOGGER = "tombstone.librdkafka"
logging.getLogger(LIBRDKAFKA_LOGGER).addFilter(RepeatFilter())
