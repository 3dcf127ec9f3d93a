"""What the SQL stores share below their operations: the clock, transactions, row helpers."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any, Protocol

from .errors import StoreError
from .records import Row, to_utc, utcnow

Clock = Callable[[], datetime]

# Arbitrary constant naming the advisory lock that serialises migrate() on Postgres.
MIGRATION_LOCK_KEY = 0x5E_57_0B_5E_A1


class Tx(Protocol):
    """One open database transaction, as the shared SQL logic sees it."""

    def rows(self, query: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        """Run a named query; its rows (empty for statements that return none)."""

    def script(self, sql: str) -> None:
        """Run several parameterless statements (a migration)."""


class SqlBase:
    """Transactions and the small helpers every SQL store method uses."""

    dialect: str

    def __init__(self, clock: Clock = utcnow) -> None:
        self._clock = clock

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[Tx]:
        """A transaction that commits on success, rolls back on error and maps driver errors.
        `write=False` promises only reads, which lets SQLite skip the database write lock.
        While the store's breaker is open it fails at once (`BackendDown`)."""
        guard: Any = getattr(self, "guard", None)
        if guard is None:
            with self._open_transaction(write) as tx:
                yield tx
            return
        with guard.breaker.guard(), self._open_transaction(write) as tx:
            yield tx

    @abc.abstractmethod
    def _open_transaction(self, write: bool = True) -> AbstractContextManager[Tx]:
        """The driver's transaction behind `_transaction`."""

    def _one(self, tx: Tx, query: str, params: Mapping[str, Any] | None = None) -> Row | None:
        found = tx.rows(query, params)
        return found[0] if found else None

    def _insert(self, query: str, params: Mapping[str, Any], what: str) -> Row:
        """Run an INSERT ... RETURNING that must yield its row (`what` names it in the error)."""
        with self._transaction() as tx:
            row = self._one(tx, query, params)
        if row is None:
            raise StoreError(f"{what} insert returned no row")
        return row

    def _now(self, now: datetime | None = None) -> datetime:
        return to_utc(now) if now is not None else self._clock()
