"""Where a work directory's lease file lives: exclusive create and compare-and-swap on a local disk or gs://.

Every store offers the same four operations (``Store``); ``version`` is what ``read`` returned, and
``replace`` / ``delete`` succeed only while the file is still at that version:

- ``LocalStore``: ``O_CREAT | O_EXCL`` to create; read-compare-write under an ``flock`` of the directory;
- ``GCSStore``: every write conditional on the object's generation (0: "only if absent");
- ``EpathStore``: any ``etils.epath`` path (gs:// without the google-cloud-storage client, through TensorFlow's
  gfile or fsspec, whichever is installed), best effort: its create and replace are not atomic, and a warning
  says so.

The protocol that uses them (holder, expiry, heartbeat, take-over) is ``xlmp_jax.runtime.lease``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import uuid
from collections.abc import Iterator
from typing import Any, Protocol

from etils import epath

LEASE_FILE = "lease.json"

log = logging.getLogger(__name__)


class Store(Protocol):
    """The lease file's storage; ``version`` is what ``read`` returned, for compare-and-swap."""

    where: str

    def read(self) -> tuple[str, Any] | None: ...

    def create(self, text: str) -> bool: ...

    def replace(self, text: str, version: Any) -> bool: ...

    def delete(self, version: Any) -> bool: ...


class LocalStore:
    """A lease file on a local (or NFS) disk; read-compare-write under an ``flock`` of the directory."""

    def __init__(self, directory: str):
        self.directory = directory
        self.where = os.path.join(directory, LEASE_FILE)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:  # a filesystem without flock on directories: exclusive create still holds
                pass
            yield
        finally:
            os.close(fd)  # releases the flock

    def _read(self) -> str | None:
        try:
            with open(self.where, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def read(self) -> tuple[str, Any] | None:
        with self._locked():
            text = self._read()
        return None if text is None else (text, text)

    def create(self, text: str) -> bool:
        with self._locked():
            try:
                fd = os.open(self.where, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            return True

    def replace(self, text: str, version: Any) -> bool:
        with self._locked():
            if self._read() != version:
                return False
            tmp = f"{self.where}.{uuid.uuid4().hex}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.where)
            return True

    def delete(self, version: Any) -> bool:
        with self._locked():
            if self._read() != version:
                return False
            os.remove(self.where)
            return True


class GCSStore:
    """A lease object on gs://, every write conditional on the object's generation (0: "must not exist")."""

    def __init__(self, url: str):
        from google.api_core import exceptions  # google-cloud-storage: optional, only for a gs:// lease
        from google.cloud import storage

        bucket, _, prefix = url.removeprefix("gs://").partition("/")
        name = f"{prefix.rstrip('/')}/{LEASE_FILE}" if prefix.strip("/") else LEASE_FILE
        self.where = f"gs://{bucket}/{name}"
        self._bucket = storage.Client().bucket(bucket)
        self._name = name
        self._conflict = (exceptions.PreconditionFailed, exceptions.NotFound)

    def read(self) -> tuple[str, Any] | None:
        blob = self._bucket.get_blob(self._name)
        if blob is None:
            return None
        try:
            text = blob.download_as_bytes(if_generation_match=blob.generation).decode("utf-8", "replace")
        except self._conflict:  # rewritten or deleted between the two calls: read again
            return self.read()
        return text, blob.generation

    def _upload(self, text: str, generation: int) -> bool:
        try:
            self._bucket.blob(self._name).upload_from_string(
                text, content_type="application/json", if_generation_match=generation
            )
            return True
        except self._conflict:
            return False

    def create(self, text: str) -> bool:
        return self._upload(text, 0)

    def replace(self, text: str, version: Any) -> bool:
        return self._upload(text, int(version))

    def delete(self, version: Any) -> bool:
        try:
            self._bucket.blob(self._name).delete(if_generation_match=int(version))
            return True
        except self._conflict:
            return False


class EpathStore:
    """Any ``etils.epath`` path (gs:// without the GCS client): best effort, create and replace are not atomic."""

    def __init__(self, directory: str):
        self.where = f"{directory.rstrip('/')}/{LEASE_FILE}"
        self._path = epath.Path(self.where)
        log.warning(
            "%s: google-cloud-storage is not installed, so the lease is written without the atomic create "
            "that keeps two simultaneous starts apart (pip install google-cloud-storage)",
            self.where,
        )

    def read(self) -> tuple[str, Any] | None:
        if not self._path.exists():
            return None
        text = self._path.read_text()
        return text, text

    def _write(self, text: str) -> None:
        self._path.write_text(text)

    def create(self, text: str) -> bool:
        if self._path.exists():
            return False
        self._write(text)
        return True

    def replace(self, text: str, version: Any) -> bool:
        current = self.read()
        if current is None or current[0] != version:
            return False
        self._write(text)
        return True

    def delete(self, version: Any) -> bool:
        current = self.read()
        if current is None or current[0] != version:
            return False
        self._path.unlink()
        return True


def store_for(workdir: str) -> Store:
    """The lease's storage for a work directory: local path, gs:// (GCS client or etils.epath), other URLs."""
    if workdir.startswith("gs://"):
        try:
            return GCSStore(workdir)
        except ImportError:
            return EpathStore(workdir)
    if "://" in workdir:
        return EpathStore(workdir)
    return LocalStore(workdir)
