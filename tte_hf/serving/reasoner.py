"""A reasoner wrapper that turns any failure of the wrapped backend into `ReasonerError` (HTTP 502)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ReasonerError(RuntimeError):
    """The reasoning backend (in process, vLLM or a remote generation server) failed or wrote nothing."""


class GuardedReasoner:
    """Delegates to ``backend``; describes itself exactly as the backend does, so the model's ECR cache
    keys (and so its vectors) are the same with or without the guard."""

    def __init__(self, backend: Any):
        self.backend = backend
        self.name = getattr(backend, "name", type(backend).__name__)

    def describe(self) -> dict[str, Any]:
        describe = getattr(self.backend, "describe", None)
        return describe() if callable(describe) else {"name": self.name}

    def generate(self, requests: Sequence[Any]) -> list[str]:
        try:
            outputs = self.backend.generate(requests)
        except Exception as err:
            raise ReasonerError(f"the reasoner failed: {err}") from err
        if not isinstance(outputs, (list, tuple)) or len(outputs) != len(requests):
            raise ReasonerError(f"the reasoner returned {type(outputs).__name__} for {len(requests)} inputs.")
        for index, output in enumerate(outputs):
            if not isinstance(output, str) or not output.strip():
                raise ReasonerError(f"the reasoner wrote no trace for input {index} of its batch ({output!r:.40}).")
        return list(outputs)


def guard_reasoner(backend: Any) -> GuardedReasoner:
    """``backend`` wrapped once (an already guarded backend is returned as is)."""
    return backend if isinstance(backend, GuardedReasoner) else GuardedReasoner(backend)
