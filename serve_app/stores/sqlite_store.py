"""SQLite job store: the zero-setup default for a laptop or a single node.

One connection serves the whole process (guarded by a lock, since callers use threads); every
write runs in `BEGIN IMMEDIATE`, which takes the database write lock up front, so several
processes sharing one file also never lease the same job twice.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import Conflict, NotFound, StoreError, StoreUnavailable
from .guard import StoreTuning
from .job_store import load_queries
from .records import Row, canonical_json, to_utc, utcnow
from .sql_base import Clock, Tx
from .sql_store import SqlJobStore

MEMORY = ":memory:"


def _adapt(value: Any) -> Any:
    if isinstance(value, datetime):
        # Fixed width (always microseconds, always +00:00) keeps text order == time order.
        return to_utc(value).isoformat(timespec="microseconds")
    if isinstance(value, dict | list):
        return canonical_json(value)
    return value


def _dict_row(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> dict[str, Any]:
    return {col[0]: value for col, value in zip(cursor.description, values, strict=True)}


def _statements(sql: str) -> Iterator[str]:
    """Split a script with SQLite's own completeness check (handles strings and triggers)."""
    pending = ""
    for line in sql.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
    leftover = [ln for ln in pending.splitlines() if ln.strip() and not ln.strip().startswith("--")]
    if leftover:
        raise StoreError(f"incomplete SQL statement at end of script: {leftover[0]!r}")


def _map_error(exc: sqlite3.Error) -> StoreError:
    message = str(exc)
    if isinstance(exc, sqlite3.IntegrityError):
        if "FOREIGN KEY" in message:
            return NotFound(message)
        return Conflict(message)
    if isinstance(exc, sqlite3.OperationalError) and "locked" in message:
        return StoreUnavailable(message)
    return StoreError(message)


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection, queries: Mapping[str, str]) -> None:
        self._conn = conn
        self._queries = queries

    def rows(self, query: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        adapted = {key: _adapt(value) for key, value in (params or {}).items()}
        # fetchall() runs the statement to completion, so RETURNING writes are fully applied.
        return self._conn.execute(self._queries[query], adapted).fetchall()

    def script(self, sql: str) -> None:
        # Not executescript(): it would COMMIT the transaction migrate() is running in.
        for statement in _statements(sql):
            self._conn.execute(statement)


def _connect(target: str, busy_timeout_s: float) -> sqlite3.Connection:
    """Open a connection (autocommit: we issue BEGIN/COMMIT ourselves) in WAL mode."""
    deadline = time.monotonic() + busy_timeout_s
    while True:
        # A short timeout first: two connections switching a new file to WAL at once can
        # deadlock, and a fresh connection then finds the file already in WAL mode.
        conn = sqlite3.connect(target, timeout=0.5, isolation_level=None, check_same_thread=False)
        try:
            if target != MEMORY:
                # WAL lets readers proceed while a writer holds the lock. fetchall(): an
                # unfinished statement would keep a read lock and block other connections.
                conn.execute("PRAGMA journal_mode = WAL").fetchall()
                conn.execute("PRAGMA synchronous = NORMAL")
            break
        except sqlite3.OperationalError as exc:
            conn.close()
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.row_factory = _dict_row
    return conn


class SqliteJobStore(SqlJobStore):
    """Job store in one SQLite file (or `:memory:` for tests)."""

    dialect = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_s: float = 30.0,
        tuning: StoreTuning | None = None,
        clock: Clock = utcnow,
    ):
        super().__init__(clock)
        self._use_guard("sqlite", tuning)
        self._queries = load_queries(self.dialect)
        self._lock = threading.RLock()
        target = str(path)
        try:
            if target != MEMORY:
                target = str(Path(target).expanduser())
                Path(target).parent.mkdir(parents=True, exist_ok=True)
            conn = _connect(target, busy_timeout_s)
        except sqlite3.Error as exc:
            raise _map_error(exc) from exc
        except OSError as exc:
            raise StoreUnavailable(f"cannot open SQLite database {target}: {exc}") from exc
        self._conn: sqlite3.Connection | None = conn
        self.path = target

    @contextmanager
    def _open_transaction(self, write: bool = True) -> Iterator[Tx]:
        with self._lock:
            if self._conn is None:
                raise StoreError("job store is closed")
            conn = self._conn
            try:
                # IMMEDIATE takes the write lock now, so a read-then-write (lease_next,
                # migrate) cannot be overtaken by another process between its statements.
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield _SqliteTx(conn, self._queries)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise _map_error(exc) from exc

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        self.guard.close()
