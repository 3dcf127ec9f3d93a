"""The Ingress and tracker lower their own CPU priority: every thread, and threads to come."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import os, threading
from pathlib import Path
from serve_app.pipeline.priority import lower_cpu_priority

def niceness() -> set[int]:
    return {os.getpriority(os.PRIO_PROCESS, int(t.name)) for t in Path('/proc/self/task').iterdir()}

stop = threading.Event()
early = threading.Thread(target=stop.wait)
early.start()
base = os.getpriority(os.PRIO_PROCESS, 0)
lower_cpu_priority(3)
late = threading.Thread(target=stop.wait)
late.start()
lower_cpu_priority(0)  # no change
print(base, sorted(niceness()))
stop.set()
"""


def test_every_thread_is_reniced_and_new_threads_inherit() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split(maxsplit=1)
    base, seen = int(out[0]), out[1].strip()
    assert seen == str([min(19, base + 3)])
