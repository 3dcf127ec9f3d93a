"""Postgres job store (psycopg 3 + a small connection pool): the durable production backend."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from .errors import Conflict, NotFound, StoreError, StoreUnavailable
from .guard import StoreTuning
from .job_store import load_queries
from .records import Row, to_utc, utcnow
from .sql_base import Clock, Tx
from .sql_store import SqlJobStore

# `:name` -> `%(name)s`; the lookbehind leaves `::type` casts and `12:30`-style text alone.
_PARAM_RE = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def _to_pyformat(sql: str) -> str:
    return _PARAM_RE.sub(r"%(\1)s", sql)


def _adapt(value: Any) -> Any:
    if isinstance(value, datetime):
        return to_utc(value)
    if isinstance(value, dict | list):
        return Jsonb(value)
    return value


def _map_error(exc: psycopg.Error) -> StoreError:
    message = str(exc).strip() or type(exc).__name__
    if isinstance(exc, pg_errors.ForeignKeyViolation):
        return NotFound(message)
    if isinstance(exc, pg_errors.IntegrityError):
        return Conflict(message)
    # OperationalError covers lost connections, pool timeouts and admin shutdowns.
    if isinstance(exc, psycopg.OperationalError | pg_errors.QueryCanceled):
        return StoreUnavailable(message)
    return StoreError(message)


class _PgTx:
    def __init__(self, conn: psycopg.Connection[Row], queries: Mapping[str, bytes]) -> None:
        self._conn = conn
        self._queries = queries

    def rows(self, query: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        adapted = {key: _adapt(value) for key, value in (params or {}).items()}
        with self._conn.cursor() as cur:
            cur.execute(self._queries[query], adapted)
            return cur.fetchall() if cur.description is not None else []

    def script(self, sql: str) -> None:
        # Without parameters psycopg sends the text as one simple query: several statements
        # in one round trip, still inside the surrounding transaction.
        self._conn.execute(sql.encode())


class PostgresJobStore(SqlJobStore):
    """Job store in Postgres; safe for several tracker processes (SKIP LOCKED leasing)."""

    dialect = "postgres"

    def __init__(
        self,
        conninfo: str,
        *,
        tuning: StoreTuning | None = None,
        clock: Clock = utcnow,
    ) -> None:
        super().__init__(clock)
        tuning = tuning or StoreTuning()
        self._use_guard("postgres", tuning)
        # Bytes: psycopg's typed API wants literal or bytes queries, not arbitrary str.
        self._queries = {k: _to_pyformat(v).encode() for k, v in load_queries(self.dialect).items()}
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[Row]] = (
            psycopg_pool.ConnectionPool(
                conninfo,
                min_size=1,
                max_size=tuning.pool_max_size,
                # Short: while the server is down a caller waits this long, not 30 s.
                timeout=tuning.pool_timeout_s,
                open=False,
                # Autocommit so that every unit of work is an explicit `conn.transaction()`.
                kwargs={
                    "autocommit": True,
                    "row_factory": dict_row,
                    # libpq rounds below 2 s up to 2 s.
                    "connect_timeout": max(2, math.ceil(tuning.connect_timeout_s)),
                    "options": f"-c statement_timeout={int(tuning.statement_timeout_s * 1000)}",
                },
                # Re-validate idle connections: the server may have restarted since they were used.
                check=psycopg_pool.ConnectionPool.check_connection,
                name="job-store",
                # Give a failed reconnect up soon: the next caller (the breaker's probe) starts
                # a fresh attempt at once, where the pool's own backoff would wait 8 s and more.
                reconnect_timeout=tuning.pool_timeout_s,
            )
        )
        try:
            # Start-up may wait for the server longer than a request would.
            self._pool.open(wait=True, timeout=tuning.open_timeout_s)
        except psycopg.Error as exc:
            self._pool.close()
            raise StoreUnavailable(f"cannot connect to Postgres: {exc}") from exc

    @contextmanager
    def _open_transaction(self, write: bool = True) -> Iterator[Tx]:
        try:
            with self._pool.connection() as conn, conn.transaction():
                yield _PgTx(conn, self._queries)
        except psycopg.Error as exc:
            raise _map_error(exc) from exc

    def close(self) -> None:
        self._pool.close()
        self.guard.close()
