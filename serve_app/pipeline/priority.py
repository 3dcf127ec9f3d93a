"""CPU priority of the processes that share a node's cores.

Answering a job submit, a probe or the first bytes of a stream takes the proxy and the
Ingress a few milliseconds of CPU; a Transcriber takes every core it can for as long as it
has chunks. Ray starts its workers' threads at niceness 15, so at equal priority a submit
on a busy 2-core node waits its turn behind the model's threads. The Transcribers, the
SpeakerEmbedder and the tracker add 10 (capped at 19), the Ingress nothing: at 50 submits/s
with jobs running, submit p99 went from 0.93-0.96 s to 0.25-0.30 s, and burst throughput
stayed within the run-to-run noise (the model still gets every cycle the Ingress leaves).
Raising niceness needs no privilege, and decode children inherit it.
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
