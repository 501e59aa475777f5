"""Ranking metrics for MMEB: Hit@k, MRR, Recall@k and NDCG@k (linear gain, graded qrels), under two
protocols that differ only in how equal candidates and exact score ties are treated.

Definitions follow VLM2Vec's `RankingMetrics` (src/utils/eval_utils/metrics.py): NDCG uses gain
``rel / log2(rank + 1)`` and the ideal ranking of the query's positive qrels, MRR is the reciprocal
rank of the first relevant item.

Protocols (``protocol=``):

- ``leaderboard`` (default of `tte-hf eval`): VLM2Vec's own rules (`eval.py`), so scores can sit next
  to the published ones. Candidates are identified by name (a text, or an image path): every listing
  of the gold's name is the gold, so a negative with the gold's name (ImageNet-1K lists "crane"
  twice) is a hit. The ranking is ``np.argsort`` of the negated scores; among exact ties we keep list
  order (the gold first in MMEB), which is what numpy's sort gives on short lists — on longer ones
  its order among ties depends on the build and CPU (numpy 2.4 on an AMD EPYC keeps list order for
  up to 9 items). As in the reference, NDCG's gains count every listing of a relevant name, and
  recall counts distinct names. One reference behaviour is not copied: `RankingMetrics.evaluate`
  deduplicates the labels through a ``set`` and then zips them with the grades in their original
  order, so a query with two or more different grades gets them paired by string-hash order (which
  changes with PYTHONHASHSEED); here every label keeps its own grade.
- ``strict``: every listing is scored on its own (the first listing of the gold is the gold, a repeat
  is a negative), and ties are broken *against* relevant items, so a score never comes from a tie —
  a constant model scores 0, not 100%.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch

K_VALUES = (1, 5, 10)
LEADERBOARD = "leaderboard"
STRICT = "strict"
PROTOCOLS = (LEADERBOARD, STRICT)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Per-query sorts of a few thousand scores run ~10x faster without torch's intra-op thread pool
    (measured on a busy 2-core guest: 500 queries x 5000 candidates, 16 s -> 1.6 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def check_protocol(protocol: str) -> str:
    """``protocol`` if it is one of `PROTOCOLS`, else a ValueError naming the choices."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r}; choose one of {PROTOCOLS}.")
    return protocol


def rank_candidates(
    scores: torch.Tensor, relevance: Sequence[float] | torch.Tensor, protocol: str = STRICT
) -> list[int]:
    """Candidate indices from best to worst by score. Among equal scores ``strict`` puts non-relevant
    items first; ``leaderboard`` keeps list order."""
    return _order(torch.as_tensor(scores, dtype=torch.float64).flatten(), relevance, protocol).tolist()


def _order(scores: torch.Tensor, relevance: Sequence[float] | torch.Tensor, protocol: str) -> torch.Tensor:
    relevance = torch.as_tensor(relevance, dtype=torch.float64).flatten()
    if scores.numel() != relevance.numel():
        raise ValueError(f"{scores.numel()} scores for {relevance.numel()} candidates.")
    if check_protocol(protocol) == LEADERBOARD:
        return torch.argsort(-scores, stable=True)
    # Lexicographic sort: score descending, then relevant after non-relevant. Stable sorts applied from
    # the least to the most significant key.
    order = torch.argsort((relevance > 0).to(torch.int8), stable=True)
    return order[torch.argsort(-scores[order], stable=True)]


def _dcg(gains: Sequence[float]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def query_metrics(
    ranked_relevance: Sequence[float] | torch.Tensor, num_relevant: int, ideal: Sequence[float], ks=K_VALUES
) -> dict[str, float]:
    """Metrics of one query from the relevance grades of its ranked candidates (each listing its own item).

    ``num_relevant`` counts the query's positive qrels (also those missing from the ranking);
    ``ideal`` holds their grades, for the ideal DCG.
    """
    ranked = torch.as_tensor(ranked_relevance, dtype=torch.float64).flatten()
    hits = ranked > 0
    found = hits.nonzero()
    out = {"mrr": 0.0 if found.numel() == 0 else 1.0 / (int(found[0]) + 1)}
    ideal_sorted = sorted((float(g) for g in ideal if float(g) > 0), reverse=True)
    for k in ks:
        out[f"hit@{k}"] = float(bool(hits[:k].any()))
        out[f"recall@{k}"] = int(hits[:k].sum()) / num_relevant if num_relevant else 0.0
        idcg = _dcg(ideal_sorted[:k])
        out[f"ndcg@{k}"] = _dcg(ranked[:k].tolist()) / idcg if idcg > 0 else 0.0
    return out


def named_query_metrics(prediction: Sequence[Hashable], grades: Mapping[Hashable, float], ks=K_VALUES):
    """Metrics of one query from its ranked candidate *names*, as VLM2Vec's `RankingMetrics` computes
    them: a hit is a relevant name, recall counts distinct relevant names, NDCG's gain counts every
    listing of a relevant name (so a repeated gold adds gain twice, as there)."""
    labels = {name for name, grade in grades.items() if float(grade) > 0}
    first = next((i for i, name in enumerate(prediction) if name in labels), None)
    out = {"mrr": 0.0 if first is None else 1.0 / (first + 1)}
    ideal = sorted((float(grades[name]) for name in labels), reverse=True)
    for k in ks:
        top = prediction[:k]
        found = labels.intersection(top)
        out[f"hit@{k}"] = float(bool(found))
        out[f"recall@{k}"] = len(found) / len(labels) if labels else 0.0
        idcg = _dcg(ideal[:k])
        out[f"ndcg@{k}"] = _dcg([float(grades[name]) if name in labels else 0.0 for name in top]) / idcg if idcg > 0 else 0.0  # fmt: skip
    return out


def _listing_grades(n: int, names: Sequence[Hashable] | None, grades: Mapping[Hashable, float], protocol: str):
    """Grade of each listing: every listing of a relevant name (``leaderboard``) or only its first
    (``strict``). ``names=None``: listing i is candidate i (a global ranking)."""
    listing = torch.zeros(n, dtype=torch.float64)
    if names is None:
        for index, grade in grades.items():
            listing[index] = float(grade)
        return listing
    seen = set()
    for i, name in enumerate(names):
        if name in grades and (protocol == LEADERBOARD or name not in seen):
            listing[i] = float(grades[name])
        seen.add(name)
    return listing


def _query(scores, names: Sequence[Hashable] | None, grades: Mapping[Hashable, float], protocol: str, ks):
    scores = torch.as_tensor(scores, dtype=torch.float64).flatten()
    listing = _listing_grades(scores.numel(), names, grades, protocol)
    order = _order(scores, listing, protocol)
    if protocol == LEADERBOARD:
        prediction = order.tolist() if names is None else [names[i] for i in order.tolist()]
        return named_query_metrics(prediction, grades, ks)
    return query_metrics(listing[order], len(grades), list(grades.values()), ks)


def score_rankings(
    scores: Sequence[torch.Tensor],
    relevance: Sequence[Mapping[Hashable, float]],
    ks=K_VALUES,
    *,
    protocol: str = STRICT,
    names: Sequence[Sequence[Hashable] | None] | None = None,
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Mean metrics over queries, and the per-query metrics.

    ``scores[q]`` are query q's similarities to its listed candidates; ``names[q]`` names each listing
    (the candidate it is: equal names are one candidate; default: its position) and ``relevance[q]``
    maps a name to its relevance grade (> 0). ``protocol`` defaults to ``strict`` here (this
    function's rule before protocols existed); `runner.evaluate` defaults to ``leaderboard``.
    """
    check_protocol(protocol)
    if len(scores) != len(relevance):
        raise ValueError(f"{len(scores)} score rows for {len(relevance)} queries.")
    if not scores:
        raise ValueError("No queries to score.")
    names = names if names is not None else [None] * len(scores)
    per_query = []
    with _one_thread():
        for q_scores, grades, q_names in zip(scores, relevance, names):
            if q_names is not None and len(q_names) != len(q_scores):
                raise ValueError(f"{len(q_scores)} scores for {len(q_names)} candidate names.")
            per_query.append(_query(q_scores, q_names, grades, protocol, ks))
    mean = {key: sum(m[key] for m in per_query) / len(per_query) for key in per_query[0]}
    return mean, per_query


def tie_counts(
    scores: Sequence[torch.Tensor],
    relevance: Sequence[Mapping[Hashable, float]],
    names: Sequence[Sequence[Hashable] | None] | None = None,
) -> dict[str, int]:
    """How many queries the two protocols could score differently, and how many they did (hit@1).

    ``duplicate_gold_queries``: a relevant candidate is listed more than once; ``tied_gold_queries``
    (the others): a relevant listing's score equals a non-relevant one's exactly. ``…_decided``: those
    whose hit@1 differs between ``leaderboard`` and ``strict`` — the hits the rule decided.
    Arguments as in `score_rankings`.
    """
    counts = dict.fromkeys(("duplicate_gold_queries", "duplicate_gold_decided", "tied_gold_queries", "tied_gold_decided"), 0)  # fmt: skip
    names = names if names is not None else [None] * len(scores)
    with _one_thread():
        for q_scores, grades, q_names in zip(scores, relevance, names):
            _count_query(counts, q_scores, grades, q_names)
    return counts


def _count_query(counts: dict[str, int], q_scores, grades: Mapping[Hashable, float], q_names) -> None:
    q_scores = torch.as_tensor(q_scores, dtype=torch.float64).flatten()
    relevant = _listing_grades(q_scores.numel(), q_names, grades, LEADERBOARD) > 0
    # a name listed twice among the relevant listings (global rankings list each candidate once)
    duplicated = q_names is not None and int(relevant.sum()) > len({q_names[i] for i in relevant.nonzero().flatten().tolist()})  # fmt: skip
    tied = bool(torch.isin(q_scores[~relevant], q_scores[relevant]).any())
    kind = "duplicate_gold" if duplicated else "tied_gold" if tied else None
    if kind is None:
        return
    counts[f"{kind}_queries"] += 1
    hit = [_query(q_scores, q_names, grades, p, (1,))["hit@1"] for p in PROTOCOLS]
    counts[f"{kind}_decided"] += int(hit[0] != hit[1])
