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


HEAP_CHILD = """
import gc
from serve_app.pipeline.heap import freeze_startup_heap

frozen = freeze_startup_heap()
survivor = [object() for _ in range(10)]  # made after the freeze: still collectable
print(frozen, gc.get_freeze_count(), len(gc.get_objects(generation=2)) < frozen)
"""


def test_the_startup_heap_is_frozen_out_of_later_collections() -> None:
    """A replica's modules and objects from before its first request never make a full
    collection walk them; what is made later is collected as before."""
    out = subprocess.run(
        [sys.executable, "-c", HEAP_CHILD], capture_output=True, text=True, check=True
    ).stdout.split()
    frozen, count, fewer = int(out[0]), int(out[1]), out[2]
    assert frozen > 1000  # the interpreter's own startup objects, at least
    assert count == frozen
    assert fewer == "True"
