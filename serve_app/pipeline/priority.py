"""CPU priority of the processes that prepare audio (Ingress, JobTracker, decode children).

On a node where the Ingress shares cores with a Transcriber, decode and VAD preempting one
of CTranslate2's threads stalls the whole batch: its threads meet at a barrier after every
layer, so the model loses more than the CPU time the Ingress takes. Raising the Ingress's
niceness lets the model's threads run first and the Ingress fill the gaps between batches.
Raising niceness needs no privilege, and the decode children inherit it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

_TASKS = Path("/proc/self/task")


def lower_cpu_priority(increment: int) -> None:
    """Raise the niceness of every thread of this process by `increment` (0: unchanged).

    Linux keeps a niceness per thread, so each existing thread is changed; threads started
    later inherit their creator's. Best effort: a refusal is logged, never raised.
    """
    if increment <= 0:
        return
    try:
        tids = [int(entry.name) for entry in _TASKS.iterdir()] if _TASKS.is_dir() else [0]
    except OSError:
        tids = [0]
    for tid in tids:
        try:
            current = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(19, current + increment))
        except OSError as exc:  # the thread ended meanwhile, or a sandbox refuses
            logger.debug("could not renice thread %s: %r", tid, exc)
