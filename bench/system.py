"""Process CPU time, machine load and machine facts, read from /proc."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float | None:
    """User plus system CPU seconds of a process and all its threads, or None when it is gone.

    Reads fields 14 (utime) and 15 (stime) of /proc/<pid>/stat, in clock ticks. The command
    name in field 2 may contain spaces, so fields are counted after its closing bracket.
    """
    if pid is None:
        return None
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages, as `uptime` prints them."""
    return [round(value, 2) for value in os.getloadavg()]


def uptime_line() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: " + ", ".join(f"{value:.2f}" for value in load_average())


def machine_facts() -> dict[str, object]:
    """CPU model, core count and memory of this machine, and the Python and library versions."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    except OSError:
        pass
    import confluent_kafka
    import fastavro
    import pydantic

    return {
        "cpu_model": model,
        "nproc": os.cpu_count(),
        "memory_gib": round(memory_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "confluent_kafka": confluent_kafka.version(),
        "librdkafka": confluent_kafka.libversion()[0],
        "fastavro": fastavro.__version__,
        "pydantic": pydantic.VERSION,
    }
