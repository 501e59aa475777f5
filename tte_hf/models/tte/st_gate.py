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


def vision_placeholder_ids(processor: Any) -> set[int]:
    """Token ids of the processor's image and video placeholders (``<|image_pad|>`` / ``<|video_pad|>``)."""
    tokenizer = processor.tokenizer
    ids = set()
    for kind in ("image", "video"):
        token_id = getattr(processor, f"{kind}_token_id", None)
        token = getattr(processor, f"{kind}_token", None)
        if token_id is None and token is not None:
            token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is not None:
            ids.add(int(token_id))
    return ids


def mean_text_embeddings(
    embeddings: torch.nn.Embedding, tokenizer: Any, texts: list[str], skip_ids: set[int]
) -> torch.Tensor:
    """Per text, the mean (float32) of its tokens' input embeddings, leaving out ``skip_ids`` (the vision
    placeholders): the gate's feature (`gate_tte.GATE_FEATURE`). A tokenizer call and an embedding
    lookup, no processor or vision tower. Each row is averaged on its own, unpadded, so a row's feature
    is the same bits in any batch."""
    weight = embeddings.weight
    rows = []
    for ids in tokenizer(texts).input_ids:
        kept = torch.tensor([i for i in ids if i not in skip_ids], device=weight.device)
        rows.append(weight[kept].float().mean(0))
    return torch.stack(rows)


class GateStepMixin:
    """Gate methods of `TTEInputsMixin` (which provides ``parse_inputs``, ``_per_thread`` and the
    module's parameters); the module provides `_gate_input_features` and `gate_feature_dim`."""

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

    def _think_rows(self, items: list[ParsedInput], instruction: str | None, mode: bool | str) -> list[bool]:
        """Which rows reason: all or none, or (``mode="auto"``) the gate's decisions, which also go to the
        per-thread `last_gate_decisions` / `last_gate_scores`. A row the gate skips is then embedded like
        any ``think=False`` row."""
        state = self._per_thread()
        if mode != AUTO:
            state.last_gate_decisions = state.last_gate_scores = None
            return [bool(mode)] * len(items)
        if getattr(self, "gate", None) is None:
            raise ValueError(
                "think='auto' needs a reasoning gate and this model has none: train one with "
                "`tte-hf train-gate --config recipes/gate/<name>.yaml`, or pass think=True/False."
            )
        decisions, scores = self.gate.decide(self._gate_input_features(items, instruction))
        state.last_gate_decisions, state.last_gate_scores = decisions, scores
        return decisions

    def _gate_input_features(self, items: list[ParsedInput], instruction: str | None) -> torch.Tensor:
        """The gate's (n, gate_feature_dim) features: `mean_text_embeddings` of ``items``' no-trace
        sequences (what ``think=False`` embeds)."""
        raise NotImplementedError

    def gate_features(self, inputs: Sequence[Any], prompt: str | None = None) -> torch.Tensor:
        """The gate's (n, gate_feature_dim) features for ``inputs`` with instruction ``prompt``: what
        `tte-hf train-gate` fits the gate on, and what it reads at run time."""
        return self._gate_input_features(self.parse_inputs(list(inputs)), prompt)

    def gate_decisions(
        self, inputs: Sequence[Any] | Any, prompt: str | None = ..., task: str | None = "query"
    ) -> tuple[list[bool], list[float]]:
        """The gate's (think, score) for each input, in input order; ``prompt`` defaults to the one this
        thread last used for ``task``. Raises when the model has no gate."""
        if not isinstance(inputs, list) or (inputs and isinstance(inputs[0], Mapping) and "role" in inputs[0]):
            inputs = [inputs]
        if prompt is ...:
            prompt = self._per_thread().prompt_by_task.get(task)
        self._think_rows(self.parse_inputs(inputs), prompt, AUTO)
        state = self._per_thread()
        return state.last_gate_decisions, state.last_gate_scores
