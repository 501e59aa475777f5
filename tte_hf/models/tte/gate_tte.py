"""The reasoning gate of ``think="auto"``: a logistic probe that decides, per input, whether the
reasoner's trace is worth its cost.

Design (why this probe, on this feature):

- **Feature = the joint feature** (`JOINT_FEATURES`, the default): the input's no-trace embedding and
  the mean input embedding of its words, each unit length, concatenated.
  - The **no-trace embedding** (`NO_TRACE_EMBEDDING`, ``--feature embedding``) is exactly the vector
    ``think=False`` returns, so it sees the whole input, the image included, and comes from a pass the
    model makes anyway: under ``think="auto"`` a call's no-trace vectors are computed once, the gate
    scores them, a skipped input returns its vector as is, and only a reasoned one goes on as under
    ``think=True``. A skipped input costs what ``think=False`` costs, a reasoned one one pass more than
    ``think=True``. Alone it skips few inputs that need no trace: a contrastive embedder is trained to
    embed a query by its answer, not by how it is asked (a riddle and a plain query with the same
    answer embed alike).
  - The **words** (`TEXT_EMBEDDINGS`, ``--feature text``, the first release's feature): the mean input
    embedding of the no-trace sequence's text tokens (`st_gate.mean_text_embeddings`), a tokenizer
    call and a table lookup. Alone it never sees the picture: on data with one instruction per task
    and the content in the image (MMEB's image tasks) it can only switch reasoning per task.
  - Together they skipped more inputs at the same loss than either part alone in the demo's comparison
    (benchmarks/RESULTS.md), at the no-trace embedding's cost. Gates saved with either part alone keep
    loading and deciding as they did.
- **Probe = one ``Linear`` + sigmoid** on that unit vector (fitted on standardised features, folded
  back into the weights): a few thousand parameters, negligible next to one decode step, trainable on
  CPU from a few hundred labelled queries.
- **Decision = score >= threshold**, per input, from that input's own vector: batch composition and
  order do not enter (the text feature: bit for bit; the no-trace embedding: up to the backbone's float
  noise in a padded batch).
- The threshold is read off the out-of-fold trade-off curve of held-out queries by one budget, the
  share of the trace-only hits skips may lose (``tte-hf train-gate``: ``tte_hf.training.train_gate.fit_gate``);
  how it was trained, and the curve, are kept in ``gate_config.json``.

Self-contained (stdlib, torch, safetensors): shipped next to the weights for ``trust_remote_code``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

GATE_CONFIG = "gate_config.json"
GATE_WEIGHTS = "gate.safetensors"
#: What a gate reads; saved with it (``feature`` in ``gate_config.json``), so a gate is fed the feature it
#: was fitted on, and one fitted on a feature this code does not know is refused, not misread.
NO_TRACE_EMBEDDING = "no-trace embedding: the vector think=False returns"
TEXT_EMBEDDINGS = "mean input embedding of the no-trace sequence's text tokens"
JOINT_FEATURES = "no-trace embedding and mean text-token input embedding, each unit length, concatenated"
#: ``tte-hf train-gate``'s ``feature`` option: name -> the feature a gate fitted with it reads
GATE_FEATURES = {"embedding": NO_TRACE_EMBEDDING, "text": TEXT_EMBEDDINGS, "joint": JOINT_FEATURES}
#: the feature of newly trained gates (``tte-hf train-gate``'s default)
GATE_FEATURE = JOINT_FEATURES
#: the feature of a gate saved before features were recorded: the first release's no-trace embedding,
#: fitted under other rules, so it stays unknown (refused with a retrain message)
UNRECORDED_FEATURE = "no-trace embedding"
#: values of ``query_reasoning`` / ``document_reasoning`` / ``think``: on, off, or decided by the gate
AUTO = "auto"


def joint_features(embeddings: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """`JOINT_FEATURES` from the no-trace embeddings and the text features of the same rows: each part
    unit length, so neither outweighs the other by its scale."""
    unit = [torch.nn.functional.normalize(part.detach().float(), dim=-1) for part in (embeddings, text)]
    return torch.cat([part.to(unit[0].device) for part in unit], dim=-1)


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
        feature = config.get("feature", UNRECORDED_FEATURE)
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
