"""Dynamic micro-batching: one worker thread owns the model and encodes many requests per call.

Requests enter a bounded queue (`submit` raises `QueueFull` when it is full, `Closed` after `close`).
The worker takes the first waiting request, collects more for up to ``window`` seconds or until
``max_batch`` items, groups them by `BatchKey` (side, think, dimensions) and calls the encode
function once per group; each request's future gets exactly its own rows. When a group's call
fails, its requests are retried one by one, and a failing request item by item, so an error
(e.g. the reasoner failing on one input) reaches only the requests it belongs to, naming the item.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
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
    future: Future = field(default_factory=Future)


_STOP = object()

EncodeFn = Callable[[list[Any], BatchKey], np.ndarray]


class MicroBatcher:
    """Groups concurrent requests into batched ``encode(inputs, key) -> (n, dim) array`` calls."""

    def __init__(self, encode: EncodeFn, *, max_batch: int = 32, window: float = 0.005, max_queue: int = 1024):
        if max_batch < 1 or max_queue < 1 or window < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and window >= 0.")
        self.encode, self.max_batch, self.window = encode, max_batch, window
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._closed = False
        self._lock = threading.Lock()
        self.calls: list[int] = []  #: rows per encode call, for tests and monitoring (last 10 000)
        self._thread = threading.Thread(target=self._run, name="tte-microbatcher", daemon=True)
        self._thread.start()

    def submit(self, inputs: Sequence[Any], key: BatchKey) -> Future:
        """Queue one request; its future resolves to an ``(len(inputs), dim)`` float32 array."""
        job = _Job(key, list(inputs))
        with self._lock:
            if self._closed:
                raise Closed("the server is shutting down.")
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                raise QueueFull(f"the request queue is full ({self._queue.maxsize} requests waiting).") from None
        return job.future

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting work, finish every queued request, then stop the worker."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)  # blocks only while the queue is full; the worker keeps draining it
        self._thread.join(timeout)

    # --- worker ---------------------------------------------------------------------------------

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            if not first.future.set_running_or_notify_cancel():
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
                if job.future.set_running_or_notify_cancel():
                    jobs.append(job)
                    size += len(job.inputs)
            try:
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
        except BaseException as err:  # noqa: BLE001 - isolated below, then delivered to the futures
            if len(group) == 1:
                self._isolate(group[0], err)
            else:
                for job in group:
                    self._encode_group(key, [job])
            return
        start = 0
        for job in group:
            end = start + len(job.inputs)
            job.future.set_result(vectors[start:end])
            start = end

    def _isolate(self, job: _Job, err: BaseException) -> None:
        """Find the item that fails in a failing request (item by item) and report that one."""
        if len(job.inputs) == 1:
            job.future.set_exception(ItemError(0, err))
            return
        for index, item in enumerate(job.inputs):
            try:
                self._call([item], job.key)
            except BaseException as item_err:  # noqa: BLE001
                job.future.set_exception(ItemError(index, item_err))
                return
        job.future.set_exception(err)  # fails only together: report the batch error as is
