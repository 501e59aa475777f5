"""A content-addressed ECR cache in one SQLite file, and `CachedReasoner`, which skips generation on hits.

The key hashes everything that changes a trace: the reasoner's description (model id, revision,
generation parameters), the prompt version and the task's prompt text, the task, the instruction,
the text, and the pixels of every image and video frame (`tte_hf.models.tte.fingerprints.ecr_cache_key`, the
scheme the sentence-transformers module's ECR cache uses too). SQLite in WAL mode lets any number of
readers work alongside one writer (other writers wait on the lock, up to ``timeout`` seconds).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..models.tte.fingerprints import ecr_cache_key as cache_key
from ..models.tte.reasoner_base import ReasoningBackend, ReasoningRequest

_SCHEMA = "CREATE TABLE IF NOT EXISTS ecr (key TEXT PRIMARY KEY, trace TEXT NOT NULL, created REAL NOT NULL)"


class ECRCache:
    """Raw traces by key in the SQLite file ``path`` (created with its folder if missing)."""

    def __init__(self, path: str | Path, timeout: float = 60.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self._local = threading.local()  # sqlite connections must not cross threads
        with self._connection() as conn:
            conn.execute(_SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.timeout)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        """The cached traces of those ``keys`` that are present."""
        found: dict[str, str] = {}
        conn = self._connection()
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):  # SQLite caps the number of bound parameters
            part = unique[start : start + 500]
            rows = conn.execute(f"SELECT key, trace FROM ecr WHERE key IN ({','.join('?' * len(part))})", part)
            found.update(rows.fetchall())
        return found

    def put_many(self, items: dict[str, str]) -> None:
        """Store ``key -> trace`` pairs in one transaction."""
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
    in one call to the backend, stored, and returned in the original order."""

    def __init__(self, backend: ReasoningBackend, cache: ECRCache | str | Path):
        self.backend = backend
        self.cache = cache if isinstance(cache, ECRCache) else ECRCache(cache)
        self.name = backend.name
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
            traces = self.backend.generate([requests[i] for i in missing])
            if len(traces) != len(missing):
                raise RuntimeError(f"{self.backend.name} returned {len(traces)} traces for {len(missing)} requests.")
            fresh = {keys[i]: t for i, t in zip(missing, traces)}
            self.cache.put_many(fresh)
            found.update(fresh)
        return [found[k] for k in keys]
