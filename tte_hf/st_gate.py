"""The ``think="auto"`` step both sentence-transformers TTE modules share: the reasoning gate's
decisions per input, and its save/load next to the module.

Self-contained (stdlib, torch and sibling files): shipped next to the weights for ``trust_remote_code``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .gate_tte import AUTO, GATE_CONFIG, GATE_WEIGHTS, ReasoningGate, find_gate

if TYPE_CHECKING:
    from .st_inputs import ParsedInput


class GateStepMixin:
    """Gate methods of `TTEInputsMixin` (which provides ``parse_inputs``, ``_per_thread`` and the
    module's parameters); the module provides `_no_trace_features`."""

    @property
    def last_gate_decisions(self) -> list[bool] | None:
        """Per row of the last batch this thread preprocessed (that batch's order): did the gate send it
        to the reasoner? ``None`` when the batch ran without the gate (``think`` True or False)."""
        return self._per_thread().last_gate_decisions

    @property
    def last_gate_scores(self) -> list[float] | None:
        """The gate's scores for the rows of `last_gate_decisions` (``None`` without the gate)."""
        return self._per_thread().last_gate_scores

    def set_gate(self, gate: ReasoningGate | None) -> None:
        """Use ``gate`` for ``think="auto"`` (saved with the module: ``gate_config.json`` + ``gate.safetensors``)."""
        if gate is not None and gate.dim != self.get_embedding_dimension():
            raise ValueError(
                f"the gate reads {gate.dim}-d features; this model embeds {self.get_embedding_dimension()}-d."
            )
        self.gate = gate

    def _load_gate(self, name_or_path: str, hub_kwargs: dict[str, Any]) -> None:
        self.gate = None
        gate = find_gate(name_or_path, hub_kwargs)
        if gate is not None:
            self.set_gate(gate.to(self._gate_device()))

    def _save_gate(self, output_path: str) -> None:
        if self.gate is not None:
            self.gate.save(output_path)
            return
        for name in (GATE_CONFIG, GATE_WEIGHTS):  # a module without a gate must not keep an old folder's one
            if os.path.exists(os.path.join(output_path, name)):
                os.remove(os.path.join(output_path, name))

    def _gate_device(self):
        return next(self.parameters()).device

    def _think_rows(
        self, items: list[ParsedInput], instruction: str | None, mode: bool | str, call: dict[str, Any] | None = None
    ) -> list[bool]:
        """Which rows reason: all or none, or (``mode="auto"``) the gate's decisions. The gate's
        features (the no-trace embeddings) go to ``call["gate_features"]`` for reuse; its decisions
        and scores to the per-thread `last_gate_decisions` / `last_gate_scores`."""
        state = self._per_thread()
        if mode != AUTO:
            state.last_gate_decisions = state.last_gate_scores = None
            return [bool(mode)] * len(items)
        if getattr(self, "gate", None) is None:
            raise ValueError(
                "think='auto' needs a reasoning gate and this model has none: train one with "
                "`tte-hf train-gate --config recipes/gate/<name>.yaml`, or pass think=True/False."
            )
        features = self._no_trace_features(items, instruction)
        decisions, scores = self.gate.decide(features)
        state.last_gate_decisions, state.last_gate_scores = decisions, scores
        if call is not None:
            call["gate_features"] = features
        return decisions

    def _no_trace_features(self, items: list[ParsedInput], instruction: str | None):
        """(n, dim) no-trace embeddings of ``items``: the gate's input (the vectors ``think=False`` gives)."""
        raise NotImplementedError

    def gate_decisions(
        self,
        inputs: Sequence[Any] | Any,
        prompt: str | None = ...,
        task: str | None = "query",
        states: dict[int, Any] | None = None,
    ) -> tuple[list[bool], list[float]]:
        """The gate's (think, score) for each input, in input order; ``prompt`` defaults to the one this
        thread last used for ``task``. Raises when the model has no gate. ``states`` receives each
        input's no-trace state (the gate's feature) by its index in the caller's list."""
        if not isinstance(inputs, list) or (inputs and isinstance(inputs[0], Mapping) and "role" in inputs[0]):
            inputs = [inputs]
        if prompt is ...:
            prompt = self._per_thread().prompt_by_task.get(task)
        items = self.parse_inputs(inputs)
        call: dict[str, Any] = {}
        self._think_rows(items, prompt, AUTO, call)
        if states is not None:
            states.update({item.index: feature for item, feature in zip(items, call["gate_features"])})
        state = self._per_thread()
        return state.last_gate_decisions, state.last_gate_scores
