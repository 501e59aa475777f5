"""Budgets enforced before work: how much one request and all waiting requests together may hold.

Every ``/v1/embeddings`` request takes a `Ticket` before its body is read. The ticket holds a place
in the queue (``max_queue`` requests waiting: admitted, not yet started by the model worker) and
reserves, as they become known, the body's bytes, the items, and each image's pixels, read from its
header before anything is decoded. Two pixel counts: the image's full size is what decoding costs
(CPU, and the transient buffer), charged to the request (``request_pixels``); the size it is kept at
(downscaled to what the processor keeps) is the memory it holds while it waits, charged to the
server (``queue_pixels``). A reservation over the request's own budget is a 413 naming the item; one
over what is left of the server-wide budget is a 429 (``Retry-After``), and either way nothing more
of the request is decoded. The ticket gives everything back when the request ends, however it ends.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .schemas import RequestError


@dataclass(frozen=True)
class Budgets:
    """Server-wide (``queue_*``) and per-request ceilings; see ``tte-hf serve --help``."""

    max_queue: int = 1024  #: requests admitted but not yet started by the model worker
    queue_items: int = 16_384  #: items held by all admitted requests
    queue_pixels: int = 256 * 2**20  #: pixels kept (after downscaling) by all admitted requests (x3 bytes, RGB)
    queue_bytes: int = 512 * 2**20  #: request bodies held by all admitted requests
    request_pixels: int = 64 * 2**20  #: pixels decoded for one request, at the images' full sizes


class QueueBusy(RequestError):
    """The server-wide budget is used up: HTTP 429, try again."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message, param=param, status=429)


class Admission:
    """The shared counters behind the tickets (thread-safe: tickets are used from worker threads)."""

    def __init__(self, budgets: Budgets):
        self.budgets = budgets
        self._lock = threading.Lock()
        self.waiting = self.items = self.pixels = self.bytes = 0

    def ticket(self) -> Ticket:
        """A place in the queue, or `QueueBusy` when ``max_queue`` requests already wait."""
        with self._lock:
            if self.waiting >= self.budgets.max_queue:
                raise QueueBusy(f"the request queue is full ({self.budgets.max_queue} requests waiting).")
            self.waiting += 1
        return Ticket(self)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"waiting": self.waiting, "items": self.items, "pixels": self.pixels, "bytes": self.bytes}


class Ticket:
    """One request's reservations. `started` leaves the queue (the worker took it); `release` ends all."""

    def __init__(self, admission: Admission):
        self._admission = admission
        self._waiting, self.items, self.pixels, self.bytes = True, 0, 0, 0
        self.source_pixels = 0  # not shared: a per-request budget only

    def reserve_bytes(self, count: int) -> None:
        self._reserve("bytes", count, self._admission.budgets.queue_bytes, "request bodies")

    def reserve_items(self, count: int) -> None:
        self._reserve("items", count, self._admission.budgets.queue_items, "items")

    def reserve_pixels(self, source: int, kept: int, where: str) -> None:
        """An image of ``source`` pixels, kept at ``kept`` pixels once decoded and downscaled."""
        limit = self._admission.budgets.request_pixels
        if self.source_pixels + source > limit:
            raise RequestError(
                f"{where}: the request's images add up to more than {limit} pixels at full size "
                f"(--max-request-pixels); send fewer or smaller images per request.",
                param=where,
                status=413,
            )
        self.source_pixels += source
        self._reserve("pixels", kept, self._admission.budgets.queue_pixels, "decoded pixels", where)

    def _reserve(self, name: str, count: int, limit: int, what: str, where: str | None = None) -> None:
        admission = self._admission
        with admission._lock:
            if getattr(admission, name) + count > limit:
                raise QueueBusy(f"the server holds its limit of {what} for waiting requests; retry shortly.", where)
            setattr(admission, name, getattr(admission, name) + count)
            setattr(self, name, getattr(self, name) + count)

    def started(self) -> None:
        """The model worker took the request: it no longer counts as waiting (its memory still does)."""
        with self._admission._lock:
            if self._waiting:
                self._waiting = False
                self._admission.waiting -= 1

    def release(self) -> None:
        self.started()
        admission = self._admission
        with admission._lock:
            for name in ("items", "pixels", "bytes"):
                setattr(admission, name, getattr(admission, name) - getattr(self, name))
                setattr(self, name, 0)
