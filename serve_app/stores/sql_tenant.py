"""Tenant-owned data in the SQL stores: API keys, vocabularies and usage metering."""

from __future__ import annotations

from typing import Any

from .errors import NotFound
from .records import ApiKey, UsageCharge, UsageRecord, Vocabulary, new_id
from .sql_base import SqlBase, Tx


class SqlTenantData(SqlBase):
    """API keys, vocabularies and usage records, written once against named queries."""

    def create_api_key(self, tenant: str, key_sha256: str, name: str) -> ApiKey:
        params = {
            "id": new_id(),
            "tenant": tenant,
            "name": name,
            "key_sha256": key_sha256,
            "now": self._now(),
        }
        return ApiKey.from_row(self._insert("insert_api_key", params, "api key"))

    def get_api_key_by_hash(self, key_sha256: str) -> ApiKey | None:
        with self._transaction(write=False) as tx:
            row = self._one(tx, "get_active_api_key_by_hash", {"key_sha256": key_sha256})
        return ApiKey.from_row(row) if row is not None else None

    def revoke_api_key(self, key_id: str, tenant: str) -> bool:
        params = {"id": key_id, "tenant": tenant, "now": self._now()}
        with self._transaction() as tx:
            return self._one(tx, "revoke_api_key", params) is not None

    def list_api_keys(self, tenant: str) -> list[ApiKey]:
        with self._transaction(write=False) as tx:
            rows = tx.rows("list_api_keys", {"tenant": tenant})
        return [ApiKey.from_row(row) for row in rows]

    # ---- issue 15: vocabularies and usage ----------------------------------------------

    def create_vocabulary(
        self, tenant: str, name: str, terms: list[str], spellings: list[dict[str, Any]]
    ) -> Vocabulary:
        params = {
            "id": "voc_" + new_id(),
            "tenant": tenant,
            "name": name,
            "body": {"terms": terms, "spellings": spellings},
            "now": self._now(),
        }
        return Vocabulary.from_row(self._insert("insert_vocabulary", params, "vocabulary"))

    def get_vocabulary(self, vocabulary_id: str, tenant: str) -> Vocabulary:
        with self._transaction(write=False) as tx:
            row = self._one(tx, "get_vocabulary", {"id": vocabulary_id, "tenant": tenant})
        if row is None:
            raise NotFound(f"vocabulary {vocabulary_id} not found")
        return Vocabulary.from_row(row)

    def list_vocabularies(self, tenant: str) -> list[Vocabulary]:
        with self._transaction(write=False) as tx:
            rows = tx.rows("list_vocabularies", {"tenant": tenant})
        return [Vocabulary.from_row(row) for row in rows]

    def delete_vocabulary(self, vocabulary_id: str, tenant: str) -> None:
        with self._transaction() as tx:
            row = self._one(tx, "delete_vocabulary", {"id": vocabulary_id, "tenant": tenant})
        if row is None:
            raise NotFound(f"vocabulary {vocabulary_id} not found")

    def add_usage(
        self, tenant: str, key_id: str, model: str, source: str, seconds: float, day: str
    ) -> None:
        with self._transaction() as tx:
            self._charge(tx, tenant, key_id, UsageCharge(model, source, seconds, day))

    def _charge(self, tx: Tx, tenant: str, key_id: str, usage: UsageCharge) -> None:
        params = {
            "tenant": tenant,
            "key_id": key_id,
            "day": usage.day,
            "model": usage.model,
            "source": usage.source,
            "seconds": float(usage.seconds),
        }
        tx.rows("add_usage", params)

    def usage_between(self, tenant: str, from_day: str, to_day: str) -> list[UsageRecord]:
        params = {"tenant": tenant, "from_day": from_day, "to_day": to_day}
        with self._transaction(write=False) as tx:
            rows = tx.rows("usage_between", params)
        return [UsageRecord.from_row(row) for row in rows]

    def key_usage_on(self, key_id: str, day: str) -> float:
        with self._transaction(write=False) as tx:
            row = self._one(tx, "key_usage_on", {"key_id": key_id, "day": day})
        return float(row["seconds"]) if row is not None else 0.0
