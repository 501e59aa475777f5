"""Ranking metrics for MMEB: Hit@k, MRR, Recall@k and NDCG@k (linear gain, graded qrels).

Definitions follow VLM2Vec's `RankingMetrics` (src/utils/eval_utils/metrics.py): NDCG uses gain
``rel / log2(rank + 1)`` and the ideal ranking of the query's positive qrels, MRR is the reciprocal
rank of the first relevant item. Ties: VLM2Vec sorts with an unstable ``argsort``, so a tie with the
gold item is broken arbitrarily — and because MMEB lists the gold candidate first, a stable sort would
give a constant model 100% Hit@1. We break ties *against* relevant items (pessimistic) so a score can
never come from a tie.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

K_VALUES = (1, 5, 10)


def rank_candidates(scores: torch.Tensor, relevance: Sequence[float]) -> list[int]:
    """Candidate indices from best to worst by score; among equal scores non-relevant items come first."""
    scores = torch.as_tensor(scores, dtype=torch.float64).flatten()
    if scores.numel() != len(relevance):
        raise ValueError(f"{scores.numel()} scores for {len(relevance)} candidates.")
    relevant = torch.tensor([float(r) > 0 for r in relevance], dtype=torch.float64)
    # Lexicographic sort: score descending, then relevant after non-relevant. Stable sorts applied from
    # the least to the most significant key.
    order = torch.argsort(relevant, stable=True)
    order = order[torch.argsort(-scores[order], stable=True)]
    return order.tolist()


def _dcg(gains: Sequence[float]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def query_metrics(ranked_relevance: Sequence[float], num_relevant: int, ideal: Sequence[float], ks=K_VALUES):
    """Metrics of one query from the relevance grades of its ranked candidates.

    ``num_relevant`` counts the query's positive qrels (also those missing from the ranking);
    ``ideal`` holds their grades, for the ideal DCG.
    """
    hits = [float(r) > 0 for r in ranked_relevance]
    first = next((i for i, h in enumerate(hits) if h), None)
    out = {"mrr": 0.0 if first is None else 1.0 / (first + 1)}
    ideal_sorted = sorted((float(g) for g in ideal if float(g) > 0), reverse=True)
    for k in ks:
        out[f"hit@{k}"] = float(any(hits[:k]))
        out[f"recall@{k}"] = sum(hits[:k]) / num_relevant if num_relevant else 0.0
        idcg = _dcg(ideal_sorted[:k])
        out[f"ndcg@{k}"] = _dcg([float(r) for r in ranked_relevance[:k]]) / idcg if idcg > 0 else 0.0
    return out


def score_rankings(
    scores: Sequence[torch.Tensor], relevance: Sequence[Mapping[int, float]], ks=K_VALUES
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Mean metrics over queries, and the per-query metrics.

    ``scores[q]`` are query q's similarities to its candidates; ``relevance[q]`` maps a candidate index
    (into ``scores[q]``) to its relevance grade (> 0).
    """
    if len(scores) != len(relevance):
        raise ValueError(f"{len(scores)} score rows for {len(relevance)} queries.")
    if not scores:
        raise ValueError("No queries to score.")
    per_query = []
    for q_scores, rels in zip(scores, relevance):
        grades = [0.0] * len(q_scores)
        for index, grade in rels.items():
            grades[index] = float(grade)
        order = rank_candidates(q_scores, grades)
        per_query.append(query_metrics([grades[i] for i in order], len(rels), list(rels.values()), ks))
    mean = {key: sum(m[key] for m in per_query) / len(per_query) for key in per_query[0]}
    return mean, per_query
