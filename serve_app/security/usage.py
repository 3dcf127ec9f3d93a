"""Usage metering and the per-key daily audio quota.

Every transcription that finished (sync, streamed, job, live turn, handle) adds its audio
seconds to a durable counter per tenant, key, UTC day, model and source in the job store
(`JobStore.add_usage`), and to `whisper_usage_audio_seconds_total` through a
`UsageObserver`. The tenant label is bounded: the first `usage.metric_tenants` tenants a
process sees get their own label, the rest share "other".
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Protocol

from serve_app.config import UsageConfig
from serve_app.errors import BackendUnavailable
from serve_app.security.ratelimit import rate_limited
from serve_app.stores import errors as store_errors
from serve_app.stores.job_store import JobStore
from serve_app.stores.records import UsageCharge, UsageRecord

logger = logging.getLogger("ray.serve")
OTHER_TENANTS = "other"
_RECORD_WAIT_S = 0.25


class UsageObserver(Protocol):
    def audio_seconds(self, tenant: str, model: str, source: str, seconds: float) -> None: ...


def utc_day(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%d")


def seconds_to_midnight(now: datetime | None = None) -> float:
    now = (now or datetime.now(UTC)).astimezone(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


class UsageMeter:
    """Records usage durably and checks a key's daily quota."""

    def __init__(
        self,
        store: JobStore | None,
        config: UsageConfig,
        observer: UsageObserver | None = None,
    ) -> None:
        self.store = store if config.enabled else None
        self.config = config
        self.observer = observer
        self._labelled: set[str] = set()
        self._writes: set[asyncio.Future[None]] = set()  # usage writes that outlived record()

    def _label(self, tenant: str) -> str:
        if tenant in self._labelled:
            return tenant
        if len(self._labelled) < self.config.metric_tenants:
            self._labelled.add(tenant)
            return tenant
        return OTHER_TENANTS

    async def record(
        self, tenant: str, key_id: str, model: str, source: str, seconds: float
    ) -> None:
        """Add `seconds` of audio; a store failure is logged, never fails the request, and a
        slow store holds the caller at most `_RECORD_WAIT_S` (the write goes on meanwhile)."""
        self.observe(tenant, model, source, seconds)
        if self.store is None or seconds <= 0:
            return
        write = asyncio.ensure_future(self._write(tenant, key_id, model, source, seconds))
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)
        await asyncio.wait([write], timeout=_RECORD_WAIT_S)

    def observe(self, tenant: str, model: str, source: str, seconds: float) -> None:
        """Count `seconds` in the metric only (for usage the store already recorded)."""
        if self.observer is not None:
            self.observer.audio_seconds(self._label(tenant), model, source, seconds)

    def charge(self, model: str, source: str, seconds: float) -> UsageCharge | None:
        """What a store write that meters with it should add; None when metering is off."""
        if self.store is None or seconds <= 0:
            return None
        return UsageCharge(model, source, seconds, utc_day())

    async def _write(self, tenant: str, key_id: str, model: str, source: str, seconds: float):
        assert self.store is not None
        try:
            await self.store.guard.run(
                self.store.add_usage, tenant, key_id, model, source, seconds, utc_day()
            )
        except store_errors.StoreError as exc:
            logger.warning("usage of tenant %s not recorded: %s", tenant, exc)

    async def admit(self, key_id: str, minutes_per_day: float | None, seconds: float) -> None:
        """429 (Retry-After: next UTC midnight) when `seconds` more would pass the quota."""
        if minutes_per_day is None or self.store is None:
            return
        try:
            spent = await self.store.guard.run(self.store.key_usage_on, key_id, utc_day())
        except store_errors.StoreError as exc:
            raise BackendUnavailable(f"storage unavailable: {exc}") from exc
        quota = minutes_per_day * 60
        if spent + seconds > quota:
            raise rate_limited(
                f"daily audio quota of {minutes_per_day:g} min is spent "
                f"({spent / 60:.2f} min used, this request needs {seconds / 60:.2f} min)",
                seconds_to_midnight(),
            )

    async def between(self, tenant: str, from_day: str, to_day: str) -> list[UsageRecord]:
        if self.store is None:
            return []
        try:
            return await self.store.guard.run(self.store.usage_between, tenant, from_day, to_day)
        except store_errors.StoreError as exc:
            raise BackendUnavailable(f"storage unavailable: {exc}") from exc
