"""Reward functions for GRPO on the reasoner, in the form TRL's `GRPOTrainer` calls them:
``reward(prompts=..., completions=..., completion_ids=..., **dataset_columns) -> list[float]``.

- `RetrievalReward`: how well a frozen TTE embedder retrieves the row's positive target when the
  query is embedded with the sampled trace (the quantity the reasoner exists to improve).
- `ECRFormatReward`: the completion is an embedding-centric reasoning trace, ``<think>…</think>``
  followed by a short final part, that ended before the length cap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..models.tte.ecr import parse_ecr
from .data import PairExample, Side

#: Parser repairs that mean the completion is not a well-formed ``<think>…</think> final`` trace.
_MALFORMED = frozenset({"no_tags", "missing_open_tag", "missing_close_tag", "doubled_tags", "empty"})


def completion_text(completion: str | list[dict[str, Any]]) -> str:
    """The generated text of one completion, plain (``str``) or conversational (``[{"content": ...}]``)."""
    if isinstance(completion, str):
        return completion
    parts = []
    for message in completion:
        content = message.get("content", "")
        if isinstance(content, list):  # content blocks
            content = "".join(block.get("text", "") for block in content if block.get("type") == "text")
        parts.append(content)
    return "".join(parts)


class ECRFormatReward:
    """0.5 for a well-formed ``<think>…</think>`` block with a non-empty thought, plus 0.5 for a
    non-empty final part of at most ``max_final_words`` words; 0 for a completion cut at
    ``max_completion_length`` tokens (it never ended, so its final part is not the model's).

    Graded rather than all-or-nothing so that a group of samples that all miss the final part still
    gets a signal from those whose tags are right (GRPO's advantage is relative within a group).
    """

    __name__ = "ecr_format_reward"  # TRL logs each reward under its function's name

    def __init__(self, max_final_words: int = 32, max_completion_length: int | None = None):
        if max_final_words < 1:
            raise ValueError(f"max_final_words must be >= 1, got {max_final_words}.")
        self.max_final_words = max_final_words
        self.max_completion_length = max_completion_length

    def score(self, text: str, num_tokens: int | None = None) -> float:
        """The reward of one completion (``num_tokens``: its generated length, if known)."""
        if (
            self.max_completion_length is not None
            and num_tokens is not None
            and num_tokens >= self.max_completion_length
        ):
            return 0.0
        ecr = parse_ecr(text)
        well_formed = not (_MALFORMED & set(ecr.issues)) and bool(ecr.thought)
        short_final = bool(ecr.final) and len(ecr.final.split()) <= self.max_final_words
        return 0.5 * well_formed + 0.5 * short_final

    def __call__(
        self, completions: Sequence[Any], completion_ids: Sequence[Sequence[int]] | None = None, **_
    ) -> list[float]:
        lengths = [len(ids) for ids in completion_ids] if completion_ids is not None else [None] * len(completions)
        return [self.score(completion_text(c), n) for c, n in zip(completions, lengths)]


#: the candidate sets the retrieval reward scores a row's positive against
CANDIDATES = ("batch", "dataset")


class RetrievalReward:
    """The probability the frozen embedder gives the row's positive target, when the query is embedded
    with the sampled trace: ``softmax(q · [t_1, …, t_k] / temperature)[positive]`` over the candidates:

    - ``candidates="batch"``: the distinct positives of the generation batch (in-batch negatives) plus
      the row's hard negative, if any;
    - ``candidates="dataset"``: every distinct target of the training rows (positives, and hard negatives
      with ``hard_negatives``), as a retrieval corpus is: a trace that names a wrong but plausible target
      is penalised even when no row of the batch has that target.

    Why a softmax probability rather than the rank: it is graded. Once the positive ranks first for
    every sample of a group, reciprocal rank is 1 for all of them and GRPO's group-relative advantage is
    zero; the probability still prefers the trace that separates the positive from its neighbours more.
    ``temperature`` defaults to the embedder's contrastive temperature (0.02), so the reward is the
    model's own training-time likelihood of the positive.

    ``embedder``: a sentence-transformers TTE model whose reasoning is off (traces are given), e.g.
    ``build_sentence_transformer(path, query_reasoning=False)``. ``pairs``: the rows, looked up through
    the dataset's ``pair_index`` column. Target embeddings are computed once per distinct target and kept
    (a target is its content and task, so rows of several datasets share no vector by mistake).
    """

    __name__ = "retrieval_reward"

    def __init__(
        self,
        embedder,
        pairs: Sequence[PairExample],
        temperature: float = 0.02,
        hard_negatives: bool = True,
        trace_mode: str = "full",
        batch_size: int = 32,
        candidates: str = "batch",
    ):
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        if candidates not in CANDIDATES:
            raise ValueError(f"candidates must be one of {CANDIDATES}, got {candidates!r}.")
        self.embedder = embedder
        self.pairs = list(pairs)
        self.temperature = temperature
        self.hard_negatives = hard_negatives
        self.trace_mode = trace_mode
        self.batch_size = batch_size
        self.candidates = candidates
        self._targets: dict[tuple[Side, str | None], Any] = {}  # (target, task) -> its embedding
        # candidates="dataset": every target's index in the corpus, and the corpus's embeddings (built once)
        self._corpus_index: dict[tuple[Side, str | None], int] | None = None
        self._corpus_embeddings = None

    @staticmethod
    def _as_input(side: Side, task: str | None, trace: str | None) -> dict[str, Any]:
        item: dict[str, Any] = {"text": side.text or None, "images": list(side.images) or None, "task": task}
        if trace is not None:
            item["reasoning"] = trace
        return {k: v for k, v in item.items() if v is not None}

    def target_embeddings(self, targets: Sequence[tuple[Side, str | None]]):
        """Embeddings of ``(side, task)`` targets (rows of one tensor), encoding only those not seen before."""
        import torch

        todo = {target: None for target in targets if target not in self._targets}
        if todo:
            inputs = [self._as_input(side, task, side.trace) for side, task in todo]
            vectors = self.embedder.encode_document(inputs, batch_size=self.batch_size, convert_to_tensor=True)
            self._targets.update(zip(todo, vectors.float().cpu()))
        return torch.stack([self._targets[target] for target in targets])

    def __call__(self, completions: Sequence[Any], pair_index: Sequence[int], **_) -> list[float]:
        import torch

        if len(pair_index) != len(completions):
            raise ValueError(f"{len(completions)} completions but {len(pair_index)} pair_index values.")
        rows = [self._pair(i) for i in pair_index]
        traces = [parse_ecr(completion_text(c)).for_embedder(self.trace_mode) for c in completions]
        queries = [self._as_input(p.query, p.task, trace) for p, trace in zip(rows, traces)]
        q = self.embedder.encode_query(queries, batch_size=self.batch_size, convert_to_tensor=True).float().cpu()
        if self.candidates == "dataset":
            return self._dataset_rewards(q, rows)

        positives = list(dict.fromkeys((p.positive, p.task) for p in rows))  # in-batch candidates, once each
        batch_targets = self.target_embeddings(positives)
        rewards = []
        for vector, pair in zip(q, rows):
            targets, positive = batch_targets, positives.index((pair.positive, pair.task))
            negative = (pair.negative, pair.task) if self.hard_negatives and pair.negative is not None else None
            if negative is not None and negative not in positives:
                targets = torch.cat([targets, self.target_embeddings([negative])])
            logits = targets @ vector / self.temperature
            rewards.append(torch.softmax(logits, dim=0)[positive].item())
        return [r if math.isfinite(r) else 0.0 for r in rewards]

    def _dataset_rewards(self, q, rows: Sequence[PairExample]) -> list[float]:
        import torch

        if self._corpus_index is None:
            targets = [(p.positive, p.task) for p in self.pairs]
            if self.hard_negatives:
                targets += [(p.negative, p.task) for p in self.pairs if p.negative is not None]
            corpus = list(dict.fromkeys(targets))
            self._corpus_embeddings = self.target_embeddings(corpus)
            self._corpus_index = {target: i for i, target in enumerate(corpus)}
        index = self._corpus_index
        probabilities = torch.softmax(q @ self._corpus_embeddings.T / self.temperature, dim=1)
        rewards = [probabilities[r, index[(p.positive, p.task)]].item() for r, p in enumerate(rows)]
        return [r if math.isfinite(r) else 0.0 for r in rewards]

    def _pair(self, index: int) -> PairExample:
        if not 0 <= index < len(self.pairs):
            raise IndexError(f"pair_index {index} is outside the {len(self.pairs)} training pairs.")
        return self.pairs[index]
