"""A reasoner wrapper that contains the backend's failures to the items they belong to.

`GuardedReasoner` turns any failure into `ReasonerError` (HTTP 502 for the requests it hits). When
the backend reports per-item results (``err.outputs``: the trace or ``None`` per request, as
`OpenAIReasoner` and `CachedReasoner` do), the traces that did come back are stored in the model's
ECR cache before the error is raised, so the retries that narrow the failure down (the batcher's
halves, the reasoning stage's halves) never ask for them again. Inside `remembering_failures` a
request that already failed is not sent again either: it fails at once with its first error.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..models.tte.fingerprints import ecr_cache_key

logger = logging.getLogger("tte_hf.serving")


class ReasonerError(RuntimeError):
    """The reasoning backend (in process, vLLM or a remote generation server) failed or wrote nothing.
    The message is for the log; clients get a generic one (it may name internal hosts)."""


class GuardedReasoner:
    """Delegates to ``backend``; describes itself exactly as the backend does, so the model's ECR cache
    keys (and so its vectors) are the same with or without the guard. ``store(key, trace)`` receives
    the traces of a batch that partly failed."""

    def __init__(self, backend: Any, store: Callable[[str, str], None] | None = None):
        self.backend, self.store = backend, store
        self.name = getattr(backend, "name", type(backend).__name__)
        self.thread_safe = bool(getattr(backend, "thread_safe", False))
        self._scope = threading.local()

    def describe(self) -> dict[str, Any]:
        describe = getattr(self.backend, "describe", None)
        return describe() if callable(describe) else {"name": self.name}

    @contextlib.contextmanager
    def remembering_failures(self) -> Iterator[None]:
        """Within this block (on this thread) a request that failed once fails again without a call."""
        outer = getattr(self._scope, "failed", None)
        self._scope.failed = {} if outer is None else outer
        try:
            yield
        finally:
            self._scope.failed = outer

    def generate(self, requests: Sequence[Any]) -> list[str]:
        failed: dict[str, str] | None = getattr(self._scope, "failed", None)
        keys = [ecr_cache_key(self.describe(), r) for r in requests] if failed else None
        errors: dict[int, str] = {i: failed[k] for i, k in enumerate(keys)} if keys else {}
        errors = {i: e for i, e in errors.items() if e is not None}
        outputs: list[Any] = [None] * len(requests)
        todo = [i for i in range(len(requests)) if i not in errors]
        if todo:
            self._call([requests[i] for i in todo], todo, outputs, errors)
        for i, output in enumerate(outputs):
            if i not in errors and (not isinstance(output, str) or not output.strip()):
                errors[i] = f"no trace for input {i} of its batch ({output!r:.40})"
        if not errors:
            return list(outputs)
        self._keep_successes(requests, outputs, errors, keys, failed)
        first = min(errors)
        raise ReasonerError(f"the reasoner failed on {len(errors)} of {len(requests)} inputs; first: {errors[first]}")

    def _call(self, batch: list[Any], where: list[int], outputs: list[Any], errors: dict[int, str]) -> None:
        try:
            got = self.backend.generate(batch)
        except Exception as err:  # noqa: BLE001 - any backend failure is a reasoner failure
            partial = getattr(err, "outputs", None)
            if not isinstance(partial, (list, tuple)) or len(partial) != len(batch):
                errors.update({i: f"{type(err).__name__}: {err}" for i in where})
                return
            details = getattr(err, "errors", {}) or {}
            for j, i in enumerate(where):
                if partial[j] is None:
                    errors[i] = str(details.get(j, err))
                else:
                    outputs[i] = partial[j]
            return
        if not isinstance(got, (list, tuple)) or len(got) != len(batch):
            errors.update({i: f"the reasoner returned {type(got).__name__} for {len(batch)} inputs" for i in where})
            return
        for j, i in enumerate(where):
            outputs[i] = got[j]

    def _keep_successes(self, requests, outputs, errors, keys, failed) -> None:
        keys = keys or [ecr_cache_key(self.describe(), r) for r in requests]
        for i, key in enumerate(keys):
            if i in errors:
                if failed is not None:
                    failed[key] = errors[i]
            elif self.store is not None:
                try:
                    self.store(key, outputs[i])
                except Exception:  # noqa: BLE001 - a cache is best-effort
                    logger.warning("could not keep a trace in the ECR cache", exc_info=True)


def guard_reasoner(backend: Any, store: Callable[[str, str], None] | None = None) -> GuardedReasoner:
    """``backend`` wrapped once (an already guarded backend is returned as is)."""
    return backend if isinstance(backend, GuardedReasoner) else GuardedReasoner(backend, store)
