"""The `close()`-plus-`with` contract the blob and job stores share."""

from __future__ import annotations

import abc
from typing import Self

from .guard import Guarded


class Closeable(Guarded, abc.ABC):
    """Holds connections or clients until `close()`; a `with` block closes it on exit.

    `guard` (from `Guarded`) is the store's breaker and executor: async callers use
    `await store.guard.run(store.method, ...)`."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections and clients; the store is unusable afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
