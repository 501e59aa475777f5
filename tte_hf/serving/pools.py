"""A fixed pool of daemon threads returning `concurrent.futures.Future`s.

`concurrent.futures.ThreadPoolExecutor` joins its threads at interpreter exit, so one call hung on a
remote server (a reasoner, an image URL) would hold the process after a graceful shutdown; these
threads are daemons and are simply abandoned then. A future cancelled before its turn never runs.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class DaemonPool:
    def __init__(self, workers: int, name: str):
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        for index in range(workers):
            threading.Thread(target=self._work, name=f"{name}-{index}", daemon=True).start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        self._tasks.put((future, fn, args))
        return future

    def _work(self) -> None:
        while True:
            future, fn, args = self._tasks.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as err:  # noqa: BLE001 - delivered to the waiting request
                future.set_exception(err)
