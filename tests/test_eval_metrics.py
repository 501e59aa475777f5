"""Ranking metrics: hand-computed cases and agreement with ir-measures (trec_eval) on random runs."""

import math
import random

import pytest
import torch

from tte_hf.evaluation.metrics import query_metrics, rank_candidates, score_rankings


def test_ties_are_broken_against_the_gold_item():
    # Constant scores: the gold (index 0, MMEB's convention) ties with everything and must rank last.
    assert rank_candidates(torch.zeros(4), [1, 0, 0, 0]) == [1, 2, 3, 0]
    mean, _ = score_rankings([torch.zeros(4)], [{0: 1.0}])
    assert mean["hit@1"] == 0.0
    assert mean["mrr"] == pytest.approx(1 / 4)


def test_partial_tie_only_pushes_gold_below_its_equals():
    scores = torch.tensor([0.5, 0.9, 0.5, 0.1])  # gold 0 ties with 2, below 1, above 3
    mean, _ = score_rankings([scores], [{0: 1.0}])
    assert mean["hit@1"] == 0.0
    assert mean["mrr"] == pytest.approx(1 / 3)
    assert mean["recall@5"] == 1.0


def test_single_candidate_is_always_a_hit():
    mean, _ = score_rankings([torch.tensor([-0.7])], [{0: 1.0}])
    assert mean == {
        "mrr": 1.0,
        **{f"{m}@{k}": 1.0 for k in (1, 5, 10) for m in ("hit", "recall", "ndcg")},
    }


def test_all_wrong_gives_zero_hit_and_reciprocal_ranks():
    scores = [torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.0, 0.5, 0.4])]
    mean, per_query = score_rankings(scores, [{0: 1.0}, {0: 1.0}])
    assert mean["hit@1"] == 0.0
    assert [q["mrr"] for q in per_query] == [pytest.approx(1 / 3), pytest.approx(1 / 3)]
    assert mean["hit@5"] == 1.0  # only three candidates


def test_graded_ndcg_by_hand():
    # Ranking: d1 (grade 1), d0 (grade 2), d2 (0). DCG = 1/log2(2) + 2/log2(3); IDCG = 2 + 1/log2(3).
    scores = torch.tensor([0.8, 0.9, 0.1])
    mean, _ = score_rankings([scores], [{0: 2.0, 1: 1.0}])
    expected = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert mean["ndcg@5"] == pytest.approx(expected)
    assert mean["recall@1"] == 0.5
    assert mean["mrr"] == 1.0


def test_relevant_items_outside_the_ranking_count_in_recall_and_ideal():
    # Two positives known, only one ranked (e.g. a truncated list): recall 1/2, IDCG over both.
    metrics = query_metrics([1.0, 0.0], num_relevant=2, ideal=[1.0, 1.0])
    assert metrics["recall@5"] == 0.5
    assert metrics["ndcg@5"] == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_agrees_with_ir_measures_on_random_runs():
    ir_measures = pytest.importorskip("ir_measures")
    from ir_measures import RR, R, Success, nDCG

    rng = random.Random(0)
    scores, relevance, qrels, run = [], [], [], []
    for q in range(60):
        n = rng.randint(1, 40)
        q_scores = torch.tensor([rng.random() for _ in range(n)], dtype=torch.float64)  # no ties
        positives = rng.sample(range(n), rng.randint(1, min(4, n)))
        rels = {i: float(rng.randint(1, 3)) for i in positives}
        scores.append(q_scores)
        relevance.append(rels)
        qrels += [ir_measures.Qrel(f"q{q}", f"d{i}", int(g)) for i, g in rels.items()]
        run += [ir_measures.ScoredDoc(f"q{q}", f"d{i}", float(s)) for i, s in enumerate(q_scores)]
    ours, _ = score_rankings(scores, relevance)
    measures = {"ndcg@5": nDCG @ 5, "ndcg@10": nDCG @ 10, "mrr": RR, "hit@1": Success @ 1, "hit@5": Success @ 5}
    measures |= {"recall@5": R @ 5, "recall@10": R @ 10}
    theirs = ir_measures.calc_aggregate(list(measures.values()), qrels, run)
    for name, measure in measures.items():
        assert ours[name] == pytest.approx(theirs[measure], abs=1e-9), name
