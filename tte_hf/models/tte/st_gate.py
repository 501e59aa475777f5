"""The ``think="auto"`` step both sentence-transformers TTE modules share: `GateStep`, an object each
module holds and calls, with the reasoning gate, its decisions per input, and its save/load next to the
module. The module hands it the one thing that differs between them: how an input's gate feature is
computed (its no-trace sequence differs).

Self-contained (stdlib, torch and sibling files): shipped next to the weights for ``trust_remote_code``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch

from .gate_tte import (
    AUTO,
    GATE_CONFIG,
    GATE_FEATURE,
    GATE_WEIGHTS,
    JOINT_FEATURES,
    NO_TRACE_EMBEDDING,
    TEXT_EMBEDDINGS,
    ReasoningGate,
    find_gate,
    joint_features,
)
from .st_input_types import ParsedInput
from .st_state import PerThreadState

#: ``(items, instruction) -> (n, d) features``: what the gate reads for parsed inputs
GateFeatures = Callable[[list[ParsedInput], str | None], torch.Tensor]


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
    placeholders): the gate's text feature (`gate_tte.TEXT_EMBEDDINGS`). A tokenizer call and an embedding
    lookup, no processor or vision tower. Each row is averaged on its own, unpadded, so a row's feature
    is the same bits in any batch."""
    weight = embeddings.weight
    rows = []
    for ids in tokenizer(texts).input_ids:
        kept = torch.tensor([i for i in ids if i not in skip_ids], device=weight.device)
        rows.append(weight[kept].float().mean(0))
    return torch.stack(rows)


def _joint_of(embeddings: GateFeatures, text: GateFeatures, items: list[ParsedInput], instruction: str | None):
    """`gate_tte.joint_features` of ``items`` from the two feature functions."""
    return joint_features(embeddings(items, instruction), text(items, instruction))


class GateStep(torch.nn.Module):
    """The ``think="auto"`` step of a TTE module: which rows reason, from the reasoning gate's decisions.

    A `torch.nn.Module` so that the gate (``gate``, a child module) moves with the module's ``.to()``
    and its weights and threshold are among the model's parameters and buffers (the embedding cache's
    fingerprint reads them). ``features[name](items, instruction)`` gives the (n, d) features ``name``
    (a `gate_tte.GATE_FEATURES` value) of parsed inputs and ``feature_dim(name)`` their width; both come
    from the module that holds the step, and a gate reading a feature missing there is refused.
    """

    def __init__(self, features: Mapping[str, GateFeatures], feature_dim: Callable[[str], int]):
        super().__init__()
        self.gate: ReasoningGate | None = None
        self.features = dict(features)
        if NO_TRACE_EMBEDDING in self.features and TEXT_EMBEDDINGS in self.features:
            parts = (self.features[NO_TRACE_EMBEDDING], self.features[TEXT_EMBEDDINGS])
            self.features[JOINT_FEATURES] = functools.partial(_joint_of, *parts)  # picklable, unlike a lambda
        self.feature_dim = feature_dim
        self._results = PerThreadState()  # only its ``last_gate_*`` fields: this step's per-thread results

    @property
    def reads_embeddings(self) -> bool:
        """Whether the gate reads the no-trace embedding (`gate_tte.NO_TRACE_EMBEDDING`): the vectors
        a skipped row returns, so the caller computes them once and hands them to `rows` / `decide`."""
        return self.gate is not None and self.gate.feature in (NO_TRACE_EMBEDDING, JOINT_FEATURES)

    def with_embeddings(self, embeddings: torch.Tensor, text: torch.Tensor | None) -> torch.Tensor:
        """The gate's features from the rows' no-trace ``embeddings`` and, for the joint feature, their
        ``text`` features (`TEXT_EMBEDDINGS`)."""
        if self.gate is not None and self.gate.feature == JOINT_FEATURES:
            return joint_features(embeddings, text)
        return embeddings

    def input_features(self, items: list[ParsedInput], instruction: str | None, feature: str | None = None):
        """The (n, d) ``feature`` of ``items`` (default: the gate's, else `gate_tte.GATE_FEATURE`)."""
        feature = feature or (self.gate.feature if self.gate is not None else GATE_FEATURE)
        if feature not in self.features:
            raise ValueError(f"this model gives no gate feature {feature!r}; it gives {sorted(self.features)}.")
        return self.features[feature](items, instruction)

    @property
    def last_decisions(self) -> list[bool] | None:
        """Per row of this thread's last gated batch: did the gate send it to the reasoner? ``None``
        when that batch ran without the gate (``think`` True or False)."""
        return self._results.last_gate_decisions

    @property
    def last_scores(self) -> list[float] | None:
        """The gate's scores for the rows of `last_decisions` (``None`` without the gate)."""
        return self._results.last_gate_scores

    def remember(self, decisions: list[bool] | None, scores: list[float] | None) -> None:
        """Keep ``decisions`` / ``scores`` as this thread's last (a whole ``encode`` call's, in input order)."""
        self._results.last_gate_decisions, self._results.last_gate_scores = decisions, scores

    def set(self, gate: ReasoningGate | None) -> None:
        """Use ``gate`` for ``think="auto"``; refuse a gate that reads a feature this model does not give,
        or another width."""
        if gate is not None and gate.feature not in self.features:
            raise ValueError(
                f"the gate reads {gate.feature!r}, a feature this model does not give (it gives "
                f"{sorted(self.features)}; a gate of another tte-hf version): retrain it with `tte-hf train-gate`."
            )
        if gate is not None and gate.dim != self.feature_dim(gate.feature):
            raise ValueError(
                f"the gate reads {gate.dim}-d features; this model's {gate.feature!r} is "
                f"{self.feature_dim(gate.feature)}-d."
            )
        self.gate = gate

    def load(self, name_or_path: str, hub_kwargs: dict[str, Any], device: torch.device | str) -> None:
        """Use the gate saved with a model (folder or Hub repo), or none when it has none."""
        self.gate = None
        gate = find_gate(name_or_path, hub_kwargs)
        if gate is not None:
            self.set(gate.to(device))

    def save(self, output_path: str) -> None:
        """Write the gate's files into ``output_path``; without a gate, remove a previous one's."""
        if self.gate is not None:
            self.gate.save(output_path)
            return
        for name in (GATE_CONFIG, GATE_WEIGHTS):  # a module without a gate must not keep an old folder's one
            if os.path.exists(os.path.join(output_path, name)):
                os.remove(os.path.join(output_path, name))

    def rows(
        self, items: list[ParsedInput], instruction: str | None, mode: bool | str, features: torch.Tensor | None = None
    ) -> list[bool]:
        """Which rows reason: all or none, or (``mode="auto"``) the gate's decisions, which also become
        this thread's `last_decisions` / `last_scores`. ``features``: the rows' no-trace vectors where
        the caller has them (`decide`)."""
        if mode != AUTO:
            self.remember(None, None)
            return [bool(mode)] * len(items)
        decisions, scores = self.decide(items, instruction, features)
        self.remember(decisions, scores)
        return decisions

    def decide(
        self, items: list[ParsedInput], instruction: str | None, features: torch.Tensor | None = None
    ) -> tuple[list[bool], list[float]]:
        """The gate's (think, score) per row; raises when there is no gate. ``features``: the rows'
        no-trace vectors where the caller has them (`with_embeddings` makes them the gate's features),
        else the gate's features are computed from ``items``."""
        gate = self.require_gate()
        if features is None:
            return gate.decide(self.input_features(items, instruction))
        text = self.features[TEXT_EMBEDDINGS](items, instruction) if gate.feature == JOINT_FEATURES else None
        return gate.decide(self.with_embeddings(features, text))

    def require_gate(self) -> ReasoningGate:
        """The gate; raises, saying how to get one, when there is none."""
        if self.gate is None:
            raise ValueError(
                "think='auto' needs a reasoning gate and this model has none: train one with "
                "`tte-hf train-gate --config recipes/gate/<name>.yaml`, or pass think=True/False."
            )
        return self.gate
