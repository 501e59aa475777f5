"""Dynamic micro-batching: one worker thread owns the model and encodes many requests per call.

Requests enter a bounded queue (`submit` raises `QueueFull` when it is full, `Closed` after `close`).
The worker takes the first waiting request, collects more for up to ``window`` seconds or until
``max_batch`` items, groups them by `BatchKey` (side, think, dimensions) and calls the encode
function once per group; each request's future gets exactly its own rows. When a group's call
fails it is split in halves (requests, then a failing request's items), each half retried, so an
error (e.g. the reasoner failing on one input) reaches only the requests it belongs to, naming the
item, after about 2·log2(n) calls instead of n. A request whose future was cancelled (its client
timed out) before the worker reached it is skipped. `close` waits a bounded time.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np


class BatchKey(NamedTuple):
    """What must be equal for inputs to share one encode call."""

    side: str
    think: Any
    dimensions: int | None


class QueueFull(Exception):
    """The request queue is full: the client should retry later (HTTP 429)."""


class Closed(Exception):
    """The batcher is shutting down and accepts no new work (HTTP 503)."""


class ItemError(Exception):
    """Encoding failed for input ``index`` of a request; ``error`` is the cause."""

    def __init__(self, index: int, error: BaseException):
        super().__init__(f"input[{index}]: {error}")
        self.index, self.error = index, error


@dataclass
class _Job:
    key: BatchKey
    inputs: list[Any]
    on_start: Callable[[], None] | None = None
    future: Future = field(default_factory=Future)


_STOP = object()

EncodeFn = Callable[[list[Any], BatchKey], np.ndarray]


class MicroBatcher:
    """Groups concurrent requests into batched ``encode(inputs, key) -> (n, dim) array`` calls."""

    def __init__(
        self,
        encode: EncodeFn,
        *,
        max_batch: int = 32,
        window: float = 0.005,
        max_queue: int = 1024,
        scope: Callable[[], AbstractContextManager] | None = None,
    ):
        """``scope()`` is entered around each batch and the retries that narrow its failures down
        (the server passes the reasoner guard's `remembering_failures`)."""
        if max_batch < 1 or max_queue < 1 or window < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and window >= 0.")
        self.scope = scope or contextlib.nullcontext
        self.encode, self.max_batch, self.window, self.max_queue = encode, max_batch, window, max_queue
        self._queue: queue.Queue = queue.Queue()  # bounded by submit (so close can always enqueue _STOP)
        self._closed = False
        self._lock = threading.Lock()
        self.calls: list[int] = []  #: rows per encode call, for tests and monitoring (last 10 000)
        self._thread = threading.Thread(target=self._run, name="tte-microbatcher", daemon=True)
        self._thread.start()

    def submit(self, inputs: Sequence[Any], key: BatchKey, on_start: Callable[[], None] | None = None) -> Future:
        """Queue one request; its future resolves to an ``(len(inputs), dim)`` float32 array.
        ``on_start`` runs on the worker when it takes the request."""
        job = _Job(key, list(inputs), on_start)
        with self._lock:
            if self._closed:
                raise Closed("the server is shutting down.")
            if self._queue.qsize() >= self.max_queue:
                raise QueueFull(f"the request queue is full ({self.max_queue} requests waiting).")
            self._queue.put_nowait(job)
        return job.future

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def close(self, timeout: float | None = None) -> bool:
        """Stop accepting work, finish the queued requests, then stop the worker; after ``timeout``
        seconds (e.g. a hung reasoner) the requests still queued fail with `Closed` and the worker
        (a daemon thread) is abandoned. Returns whether the worker finished."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put_nowait(_STOP)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            return True
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return False
            if job is not _STOP and job.future.set_running_or_notify_cancel():
                job.future.set_exception(Closed("the server shut down before this request's turn."))

    # --- worker ---------------------------------------------------------------------------------

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            if not _start(first):
                continue  # the client went away before its turn
            jobs, size = [first], len(first.inputs)
            deadline = time.monotonic() + self.window
            while size < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    stop = True
                    break
                if _start(job):
                    jobs.append(job)
                    size += len(job.inputs)
            try:
                with self.scope():
                    self._process(jobs)
            except BaseException as err:  # noqa: BLE001 - the worker must survive anything
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(err)

    def _process(self, jobs: list[_Job]) -> None:
        groups: dict[BatchKey, list[_Job]] = {}
        for job in jobs:
            groups.setdefault(job.key, []).append(job)
        for key, group in groups.items():
            self._encode_group(key, group)

    def _call(self, inputs: list[Any], key: BatchKey) -> np.ndarray:
        vectors = np.asarray(self.encode(inputs, key), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(inputs):
            raise RuntimeError(f"the encoder returned shape {vectors.shape} for {len(inputs)} inputs.")
        if len(self.calls) >= 10_000:
            del self.calls[:5_000]
        self.calls.append(len(inputs))
        return vectors

    def _encode_group(self, key: BatchKey, group: list[_Job]) -> None:
        inputs = [item for job in group for item in job.inputs]
        try:
            vectors = self._call(inputs, key)
        except BaseException as err:  # noqa: BLE001 - narrowed down below, then delivered to the futures
            if len(group) > 1:
                half = len(group) // 2
                self._encode_group(key, group[:half])
                self._encode_group(key, group[half:])
            else:
                self._isolate(group[0], err)
            return
        start = 0
        for job in group:
            end = start + len(job.inputs)
            job.future.set_result(vectors[start:end])
            start = end

    def _isolate(self, job: _Job, err: BaseException) -> None:
        """Answer a request whose whole call failed with ``err``: halves are retried until the failing
        item is found (`ItemError`); if every part succeeds alone, the request gets those rows."""
        try:
            vectors = self._narrow(job, 0, len(job.inputs), err)
        except ItemError as item_err:
            job.future.set_exception(item_err)
        else:
            job.future.set_result(vectors)

    def _narrow(self, job: _Job, start: int, end: int, err: BaseException) -> np.ndarray:
        if end - start == 1:
            raise ItemError(start, err)
        middle = (start + end) // 2
        parts = []
        for lo, hi in ((start, middle), (middle, end)):
            try:
                parts.append(self._call(job.inputs[lo:hi], job.key))
            except BaseException as part_err:  # noqa: BLE001
                parts.append(self._narrow(job, lo, hi, part_err))
        return np.concatenate(parts)


def _start(job: _Job) -> bool:
    """Mark ``job`` running (False: its future was cancelled) and tell its owner."""
    if not job.future.set_running_or_notify_cancel():
        return False
    if job.on_start is not None:
        job.on_start()
    return True
