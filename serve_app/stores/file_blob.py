"""`FileBlobStore`: objects as files under a root folder, each write durable on return.

A job submit waits for its audio's write here, on one of the Ingress's store threads.
Every syscall such a thread makes gives up the GIL, and taking it back behind a busy event
loop can cost up to the 5 ms switch interval. With about 30 calls per submit (a
`Path.resolve()` per key, `tempfile`'s wrappers, a stat before and after), submits at 50/s
took 100-460 ms in the audio write while `fsync` itself took under 7 ms (p99) on the same
disk at the same moment. So this module counts its syscalls: folders are checked (and made)
once, files are written with `os.open`/`os.write`, and existence is one `lstat`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from .blob import BlobStore, PresignedPost, validate_key
from .errors import InvalidKey, NotFound, StoreError, StoreUnavailable, Unsupported

_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _fsync_dir(path: Path) -> None:
    """Persist a rename: jobs point at blobs, so a committed row must never outlive its file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class FileBlobStore(BlobStore):
    """Objects as files under `root`; writes go to a temp file, then `os.replace()`.

    A key never leaves the root: its folder is resolved once (symlinks that point outside
    are refused) and remembered, and a file that is itself a symlink is neither read nor
    reported as existing. Someone who can swap a checked folder for a symlink can already
    write the root, so the folder check is not repeated per call.
    """

    # One writer: submits that arrive during a round of fsyncs join the next `put_many` and
    # share its syncs. With 4 overlapping writers, each one's fsync waited for the others'
    # journal commits, and at 50 submits/s a few writes took 120-190 ms at once (p99 of the
    # submit 33-243 ms over four rounds; with 1 writer 30-51 ms, back to back).
    write_concurrency = 1

    def __init__(self, root: str | Path) -> None:
        try:
            path = Path(root).expanduser()
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create blob folder {root}: {exc}") from exc
        self.root = path.resolve()
        self._folders: set[Path] = {self.root}  # checked to lie inside the root, and made

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key))

    def _folder(self, path: Path, create: bool) -> bool:
        """Whether `path`'s folder exists (made first if `create`); InvalidKey if it leads
        outside the root."""
        folder = path.parent
        if folder in self._folders:
            return True
        if not folder.resolve().is_relative_to(self.root):
            raise InvalidKey(f"blob path {path} escapes the store root")
        if create:
            folder.mkdir(parents=True, exist_ok=True)
            if not folder.resolve().is_relative_to(self.root):  # raced with a symlink
                raise InvalidKey(f"blob path {path} escapes the store root")
        elif not folder.is_dir():
            return False
        self._folders.add(folder)
        return True

    def _stage(self, path: Path) -> tuple[int, Path]:
        """An open temp file beside `path` (same folder: `os.replace()` is atomic there)."""
        self._folder(path, create=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        return os.open(tmp, _WRITE_FLAGS, 0o644), tmp

    @contextmanager
    def _atomic_target(self, key: str) -> Iterator[int]:
        path = self._path(key)
        try:
            fd, tmp = self._stage(path)
            try:
                yield fd
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                os.unlink(tmp)
                raise
            os.close(fd)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            raise StoreError(f"cannot write blob {key!r}: {exc}") from exc

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        self.put_many([(key, data)])

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Group commit: write every temp file, then fsync them, rename them all, and fsync
        each folder once. The first fsync's journal commit carries the others on ext4/xfs,
        so N objects cost about one round of syncs instead of N."""
        staged: list[tuple[int, Path, Path]] = []
        try:
            try:
                for key, data in items:
                    path = self._path(key)
                    fd, tmp = self._stage(path)
                    staged.append((fd, tmp, path))
                    _write_all(fd, data)
                for fd, _, _ in staged:  # after every write: the first commit carries the rest
                    os.fsync(fd)
            finally:
                for fd, _, _ in staged:
                    os.close(fd)
            for _, tmp, path in staged:
                os.replace(tmp, path)
            for folder in dict.fromkeys(path.parent for _, _, path in staged):
                _fsync_dir(folder)
        except OSError as exc:
            for _, tmp, _ in staged:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            more = f" and {len(items) - 1} more" if len(items) > 1 else ""
            raise StoreError(f"cannot write blob {items[0][0]!r}{more}: {exc}") from exc

    def put_file(self, key: str, path: str | Path, content_type: str | None = None) -> None:
        with (
            self._atomic_target(key) as fd,
            open(path, "rb") as src,
            os.fdopen(os.dup(fd), "wb") as out,  # closed (flushed) before the fsync
        ):
            shutil.copyfileobj(src, out, length=1024 * 1024)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            if not self._folder(path, create=False):
                raise FileNotFoundError(path)
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise NotFound(f"blob {key!r} not found") from exc
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # the file is a symlink: it may point anywhere
                raise InvalidKey(f"blob key {key!r} names a symlink") from exc
            raise StoreError(f"cannot read blob {key!r}: {exc}") from exc
        try:
            with os.fdopen(fd, "rb") as file:
                return file.read()
        except IsADirectoryError as exc:
            raise NotFound(f"blob {key!r} not found") from exc
        except OSError as exc:
            raise StoreError(f"cannot read blob {key!r}: {exc}") from exc

    def exists(self, key: str) -> bool:
        path = self._path(key)
        try:
            return self._folder(path, create=False) and stat.S_ISREG(os.lstat(path).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            if self._folder(path, create=False):
                path.unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot delete blob {key!r}: {exc}") from exc

    def presign_put(self, key: str, max_bytes: int, expires_s: int = 900) -> PresignedPost:
        raise Unsupported("presigned uploads need an S3 blob store")

    def url_for(self, key: str) -> str:
        return self._path(key).as_uri()

    def list_older(self, prefix: str, before: datetime, limit: int) -> list[str]:
        folder = self.root.joinpath(*validate_key(prefix.rstrip("/")))
        cutoff = before.timestamp()
        found: list[str] = []
        for path in folder.rglob("*") if folder.is_dir() else []:
            if len(found) >= limit:
                break
            with contextlib.suppress(OSError):  # deleted meanwhile
                hidden = path.name.startswith(".")  # a put's temp file
                if not hidden and path.is_file() and path.stat().st_mtime < cutoff:
                    found.append(path.relative_to(self.root).as_posix())
        return found

    def close(self) -> None:
        return None  # plain files: nothing is held open between calls
