"""State the sentence-transformers modules keep besides their weights: a bounded thread-safe LRU mapping
(embedding cache, trace token ids), per-thread call results, the lock around generation, and a module's
weak reference to the model that holds it.

Self-contained (standard library): shipped next to the weights for ``trust_remote_code``.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator, MutableMapping
from typing import Any


class LRUCache(MutableMapping):
    """A thread-safe mapping that keeps at most ``max_entries`` items (``None``: no bound), dropping
    the least recently used; ``evictions`` counts the drops. Used for the embedding cache
    (``embedding_cache_size``) and the unified model's trace token ids."""

    def __init__(self, max_entries: int | None = None):
        if max_entries is not None and max_entries < 1:
            raise ValueError(f"max_entries must be a positive int or None, got {max_entries}.")
        self.max_entries, self.evictions = max_entries, 0
        self._data: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __getitem__(self, key: str) -> Any:
        with self._lock:
            value = self._data[key]
            self._data.move_to_end(key)
            return value

    def __setitem__(self, key: str, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while self.max_entries is not None and len(self._data) > self.max_entries:
                self._data.popitem(last=False)
                self.evictions += 1

    def __delitem__(self, key: str) -> None:
        with self._lock:
            del self._data[key]

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._data

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._data))

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __reduce__(self):  # a lock cannot be copied: deepcopy/pickle give an empty cache of the same size
        return (type(self), (self.max_entries,))


class PerThreadState(threading.local):
    """Per-call results that ST's API gives no return path for (`preprocess` hands features to
    `forward`; ``encode`` returns vectors only): each thread sees its own last call."""

    def __init__(self):
        self.last_reasoning: list[str | None] = []
        self.prompt_by_task: dict[str | None, str | None] = {}
        self.last_gate_decisions: list[bool] | None = None
        self.last_gate_scores: list[float] | None = None

    def __reduce__(self):  # copies of a module start with fresh per-thread state
        return (type(self), ())


class ModelLock:
    """One generation at a time per module: transformers VLMs keep per-generation state on the
    model (Qwen2-VL's ``rope_deltas``), so concurrent ``generate`` calls, or a forward pass during
    one, would read another call's state."""

    def __init__(self):
        self.lock = threading.RLock()

    def __enter__(self):
        self.lock.acquire()

    def __exit__(self, *exc):
        self.lock.release()

    def __reduce__(self):
        return (type(self), ())


class ModelRef:
    """A weak reference to the `SentenceTransformer` that holds a module (a plain attribute would make the
    model a submodule of its own module). ``ref()`` is the model or ``None``. A deep copy points at the
    copy of the model made in the same ``deepcopy``, if any; a pickle starts empty (the model re-attaches
    itself on its next call)."""

    def __init__(self, model: Any = None):
        self._ref = None if model is None else weakref.ref(model)

    def __call__(self) -> Any:
        return None if self._ref is None else self._ref()

    def __deepcopy__(self, memo: dict) -> ModelRef:
        return ModelRef(memo.get(id(self())))

    def __reduce__(self):
        return (type(self), ())
