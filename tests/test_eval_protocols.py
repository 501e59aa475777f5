"""The two scoring protocols on hand-built candidate lists.

``leaderboard`` must equal an independent re-implementation of VLM2Vec's rules, written here from its
documented behaviour (`eval.py`: the prediction is the candidates' *names* in ``np.argsort(-scores)``
order, list order among exact ties; `src/utils/eval_utils/metrics.py` `RankingMetrics`). ``strict``
must equal the rule tte-hf used before protocols existed: each listing scored on its own, only the
gold's first listing relevant, ties broken against relevant listings.
"""

import json
import math
import random

import numpy as np
import pytest
import torch

from tte_hf.evaluation import TaskSpec, load_task
from tte_hf.evaluation.metrics import score_rankings, tie_counts

KS = (1, 5, 10)


def reference_metrics(scores, names, labels, rel_scores=None):
    """VLM2Vec's per-query metrics: ``labels`` are relevant names, ``rel_scores`` their grades (None: binary)."""
    prediction = [names[i] for i in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")]
    label_set = set(labels)
    out = {}
    for k in KS:
        top = prediction[:k]
        hits = len(set(top) & label_set)
        out[f"hit@{k}"] = 1.0 if hits > 0 else 0.0
        out[f"recall@{k}"] = hits / len(label_set)
        if rel_scores is None:
            gains, ideal = [1 if p in label_set else 0 for p in top], [1] * min(len(label_set), k)
        else:
            grade = dict(zip(labels, rel_scores))
            gains, ideal = [grade.get(p, 0) for p in top], sorted(grade.values(), reverse=True)[:k]
        dcg = sum(g / np.log2(i + 2) for i, g in enumerate(gains))
        idcg = sum(g / np.log2(i + 2) for i, g in enumerate(ideal))
        out[f"ndcg@{k}"] = dcg / idcg
    out["mrr"] = next((1.0 / (r + 1) for r, p in enumerate(prediction) if p in label_set), 0.0)
    return out


def strict_metrics(scores, names, grades):
    """tte-hf's rule before protocols: first listing of a relevant name relevant, ties against it."""
    seen, listing = set(), []
    for name in names:
        listing.append(grades.get(name, 0.0) if name not in seen else 0.0)
        seen.add(name)
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], listing[i] > 0))
    ranked = [listing[i] for i in order]
    ideal = sorted(grades.values(), reverse=True)
    out = {"mrr": next((1.0 / (r + 1) for r, g in enumerate(ranked) if g > 0), 0.0)}
    for k in KS:
        out[f"hit@{k}"] = float(any(g > 0 for g in ranked[:k]))
        out[f"recall@{k}"] = sum(g > 0 for g in ranked[:k]) / len(grades)
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(ranked[:k]))
        out[f"ndcg@{k}"] = dcg / sum(g / math.log2(i + 2) for i, g in enumerate(ideal[:k]))
    return out


# (scores, names of the listings, relevant grades by name); equal names carry equal scores, as one
# embedding gives them.
CASES = {
    "duplicate gold text": ([0.7, 0.7, 0.9, 0.1], ["crane", "crane", "heron", "stork"], {"crane": 1.0}),
    "duplicate gold above the gold": ([0.8, 0.2, 0.8], ["crane", "heron", "crane"], {"crane": 1.0}),
    "duplicate gold image path": ([0.4, 0.6, 0.4, 0.6], ["a.png", "b.png", "a.png", "b.png"], {"a.png": 1.0}),
    "exact ties": ([0.3, 0.3, 0.3, 0.1], ["c0", "c1", "c2", "c3"], {"c0": 1.0}),
    "tie below a better negative": ([0.5, 0.9, 0.5, 0.5], ["c0", "c1", "c2", "c3"], {"c0": 1.0}),
    "several positives": ([0.2, 0.9, 0.5, 0.5, 0.8, 0.1], ["d0", "d1", "d2", "d3", "d4", "d5"], {"d2": 1.0, "d4": 1.0}),
    "graded ndcg with a repeat": ([0.9, 0.4, 0.9, 0.6, 0.4], ["d1", "d0", "d1", "d3", "d0"], {"d0": 2.0, "d1": 1.0}),
}


def _leaderboard_reference(scores, names, grades):
    graded = len(set(grades.values())) > 1
    labels = list(grades)
    return reference_metrics(scores, names, labels, [grades[n] for n in labels] if graded else None)


@pytest.mark.parametrize("case", list(CASES))
def test_leaderboard_equals_the_reference_rules(case):
    scores, names, grades = CASES[case]
    _, per_query = score_rankings([torch.tensor(scores)], [grades], protocol="leaderboard", names=[names])
    expected = _leaderboard_reference(scores, names, grades)
    assert per_query[0] == pytest.approx(expected)


@pytest.mark.parametrize("case", list(CASES))
def test_strict_equals_the_rule_before_protocols(case):
    scores, names, grades = CASES[case]
    _, per_query = score_rankings([torch.tensor(scores)], [grades], protocol="strict", names=[names])
    assert per_query[0] == pytest.approx(strict_metrics(scores, names, grades))


def test_the_rules_differ_where_the_issue_says():
    def hit(case, protocol):
        scores, names, grades = CASES[case]
        mean, _ = score_rankings([torch.tensor(scores)], [grades], protocol=protocol, names=[names])
        return mean["hit@1"]

    assert (hit("duplicate gold above the gold", "leaderboard"), hit("duplicate gold above the gold", "strict")) == (1.0, 0.0)  # fmt: skip
    assert (hit("exact ties", "leaderboard"), hit("exact ties", "strict")) == (1.0, 0.0)
    assert (hit("tie below a better negative", "leaderboard"), hit("tie below a better negative", "strict")) == (0.0, 0.0)  # fmt: skip
    # a repeated gold in the top 5 adds its gain twice, as VLM2Vec's NDCG does (above 1)
    scores, names, grades = CASES["duplicate gold text"]
    mean, _ = score_rankings([torch.tensor(scores)], [grades], protocol="leaderboard", names=[names])
    assert mean["ndcg@5"] > 1.0


def test_leaderboard_equals_the_reference_on_random_lists_with_ties_and_repeats():
    rng = random.Random(0)
    for _ in range(200):
        vocab = [f"n{i}" for i in range(rng.randint(1, 8))]
        names = [rng.choice(vocab) for _ in range(rng.randint(1, 9))]  # numpy keeps list order up to 9 here
        level = {n: rng.choice([0.1, 0.5, 0.9]) for n in vocab}  # few levels: many exact ties
        scores = [level[n] for n in names]
        positives = rng.sample(sorted(set(names)), rng.randint(1, len(set(names))))
        grades = {n: float(rng.choice([1, 1, 2])) for n in positives}
        _, ours = score_rankings([torch.tensor(scores)], [grades], protocol="leaderboard", names=[names])
        assert ours[0] == pytest.approx(_leaderboard_reference(scores, names, grades)), (scores, names, grades)


def test_tie_counts_name_the_queries_each_rule_decided():
    rows = [CASES[c] for c in ("duplicate gold above the gold", "exact ties", "tie below a better negative", "several positives")]  # fmt: skip
    counts = tie_counts([torch.tensor(s) for s, _, _ in rows], [g for _, _, g in rows], [n for _, n, _ in rows])
    assert counts == {
        "duplicate_gold_queries": 1,
        "duplicate_gold_decided": 1,
        "tied_gold_queries": 3,  # all but the first; only "exact ties" puts the tie at rank 1
        "tied_gold_decided": 1,
    }


def test_candidate_identity_follows_the_protocol(tmp_path):
    """VLM2Vec names an image candidate by its path (text-to-image rows) or by path + caption (rows
    whose query has an image: RefCOCO lists several objects of one image); a text candidate by its text."""
    from PIL import Image

    for name in ("a.png", "b.png", "q.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    rows = [
        {
            "qry_text": "a cat",
            "tgt_inst": "Represent the image",
            "tgt_text": ["cat", "dog", ""],
            "tgt_img_path": ["a.png", "a.png", "b.png"],
        },  # fmt: skip
        {
            "qry_text": "the left cat",
            "qry_img_path": "q.png",
            "tgt_text": ['"left cat"', "right cat"],
            "tgt_img_path": ["a.png", "a.png"],
        },  # fmt: skip
        {"qry_text": "bird", "tgt_text": ["crane", "crane ", "crane"]},
    ]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = TaskSpec(name="ids", modality="image", meta_task="RET", data_files=str(tmp_path / "t.jsonl"), image_root=str(tmp_path))  # fmt: skip
    keys = [c.key for c in load_task(task, protocol="leaderboard").candidates]
    assert keys == ["a.png", "b.png", "a.png:left cat", "a.png:right cat", "crane", "crane "]
    lead = load_task(task, protocol="leaderboard")
    assert [[keys[i] for i in own] for own in lead.query_candidates][0] == ["a.png", "a.png", "b.png"]
    assert lead.candidates[0].text == "Represent the image cat"  # the first listing of a name gives its text
    strict = load_task(task, protocol="strict")
    assert len(strict.candidates) == 6  # a.png|cat, a.png|dog, b.png, a.png|"left cat", a.png|right cat, crane
    assert strict.query_candidates[2] == [5, 5, 5]
