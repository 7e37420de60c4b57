"""Filesystem object store of per-subject export files.

Layout::

    <root>/<subject_type>/<sha256 hex of the subject key>/_subject        the subject key
    <root>/<subject_type>/<sha256 hex of the subject key>/<data_class>/<object name>

The hash only makes a safe directory name; ``_subject`` maps a directory back to its
subject for audits. An object's modification time, in epoch milliseconds, is its update
time, so ``apply`` deletes objects whose mtime is at or before the cut-off. When a subject
has no objects left, its directory and ``_subject`` file are removed too, so the subject
key does not outlive the data. Receipts live in a ``ReceiptBook`` beside the root.
"""

from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from tombstone.errors import StoreUnavailableError
from tombstone.models import DeletionRequest, parse_subject_key
from tombstone.spec import ObjectStoreConfig
from tombstone.stores.base import Outcome, ReceiptBook, Store, cutoff_ms

SUBJECT_FILE = "_subject"
_MAX_NAME_BYTES = 255


class ObjectStore(Store):
    kind = "objects"

    def __init__(self, name: str, config: ObjectStoreConfig) -> None:
        super().__init__(name)
        self.config = config
        self.root = Path(config.root)
        self.receipts = ReceiptBook(self.root.parent / f"{name}.receipts.sqlite")

    def open(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.receipts.open()
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailableError(f"Object store {self.name} cannot open {self.root}: {exc}") from exc

    def close(self) -> None:
        self.receipts.close()

    def subject_dir(self, subject_key: str) -> Path:
        """Directory of one subject's objects, named by the SHA-256 hex digest of the subject key."""
        subject_type, _ = parse_subject_key(subject_key)
        return self.root / subject_type / hashlib.sha256(subject_key.encode("utf-8")).hexdigest()

    def put_object(self, subject_key: str, object_name: str, data: bytes, data_class: str,
                   modified_at_ms: int | None = None) -> Path:
        """Write one object atomically and durably, and return its path.

        ``modified_at_ms`` sets the object's mtime, which is its update time. By default the
        mtime is the time of the write. Raises ValueError for an object name that is not a plain
        file name, and InvalidRequestError for an invalid subject key.
        """
        _check_object_name(object_name)
        _check_object_name(data_class)
        subject_dir = self.subject_dir(subject_key)
        class_dir = subject_dir / data_class
        class_dir.mkdir(parents=True, exist_ok=True)
        _write_durably(subject_dir / SUBJECT_FILE, subject_key.encode("utf-8"))
        target = class_dir / object_name
        _write_durably(target, data, modified_at_ms)
        return target

    def apply(self, requests: Sequence[DeletionRequest]) -> dict[str, Outcome]:
        """Delete each request's objects, fsync their directories, then record receipts.

        A request with a receipt has its delete run again, but reports the receipt.
        """
        unique = list({r.request_id: r for r in requests}.values())
        try:
            receipts = self.receipts.lookup(r.request_id for r in unique)
            deleted = {r.request_id: self._delete(r) for r in unique}
            outcomes = {
                r.request_id: receipts.get(r.request_id) or Outcome.from_count(deleted[r.request_id])
                for r in unique
            }
            self.receipts.record(outcomes)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailableError(f"Object store {self.name} failed: {exc}") from exc
        return outcomes

    def _delete(self, request: DeletionRequest) -> int:
        subject_dir = self.subject_dir(request.subject_key)
        class_dir = subject_dir / request.data_class
        cutoff = cutoff_ms(request)
        deleted = 0
        for path, modified_ms in _objects(class_dir):
            if modified_ms > cutoff:
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            deleted += 1
        if deleted:
            _fsync_dir(class_dir)
            _prune(subject_dir, class_dir)
        return deleted

    def count_remaining(self, requests: Sequence[DeletionRequest]) -> dict[str, int]:
        try:
            return {r.request_id: self._count(r) for r in requests}
        except OSError as exc:
            raise StoreUnavailableError(f"Object store {self.name} failed to count: {exc}") from exc

    def _count(self, request: DeletionRequest) -> int:
        class_dir = self.subject_dir(request.subject_key) / request.data_class
        cutoff = cutoff_ms(request)
        return sum(1 for _, modified_ms in _objects(class_dir) if modified_ms <= cutoff)

    def scan_subject(self, subject_key: str, data_class: str | None = None) -> int:
        subject_dir = self.subject_dir(subject_key)
        try:
            class_dirs = [entry for entry in _entries(subject_dir) if entry.is_dir(follow_symlinks=False)
                          and (data_class is None or entry.name == data_class)]
            return sum(1 for class_dir in class_dirs for _ in _objects(Path(class_dir.path)))
        except OSError as exc:
            raise StoreUnavailableError(f"Object store {self.name} failed to scan: {exc}") from exc


def _check_object_name(name: str) -> None:
    if (not name or name in (".", "..") or name.startswith(".") or "/" in name or "\0" in name
            or name == SUBJECT_FILE or len(name.encode("utf-8")) > _MAX_NAME_BYTES):
        raise ValueError(
            f"{name!r} is not a valid object or data class name. Use a plain file name of at most "
            f"{_MAX_NAME_BYTES} bytes that does not start with '.' and contains no '/' or NUL."
        )


def _entries(directory: Path) -> list[os.DirEntry[str]]:
    """List a directory; a missing one is empty, because its objects are already gone."""
    try:
        with os.scandir(directory) as it:
            return list(it)
    except FileNotFoundError:
        return []


def _objects(class_dir: Path) -> Iterator[tuple[Path, int]]:
    """Yield each regular file of a data-class directory with its mtime in epoch ms.

    Leftover temporary files of an interrupted ``put_object`` are included: they hold the
    subject's bytes too.
    """
    for entry in _entries(class_dir):
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            modified_ns = entry.stat(follow_symlinks=False).st_mtime_ns
        except FileNotFoundError:
            continue
        yield Path(entry.path), modified_ns // 1_000_000


def _prune(subject_dir: Path, class_dir: Path) -> None:
    """Remove an emptied data-class directory, and the subject directory once no class is left.

    NOTE: a ``put_object`` for the same subject that runs at the same moment can find its
    directory gone and fail with FileNotFoundError. The loader should retry it.
    """
    if not _remove_empty_dir(class_dir):
        return
    entries = _entries(subject_dir)
    if not any(entry.is_dir(follow_symlinks=False) for entry in entries):
        # Only _subject is left, with any temporary copy of it from an interrupted write.
        for entry in entries:
            Path(entry.path).unlink(missing_ok=True)
        if _remove_empty_dir(subject_dir):
            _fsync_dir(subject_dir.parent)
            return
    _fsync_dir(subject_dir)


def _remove_empty_dir(directory: Path) -> bool:
    try:
        directory.rmdir()
    except FileNotFoundError:
        return True
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise
    return True


def _write_durably(target: Path, data: bytes, modified_at_ms: int | None = None) -> None:
    """Write to a temporary file in the same directory, fsync it and rename it into place."""
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=".put-")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if modified_at_ms is not None:
            modified_ns = modified_at_ms * 1_000_000
            os.utime(temporary, ns=(modified_ns, modified_ns))
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
    """Make renames and unlinks in a directory durable."""
    try:
        descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
