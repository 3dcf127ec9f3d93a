"""Giving freed heap back to the OS after a request that held large arrays.

glibc's malloc keeps freed memory in its arenas (and raises its mmap threshold after a
large free, so the next large arrays come from the heap too): the decoded audio of eight
long uploads stayed resident after they were answered. `malloc_trim(0)` returns the free
pages; elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

logger = logging.getLogger("ray.serve")


@functools.cache
def _malloc_trim() -> ctypes._NamedFuncPointer | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        logger.info("no malloc_trim here (not glibc): freed heap stays with the allocator")
        return None


def trim_heap() -> None:
    """Return free heap pages to the OS (blocking for a few ms: call it off the loop)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
