"""The `close()`-plus-`with` contract the blob and job stores share."""

from __future__ import annotations

import abc
from typing import Self


class Closeable(abc.ABC):
    """Holds connections or clients until `close()`; a `with` block closes it on exit."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections and clients; the store is unusable afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
