"""Fail fast while a backend is down: a circuit breaker and a bounded executor per store.

Store calls are blocking. They run on the store's own small thread pool (`BackendGuard.run`),
never on the event loop's default pool that decode and VAD use, so a hung database cannot
hold up work that does not need it. The breaker opens after `breaker_failures` consecutive
`StoreUnavailable`s; while open every call fails at once, and after `breaker_open_s` one call
is let through as a probe: success closes it, failure opens it again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import StoreUnavailable

logger = logging.getLogger("ray.serve")
T = TypeVar("T")


@dataclass(frozen=True)
class StoreTuning:
    """Timeouts and fail-fast settings of one store (`StorageConfig.resilience` maps onto it)."""

    open_timeout_s: float = 30.0
    connect_timeout_s: float = 2.0
    statement_timeout_s: float = 10.0
    pool_timeout_s: float = 1.0
    pool_max_size: int = 4
    executor_workers: int = 8
    max_pending: int = 64
    breaker_failures: int = 2
    breaker_open_s: float = 1.0


class BackendDown(StoreUnavailable):
    """Refused without trying: the breaker is open or the store's queue is full."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class CircuitBreaker:
    """closed → (N failures) → open → (after `open_s`) one probe → closed or open again."""

    def __init__(
        self,
        name: str,
        failures: int = 2,
        open_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failures = failures
        self.open_s = open_s
        self.clock = clock
        self._lock = threading.Lock()
        self._failed = 0
        self._open_until: float | None = None
        self._probing = False

    @property
    def is_open(self) -> bool:
        return self._open_until is not None

    def refusing(self) -> bool:
        """Open and not yet due for a probe: a call would fail at once."""
        until = self._open_until
        return until is not None and self.clock() < until

    @property
    def retry_after_s(self) -> float:
        return max(1.0, math.ceil(self.open_s))

    def before(self) -> None:
        """Raise `BackendDown` unless a call may go ahead now (maybe as the probe)."""
        with self._lock:
            if self._open_until is None:
                return
            if self.clock() >= self._open_until and not self._probing:
                self._probing = True  # this caller probes; the rest keep failing fast
                return
        raise BackendDown(f"{self.name} is unavailable; retry shortly", self.retry_after_s)

    def succeeded(self) -> None:
        with self._lock:
            if self._open_until is not None:
                logger.warning("%s is back: circuit closed", self.name)
            self._failed, self._open_until, self._probing = 0, None, False

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self._failed += 1
            self._probing = False
            if self._open_until is None and self._failed < self.failures:
                return
            if self._open_until is None:
                logger.warning("%s unavailable (%s): circuit open", self.name, exc)
            self._open_until = self.clock() + self.open_s

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Around one backend call: `StoreUnavailable` counts as a failure, anything else
        (including NotFound or Conflict, which are answers) as a success."""
        self.before()
        try:
            yield
        except StoreUnavailable as exc:
            if not isinstance(exc, BackendDown):
                self.failed(exc)
            raise
        except BaseException:
            self.succeeded()
            raise
        self.succeeded()


class BackendGuard:
    """A store's breaker and bounded executor; `run` is how async code calls the store."""

    def __init__(self, name: str, tuning: StoreTuning | None = None) -> None:
        self.tuning = tuning or StoreTuning()
        self.breaker = CircuitBreaker(
            name, self.tuning.breaker_failures, self.tuning.breaker_open_s
        )
        self._executor = ThreadPoolExecutor(
            max_workers=self.tuning.executor_workers, thread_name_prefix=f"store-{name}"
        )
        self._pending = 0

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the store's threads; refused at once while the breaker is open or
        when `max_pending` calls already wait (the backend is not keeping up)."""
        breaker = self.breaker
        if breaker.refusing():  # before queuing: no thread is spent on a known outage
            raise BackendDown(
                f"{breaker.name} is unavailable; retry shortly", breaker.retry_after_s
            )
        if self._pending >= self.tuning.max_pending:
            raise BackendDown(f"{breaker.name} is busy; retry shortly", breaker.retry_after_s)
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args))
        finally:
            self._pending -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class Guarded:
    """Mixin for stores: `self.guard`, a default one until the store installs its own."""

    _guard: BackendGuard | None = None

    @property
    def guard(self) -> BackendGuard:
        if self._guard is None:
            self._guard = BackendGuard(type(self).__name__)
        return self._guard

    def _use_guard(self, name: str, tuning: StoreTuning | None) -> BackendGuard:
        self._guard = BackendGuard(name, tuning)
        return self._guard
