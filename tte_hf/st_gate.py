"""The ``think="auto"`` step both sentence-transformers TTE modules share: the reasoning gate's
decisions per input, and its save/load next to the module.

Self-contained (stdlib, torch and sibling files): shipped next to the weights for ``trust_remote_code``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from .gate_tte import AUTO, GATE_CONFIG, GATE_FEATURE, GATE_WEIGHTS, ReasoningGate, find_gate

if TYPE_CHECKING:
    from .st_inputs import ParsedInput


def run_reading_input_states(decoder_layers, attention_mask: torch.Tensor, run):
    """``run()``'s result and, per row, the mean over its unmasked positions of what the first decoder
    layer reads: the input embeddings (text tokens and the vision tower's image tokens) of the sequence,
    i.e. the gate's feature (`gate_tte.GATE_FEATURE`), at no cost beyond the pass itself."""
    captured = []

    def read(module, args, kwargs):
        captured.append(args[0] if args else kwargs["hidden_states"])

    handle = decoder_layers[0].register_forward_pre_hook(read, with_kwargs=True)
    try:
        result = run()
    finally:
        handle.remove()
    states = captured[0]
    mask = attention_mask.to(states.device, states.dtype).unsqueeze(-1)
    return result, (states * mask).sum(1) / mask.sum(1).clamp(min=1)


class GateStepMixin:
    """Gate methods of `TTEInputsMixin` (which provides ``parse_inputs``, ``_per_thread`` and the
    module's parameters); the module provides `_no_trace_features` and `gate_feature_dim`."""

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
        if gate is not None and gate.feature != GATE_FEATURE:
            raise ValueError(
                f"the gate reads {gate.feature!r}, this model gives {GATE_FEATURE!r} (a gate of another tte-hf "
                "version); retrain it with `tte-hf train-gate`."
            )
        if gate is not None and gate.dim != self.gate_feature_dim():
            raise ValueError(
                f"the gate reads {gate.dim}-d features; this model's input embeddings are {self.gate_feature_dim()}-d."
            )
        self.gate = gate

    def gate_feature_dim(self) -> int:
        """Width of the gate's feature: the backbone's input embeddings."""
        raise NotImplementedError

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
        """Which rows reason: all or none, or (``mode="auto"``) the gate's decisions. The no-trace
        embeddings computed for the gate go to ``call["no_trace_states"]`` (a skipped row's vector); its
        decisions and scores to the per-thread `last_gate_decisions` / `last_gate_scores`."""
        state = self._per_thread()
        if mode != AUTO:
            state.last_gate_decisions = state.last_gate_scores = None
            return [bool(mode)] * len(items)
        if getattr(self, "gate", None) is None:
            raise ValueError(
                "think='auto' needs a reasoning gate and this model has none: train one with "
                "`tte-hf train-gate --config recipes/gate/<name>.yaml`, or pass think=True/False."
            )
        states, features = self._no_trace_features(items, instruction)
        decisions, scores = self.gate.decide(features)
        state.last_gate_decisions, state.last_gate_scores = decisions, scores
        if call is not None:
            call["no_trace_states"] = states
        return decisions

    def _no_trace_features(self, items: list[ParsedInput], instruction: str | None):
        """One no-trace pass over ``items``: ((n, d) the states a skipped row embeds as, i.e. what
        ``think=False`` gives; (n, gate_feature_dim) the gate's features, `run_reading_input_states`)."""
        raise NotImplementedError

    def gate_features(self, inputs: Sequence[Any], prompt: str | None = None) -> torch.Tensor:
        """The gate's (n, gate_feature_dim) features for ``inputs`` with instruction ``prompt``: what
        `tte-hf train-gate` fits the gate on, and what it reads at run time."""
        return self._no_trace_features(self.parse_inputs(list(inputs)), prompt)[1]

    def gate_decisions(
        self,
        inputs: Sequence[Any] | Any,
        prompt: str | None = ...,
        task: str | None = "query",
        states: dict[int, Any] | None = None,
    ) -> tuple[list[bool], list[float]]:
        """The gate's (think, score) for each input, in input order; ``prompt`` defaults to the one this
        thread last used for ``task``. Raises when the model has no gate. ``states`` receives each
        input's no-trace state (its ``think=False`` vector, before pooling modules) by its index in the
        caller's list."""
        if not isinstance(inputs, list) or (inputs and isinstance(inputs[0], Mapping) and "role" in inputs[0]):
            inputs = [inputs]
        if prompt is ...:
            prompt = self._per_thread().prompt_by_task.get(task)
        items = self.parse_inputs(inputs)
        call: dict[str, Any] = {}
        self._think_rows(items, prompt, AUTO, call)
        if states is not None:
            states.update({item.index: state for item, state in zip(items, call["no_trace_states"])})
        state = self._per_thread()
        return state.last_gate_decisions, state.last_gate_scores
