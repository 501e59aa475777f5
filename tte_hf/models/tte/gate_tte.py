"""The reasoning gate of ``think="auto"``: a logistic probe that decides, per input, whether the
reasoner's trace is worth its cost.

Design (why this probe, on this feature):

- **Feature = the mean of the input embeddings of the text tokens of the input's no-trace sequence**
  (the chat template the embedder reads without a trace, its image/video placeholders left out;
  L2-normalised by the probe; `GATE_FEATURE`, `st_gate.mean_text_embeddings`). It costs a tokenizer call
  and an embedding lookup: no processor, no vision tower, no decoder, so a skipped input pays for its
  one no-trace pass and little else, and a reasoned one for nothing it throws away. Whether a trace
  helps is a property of what the query asks (the task's instruction, the question), which is text;
  the picture's pixels did not tell the demo's riddles from its plain queries any better: on its
  held-out queries a probe on the text tokens separated them as well as one on the whole sequence
  with the vision tower's image tokens, for a fraction of that pass's time (benchmarks/RESULTS.md). A gate that needs the image's content is a different feature (and version).
  Why not the no-trace *embedding*, the first choice: a contrastive embedder is trained to forget how
  a query is phrased (a riddle and a plain query with the same answer embed alike), while whether a
  trace helps depends on what the query asks. In the demo, probes fitted on the dev compositions told
  riddles from plain queries on the held-out ones from the input embeddings' mean 97.5% of the time,
  from any later layer's mean 61-65% (benchmarks/RESULTS.md).
- **Probe = one ``Linear`` + sigmoid** on that unit vector (fitted on standardised features, folded
  back into the weights): a few thousand parameters, negligible next to one decode step, trainable on
  CPU from a few hundred labelled queries.
- **Decision = score >= threshold**, per input, from that input's own vector, averaged unpadded: batch
  composition and padding side do not enter, bit for bit.
- The threshold is chosen on held-out queries to keep always-mode Hit@1 while skipping the most
  (``tte-hf train-gate``: ``tte_hf.training.train_gate.fit_gate``); how it was trained is kept in ``gate_config.json``.

Self-contained (stdlib, torch, safetensors): shipped next to the weights for ``trust_remote_code``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

GATE_CONFIG = "gate_config.json"
GATE_WEIGHTS = "gate.safetensors"
#: What a gate reads; saved with it, so a gate fitted on other features is refused, not misread.
GATE_FEATURE = "mean input embedding of the no-trace sequence's text tokens"
#: values of ``query_reasoning`` / ``document_reasoning`` / ``think``: on, off, or decided by the gate
AUTO = "auto"


class ReasoningGate(torch.nn.Module):
    """``score(features)`` = P(the trace improves this input's retrieval); think where it is >= ``threshold``.

    ``info`` (JSON-serialisable) records how the gate was trained: data, label rule, held-out skip rate.
    """

    def __init__(
        self, dim: int, threshold: float = 0.5, info: dict[str, Any] | None = None, feature: str = GATE_FEATURE
    ):
        super().__init__()
        self.linear = torch.nn.Linear(dim, 1)
        self.register_buffer("threshold", torch.tensor(float(threshold)))  # a buffer: in the weights fingerprint
        self.info = dict(info or {})
        self.feature = feature
        self.requires_grad_(False)

    @property
    def dim(self) -> int:
        return self.linear.in_features

    def score(self, features: torch.Tensor) -> torch.Tensor:
        """Per-row probability that reasoning helps, from (n, dim) features (any scale: normalised here)."""
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"the gate takes (n, {self.dim}) features, got shape {tuple(features.shape)}.")
        weight = self.linear.weight
        unit = torch.nn.functional.normalize(features.detach().to(weight.device, torch.float32), dim=-1)
        return torch.sigmoid(self.linear(unit).squeeze(-1))

    def decide(self, features: torch.Tensor) -> tuple[list[bool], list[float]]:
        """(think per row, score per row)."""
        scores = self.score(features)
        return (scores >= self.threshold).tolist(), scores.tolist()

    def save(self, path: str) -> None:
        from safetensors.torch import save_file

        os.makedirs(path, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, os.path.join(path, GATE_WEIGHTS))
        config = {"dim": self.dim, "threshold": float(self.threshold), "feature": self.feature, "info": self.info}
        with open(os.path.join(path, GATE_CONFIG), "w", encoding="utf8") as handle:
            json.dump(config, handle, indent=2, sort_keys=True)

    @classmethod
    def load(cls, config_file: str, weights_file: str) -> ReasoningGate:
        from safetensors.torch import load_file

        with open(config_file, encoding="utf8") as handle:
            config = json.load(handle)
        # A gate saved before features were recorded read the no-trace embedding.
        feature = config.get("feature", "no-trace embedding")
        gate = cls(config["dim"], config["threshold"], config.get("info"), feature)
        gate.load_state_dict(load_file(weights_file))
        return gate


def find_gate(name_or_path: str, hub_kwargs: dict[str, Any] | None = None) -> ReasoningGate | None:
    """The gate saved with a model (folder or Hub repo, ``hub_kwargs`` as ST's ``load_file_path``
    takes them), or ``None`` when it has none."""
    from sentence_transformers.base.modules import Module

    hub = dict(hub_kwargs or {})
    files = [Module.load_file_path(name_or_path, name, **hub) for name in (GATE_CONFIG, GATE_WEIGHTS)]
    if files[0] is None:
        return None
    if files[1] is None:
        raise FileNotFoundError(f"{name_or_path} has {GATE_CONFIG} but no {GATE_WEIGHTS}; re-run tte-hf train-gate.")
    return ReasoningGate.load(*files)


def check_mode(name: str, value: Any) -> None:
    """``value`` must be True, False or ``"auto"``."""
    if value not in (True, False, AUTO):
        raise ValueError(f"{name}={value!r} must be True, False or {AUTO!r}.")
