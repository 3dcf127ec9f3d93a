"""Store exceptions: the only error types that leave `serve_app.stores`.

Every store catches its driver's errors (sqlite3, psycopg, botocore, redis) at the boundary and
re-raises one of these, chaining the original as `__cause__` for logs.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class for every storage failure."""


class NotFound(StoreError):
    """The job, object or key does not exist (or belongs to another tenant)."""


class Conflict(StoreError):
    """The write contradicts existing state, e.g. an idempotency key reused for another request."""


class StoreUnavailable(StoreError):
    """The backing server cannot be reached or timed out; retrying later may succeed."""


class Unsupported(StoreError):
    """The backend cannot do this operation (e.g. presigned uploads on a local folder)."""


class InvalidKey(StoreError):
    """A blob key is empty, absolute or would escape the store's root."""
