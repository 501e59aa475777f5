"""A content-addressed ECR cache in one SQLite file, and `CachedReasoner`, which skips generation on hits.

The key hashes everything that changes a trace: the reasoner's description (model id, revision,
generation parameters), the prompt version and the task's prompt text, the task, the instruction,
the text, and the pixels of every image and video frame (`tte_hf.models.tte.fingerprints.ecr_cache_key`, the
scheme the sentence-transformers module's ECR cache uses too). SQLite in WAL mode lets any number of
readers work alongside one writer (other writers wait on the lock, up to ``timeout`` seconds). WAL
needs shared memory between the processes: the file must live on one host's local disk (several
processes on that host may share it; replicas on other hosts over NFS may not).

``best_effort=True`` (the server's mode) makes the cache optional: a locked, corrupt or read-only
file turns reads into misses and writes into no-ops, logged once per kind of error, instead of
failing the caller. Opening a file that is not an SQLite database raises `CacheFileError` naming it
in either mode (at start-up: it is the operator's file, so it is not moved or deleted here).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..models.tte.fingerprints import ecr_cache_key as cache_key
from ..models.tte.reasoner_base import ReasoningBackend, ReasoningRequest

logger = logging.getLogger(__name__)

_SCHEMA = "CREATE TABLE IF NOT EXISTS ecr (key TEXT PRIMARY KEY, trace TEXT NOT NULL, created REAL NOT NULL)"


class CacheFileError(ValueError):
    """The cache file exists but is not a usable SQLite ECR cache."""


class ECRCache:
    """Raw traces by key in the SQLite file ``path`` (created with its folder if missing)."""

    def __init__(self, path: str | Path, timeout: float = 60.0, best_effort: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout, self.best_effort = timeout, best_effort
        self._local = threading.local()  # sqlite connections must not cross threads
        self._reported: set[str] = set()
        self._report_lock = threading.Lock()
        self.errors = 0  #: sqlite errors absorbed in best-effort mode
        try:
            with self._connection() as conn:
                conn.execute(_SCHEMA)
        except sqlite3.DatabaseError as err:
            if "not a database" in str(err) or "malformed" in str(err):
                self.close()
                raise CacheFileError(
                    f"ECR cache {str(self.path)!r} is not a readable SQLite database ({err}); it only holds "
                    "cached traces: move it aside or delete it, and a new one is created."
                ) from err
            if not best_effort:
                raise
            self._absorb(err, "open")

    def _absorb(self, err: sqlite3.Error, operation: str) -> None:
        """Best-effort mode: count the error and log it the first time this kind is seen (a locked file
        fails every read and write alike: one warning, not one per request)."""
        kind = f"{type(err).__name__}: {err}"
        with self._report_lock:
            self.errors += 1
            first = kind not in self._reported
            self._reported.add(kind)
        if first:
            logger.warning(
                "ECR cache %s unusable (%s on %s); serving without it until it works again.", self.path, kind, operation
            )
        self.close()  # a fresh connection next time (the file may have been replaced)

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.timeout)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error:
                conn.close()
                raise
            self._local.conn = conn
        return conn

    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        """The cached traces of those ``keys`` that are present (best-effort: none on an error)."""
        try:
            return self._get_many(keys)
        except sqlite3.Error as err:
            if not self.best_effort:
                raise
            self._absorb(err, "read")
            return {}

    def put_many(self, items: dict[str, str]) -> None:
        """Store ``key -> trace`` pairs in one transaction (best-effort: nothing stored on an error)."""
        try:
            self._put_many(items)
        except sqlite3.Error as err:
            if not self.best_effort:
                raise
            self._absorb(err, "write")

    def _get_many(self, keys: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        conn = self._connection()
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):  # SQLite caps the number of bound parameters
            part = unique[start : start + 500]
            rows = conn.execute(f"SELECT key, trace FROM ecr WHERE key IN ({','.join('?' * len(part))})", part)
            found.update(rows.fetchall())
        return found

    def _put_many(self, items: dict[str, str]) -> None:
        now = time.time()
        with self._connection() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO ecr (key, trace, created) VALUES (?, ?, ?)",
                [(k, v, now) for k, v in items.items()],
            )

    def __len__(self) -> int:
        return self._connection().execute("SELECT COUNT(*) FROM ecr").fetchone()[0]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class CachedReasoner(ReasoningBackend):
    """Wraps ``backend``: requests whose trace is in ``cache`` skip generation; misses are generated
    in one call to the backend, stored, and returned in the original order. When the backend fails
    on some requests but reports the others (``err.outputs``, e.g. `PartialGenerationError`), those
    traces are stored before the error is passed on, re-indexed to this call's requests."""

    def __init__(self, backend: ReasoningBackend, cache: ECRCache | str | Path):
        self.backend = backend
        self.cache = cache if isinstance(cache, ECRCache) else ECRCache(cache)
        self.name = backend.name
        self.thread_safe = bool(getattr(backend, "thread_safe", False))  # sqlite connections are per thread
        self.hits = self.misses = 0

    def describe(self) -> dict[str, Any]:
        return self.backend.describe()

    def generate(self, requests: Sequence[ReasoningRequest]) -> list[str]:
        description = self.backend.describe()
        keys = [cache_key(description, r) for r in requests]
        found = self.cache.get_many(keys)
        missing = [i for i, k in enumerate(keys) if k not in found]
        self.hits += len(requests) - len(missing)
        self.misses += len(missing)
        if missing:
            try:
                traces = self.backend.generate([requests[i] for i in missing])
            except Exception as err:
                self._keep_partial(err, keys, missing, found)
                raise
            if len(traces) != len(missing):
                raise RuntimeError(f"{self.backend.name} returned {len(traces)} traces for {len(missing)} requests.")
            fresh = {keys[i]: t for i, t in zip(missing, traces)}
            self.cache.put_many(fresh)
            found.update(fresh)
        return [found[k] for k in keys]

    def _keep_partial(self, err: Exception, keys: list[str], missing: list[int], found: dict[str, str]) -> None:
        partial = getattr(err, "outputs", None)
        if not isinstance(partial, (list, tuple)) or len(partial) != len(missing):
            return
        fresh = {keys[i]: t for i, t in zip(missing, partial) if isinstance(t, str) and t.strip()}
        if fresh:
            self.cache.put_many(fresh)
        # the error now speaks of this call's requests: cached ones are answered, fresh ones too
        found.update(fresh)
        err.outputs = [found.get(k) for k in keys]
        details = getattr(err, "errors", None) or {}
        err.errors = {i: str(details.get(j, err)) for j, i in enumerate(missing) if keys[i] not in found}
