"""Read a PyTorch checkpoint into numpy arrays without importing torch.

A `.pt` file is pickles plus raw tensor storages: the legacy format (torch < 1.6: magic
number, protocol version, sys info, the object pickle, the storage keys, then each storage
as an int64 element count and its bytes) or the zip format (`<name>/data.pkl` and one
`<name>/data/<key>` entry per storage). The unpickler is restricted: it resolves only the
few globals a state dict needs (`OrderedDict`, the tensor rebuild helpers, the storage
types), so a checkpoint cannot run code while it loads.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class CheckpointError(ValueError):
    """The file is not a checkpoint this reader understands (or it asks for other code)."""


@dataclass
class _Storage:
    dtype: type[np.generic]
    data: np.ndarray | None = None


@dataclass
class _Tensor:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def array(self) -> np.ndarray:
        if self.storage.data is None:
            raise CheckpointError("a tensor's storage is missing from the checkpoint")
        flat = self.storage.data
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :],
            shape=self.shape,
            strides=tuple(s * item for s in self.stride),
        )
        return np.array(view)  # own the memory, contiguous


def _rebuild_tensor(
    storage: _Storage, offset: int, shape: tuple[int, ...], stride: tuple[int, ...], *_: Any
) -> _Tensor:
    return _Tensor(storage, offset, tuple(shape), tuple(stride))


def _rebuild_parameter(tensor: _Tensor, *_: Any) -> _Tensor:
    return tensor


@dataclass
class _StorageType:
    name: str


class _Unpickler(pickle.Unpickler):
    """Maps storages to `_Storage` holders, filled once their bytes have been read."""

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointError(f"checkpoint refers to {module}.{name}, which is not allowed")

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise CheckpointError("unexpected persistent id in checkpoint")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError("unexpected storage type in checkpoint")
        if key not in self.storages:
            self.storages[key] = _Storage(_STORAGE_DTYPES[storage_type.name])
        return self.storages[key]


def _arrays(obj: Any) -> Any:
    if isinstance(obj, _Tensor):
        return obj.array()
    if isinstance(obj, dict):
        return {k: _arrays(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_arrays(v) for v in obj)
    return obj


def _load_legacy(f: IO[bytes]) -> Any:
    if _Unpickler(f).load() != _LEGACY_MAGIC:
        raise CheckpointError("not a PyTorch checkpoint (bad magic number)")
    _Unpickler(f).load()  # protocol version
    _Unpickler(f).load()  # sys info: a dict of ints and bools
    unpickler = _Unpickler(f)
    result = unpickler.load()
    keys = _Unpickler(f).load()
    for key in keys:
        storage = unpickler.storages[str(key)]
        (count,) = struct.unpack("<q", f.read(8))
        itemsize = np.dtype(storage.dtype).itemsize
        storage.data = np.frombuffer(f.read(count * itemsize), dtype=storage.dtype)
    return result


def _load_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        pkl = next((n for n in archive.namelist() if n.endswith("/data.pkl")), None)
        if pkl is None:
            raise CheckpointError("zip checkpoint without data.pkl")
        prefix = pkl[: -len("data.pkl")]
        unpickler = _Unpickler(io.BytesIO(archive.read(pkl)))
        result = unpickler.load()
        for key, storage in unpickler.storages.items():
            raw = archive.read(f"{prefix}data/{key}")
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return result


def load_checkpoint(path: Path) -> Any:
    """The checkpoint's object with every tensor as a numpy array (float32 stays float32)."""
    if zipfile.is_zipfile(path):
        return _arrays(_load_zip(path))
    with open(path, "rb") as f:
        try:
            return _arrays(_load_legacy(f))
        except (pickle.UnpicklingError, EOFError, struct.error) as exc:
            raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
