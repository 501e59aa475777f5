"""The reasoning stage: with a remote (thread-safe) reasoner, a request's traces are written before
it joins the micro-batcher, on a pool of daemon threads, each request on its own.

The model worker then finds every trace in the model's ECR cache and only embeds: a slow, failing or
hung generation server holds the threads of the requests that need it, never the worker that embeds
everyone else. The handler waits for this stage no longer than the request's deadline (504); the
abandoned call finishes in the background (bounded by the reasoner's own deadline) and its traces
are still cached. When the reasoner fails on some items, the ones that worked are cached (the guard)
and the request is split in halves until the failing item is named (`ItemError`), each half asking
only for what is not cached yet; a failed item is not asked again within the request.

In-process reasoners (transformers, vLLM) and ``think="auto"`` (the gate runs on the model) keep
reasoning inside the batcher's encode call, where requests share generation batches.
"""

from __future__ import annotations

from typing import Any

from .batcher import ItemError
from .pools import DaemonPool
from .reasoner_guard import GuardedReasoner


def served_prompt(model: Any, side: str) -> str | None:
    """The prompt ``encode_query`` / ``encode_document`` use when given none (sentence-transformers' rule)."""
    prompts = getattr(model, "prompts", None) or {}
    for name in ("query",) if side == "query" else ("document", "passage", "corpus"):
        if name in prompts:
            return prompts[name]
    default = getattr(model, "default_prompt_name", None)
    return prompts.get(default) if default else None


class ReasoningStage:
    def __init__(self, model: Any, guard: GuardedReasoner, workers: int = 32):
        self.model, self.module, self.guard = model, model[0], guard
        self.pool = DaemonPool(workers, "tte-reasoning")

    def wanted(self, inputs: list[Any], side: str, think: Any) -> bool:
        """Whether this request's traces come from this stage (remote reasoner, reasoning on, an item
        without a client-given trace)."""
        if not self.guard.thread_safe:
            return False
        if think is None:
            think = getattr(self.module, "query_reasoning" if side == "query" else "document_reasoning", None)
        return think is True and any(not (isinstance(i, dict) and i.get("reasoning")) for i in inputs)

    def submit(self, inputs: list[Any], side: str, think: Any):
        """A future for the request's traces (the module's per-item traces, ``None`` where it reads none)."""
        return self.pool.submit(self.traces, inputs, side, think)

    def traces(self, inputs: list[Any], side: str, think: Any) -> list[str | None]:
        prompt = served_prompt(self.model, side)

        def call(part: list[Any]) -> list[str | None]:
            return self.module.get_reasoning(part, task=side, prompt=prompt, think=think)

        with self.guard.remembering_failures():
            try:
                return call(inputs)
            except Exception as err:  # noqa: BLE001 - narrowed down to the failing item below
                return self._narrow(call, inputs, 0, len(inputs), err)

    def _narrow(self, call, inputs: list[Any], start: int, end: int, err: Exception) -> list[str | None]:
        if end - start == 1:
            raise ItemError(start, err)
        middle = (start + end) // 2
        traces: list[str | None] = []
        for lo, hi in ((start, middle), (middle, end)):
            try:
                traces += call(inputs[lo:hi])
            except Exception as part_err:  # noqa: BLE001
                traces += self._narrow(call, inputs, lo, hi, part_err)
        return traces
