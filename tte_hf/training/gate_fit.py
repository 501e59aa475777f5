"""Fitting the reasoning gate: labels from retrieval ranks, a class-weighted logistic probe, the
trade-off curve of its threshold (reasoner calls vs Hit@1) and the threshold one budget picks from it.
Pure torch, no model.

The constants below are the library's one default for each knob: `train_gate.GateArguments` and the
functions here both use them, and a recipe changes them only with a reason of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: What a new gate reads (a `gate_tte.GATE_FEATURES` name): the query's no-trace embedding (the vector a
#: skipped query returns anyway, from the whole input, images included) beside the mean input embedding
#: of its words: the embedding alone skips few queries that need no trace, the words alone cannot see
#: the picture (the comparison: benchmarks/RESULTS.md, "Reasoning gate: the frozen protocol").
DEFAULT_FEATURE = "joint"
#: Label 1 when the trace moves the gold target up at least this many places: any rank gain counts.
MIN_RANK_GAIN = 1
#: ...or raises the gold target's cosine margin over the best other target this much. In cosine units:
#: at the contrastive temperature 0.02 of the recipes it is 2.5 logits, a gain the training loss feels.
MIN_MARGIN_GAIN = 0.05
#: ...unless the query already wins by this cosine margin without its trace: it then needs none (the
#: same size as `MIN_MARGIN_GAIN`: a win the trace would count as help counts as clear without it).
CLEAR_MARGIN = 0.05
#: Cross-fitting folds: each query's threshold score comes from a probe fitted on the other three
#: quarters of the queries, none of them its own.
FOLDS = 4
#: ``target``: a fold holds out every query of some gold targets, so a probe is scored on answers it
#: never saw, as a gate meets a new task's queries (``row``: shuffled rows).
FOLD_BY_DEFAULT = "target"
#: The one budget: the share of the out-of-fold hits only the trace gives (right with it, wrong
#: without it) that the gate's skips may lose. 0 keeps every one of them; 1 never reasons.
MAX_LOST_SHARE = 0.05
#: How the budget is applied: its fewest-calls point sits where the out-of-fold scores of the queries
#: that need the trace begin, and a new set's scores of such queries spread past it, so the threshold may
#: spend up to this share of the rows in extra calls, down to the point in that window that loses the
#: fewest trace-only hits (0: the budget's edge itself). In the budget's own units, and as large.
CALL_MARGIN = 0.05
#: L2 penalty of the logistic probe, on standardised features, against a loss in which each class
#: weighs half. ``l2: null`` chooses it per fit instead (`choose_l2`, from `L2_GRID`); on the demo's
#: fresh seeds that did not do better than this value (benchmarks/RESULTS.md, "the fourth freeze").
PROBE_L2 = 0.1
#: The penalties `choose_l2` tries.
L2_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
#: LBFGS iterations of the probe: full-batch, so it converges in far fewer on a few thousand queries.
PROBE_STEPS = 200


def _cosine_scores(
    queries: torch.Tensor, candidates: torch.Tensor, gold: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine scores of every query against every candidate, and each query's gold score ``(n, 1)``."""
    q = torch.nn.functional.normalize(queries.float(), dim=-1)
    c = torch.nn.functional.normalize(candidates.float(), dim=-1)
    scores = q @ c.T
    return scores, scores.gather(1, gold.view(-1, 1))


def gold_ranks(queries: torch.Tensor, candidates: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Per query, how many candidates score strictly above its gold candidate (0 = Hit@1). Cosine
    scores: rows are normalised here."""
    scores, gold_scores = _cosine_scores(queries, candidates, gold)
    return (scores > gold_scores).sum(dim=1)


def gold_margins(queries: torch.Tensor, candidates: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Per query, its gold candidate's cosine score minus the best other candidate's (> 0: a clear Hit@1)."""
    scores, gold_scores = _cosine_scores(queries, candidates, gold)
    others = scores.scatter(1, gold.view(-1, 1), float("-inf"))
    return gold_scores.squeeze(1) - others.max(dim=1).values


def trace_helps(
    rank_without: torch.Tensor,
    rank_with: torch.Tensor,
    min_gain: int = MIN_RANK_GAIN,
    margin_without: torch.Tensor | None = None,
    margin_with: torch.Tensor | None = None,
    min_margin_gain: float | None = MIN_MARGIN_GAIN,
    clear_margin: float | None = CLEAR_MARGIN,
) -> torch.Tensor:
    """Label 1 where the trace moves the gold target up by at least ``min_gain`` places, or, given the
    margins (`gold_margins`; ``min_margin_gain=None``: ranks only), raises the gold target's margin over the best
    other target by at least that much, unless the query already wins by ``clear_margin`` without it.

    Ranks alone label a query the model happens to get right without its trace as one the trace does
    not help, however much the trace adds: on the queries a gate is fitted on, the no-trace guess is
    right for some kinds of queries that need reasoning (a riddle whose answer was common in training),
    and a probe learns to skip that kind, which on new inputs guesses wrong. The margin sees the help.
    A lucky guess wins narrowly, though; a query that wins clearly without its trace needs none, and
    labelling it helped (its trace widens an already clear margin) teaches the probe to reason on
    queries like it that need no reasoning."""
    helps = rank_without - rank_with >= min_gain
    if min_margin_gain is not None:
        if margin_without is None or margin_with is None:
            raise ValueError("min_margin_gain needs margin_without and margin_with (gold_margins).")
        widened = margin_with - margin_without >= min_margin_gain
        if clear_margin is not None:
            widened = widened & (margin_without < clear_margin)
        helps = helps | widened
    return helps.float()


FOLD_BY = ("row", "target")


def check_choice(name: str, value: str, allowed) -> None:
    """Raise a ValueError naming ``name``, its ``allowed`` values and ``value`` unless it is one of them."""
    if value not in allowed:
        raise ValueError(f"{name} must be {' or '.join(map(repr, allowed))}, got {value!r}.")


def fold_members(groups: list, folds: int, seed: int = 0, by: str = FOLD_BY_DEFAULT) -> list[list[int]]:
    """Cross-fitting folds as lists of row indices. ``by="row"``: rows shuffled (``seed``) and dealt out
    in turn. ``by="target"``: ``groups`` (one hashable per row, e.g. its gold target) are shuffled and
    dealt out, so every row of a group lands in the same fold and a row's out-of-fold score comes from a
    probe that saw no query with its answer, as a gate meets new tasks' queries."""
    import random

    check_choice("fold_by", by, FOLD_BY)
    if by == "row":
        order = list(range(len(groups)))
        random.Random(seed).shuffle(order)
        return [sorted(order[fold::folds]) for fold in range(folds)]
    keys = sorted(set(groups))
    if len(keys) < folds:
        raise ValueError(
            f"fold_by='target' needs at least {folds} distinct gold targets, got {len(keys)}; lower folds."
        )
    random.Random(seed).shuffle(keys)
    fold_of = {key: n % folds for n, key in enumerate(keys)}
    return [[i for i, group in enumerate(groups) if fold_of[group] == fold] for fold in range(folds)]


def class_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per row, the weight that makes each class half of a loss (a rare class is not ignored)."""
    y = labels.float()
    return torch.where(y > 0, 0.5 / y.sum().clamp(min=1), 0.5 / (1 - y).sum().clamp(min=1))


def fit_probe(
    features: torch.Tensor, labels: torch.Tensor, l2: float, steps: int = PROBE_STEPS, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-weighted L2 logistic regression on the normalised ``features`` (full-batch LBFGS, so the
    result does not depend on batch order): ``(weight (dim,), bias ())`` for the normalised features.
    Each class weighs half of the loss, so a rare "trace helps" class is not ignored.

    It is fitted on standardised features (each dimension centred and scaled to unit spread over these
    rows) and folded back into ``weight`` and ``bias``: the gate's features (mean input embeddings)
    share most of their value across inputs (every prompt repeats the template), so what tells inputs
    apart is small next to the common part, and an L2 penalty on raw unit vectors would flatten it."""
    torch.manual_seed(seed)
    unit = torch.nn.functional.normalize(features.float(), dim=-1)
    centre, spread = unit.mean(0), unit.std(0, correction=0).clamp(min=1e-6)
    x = (unit - centre) / spread
    y = labels.float()
    sample_weight = class_weights(y)
    weight = torch.zeros(x.shape[1], requires_grad=True)
    bias = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        logits = x @ weight + bias
        loss = (sample_weight * torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")).sum()
        loss = loss + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    weight, bias = weight.detach(), bias.detach()
    return weight / spread, bias - (weight * centre / spread).sum()


def out_of_fold_logits(
    features: torch.Tensor, labels: torch.Tensor, members: list[list[int]], l2: float, steps: int = PROBE_STEPS, seed: int = 0
) -> torch.Tensor:  # fmt: skip
    """Each row's probe logit from a probe fitted (`fit_probe`) on the rows of the other folds."""
    logits = torch.zeros(len(labels))
    for fold in members:
        held = torch.tensor(fold)
        rest = torch.tensor(sorted(set(range(len(labels))) - set(fold)))
        weight, bias = fit_probe(features[rest], labels[rest], l2=l2, steps=steps, seed=seed)
        logits[held] = torch.nn.functional.normalize(features[held].float(), dim=-1) @ weight + bias
    return logits


def choose_l2(
    features: torch.Tensor, labels: torch.Tensor, members: list[list[int]], grid=L2_GRID, steps: int = PROBE_STEPS, seed: int = 0
) -> tuple[float, dict[float, float]]:  # fmt: skip
    """The L2 penalty of ``grid`` whose probes predict the held-out folds' labels best (the lowest
    out-of-fold log-loss, each class weighing half, as in the fit; among equal losses the stronger
    penalty), and every penalty's loss. Too weak a penalty fits what tells the fitting rows apart and
    not new ones (which answers a model happens to know without its trace), and its scores then mix the
    queries that need the trace with those that do not."""
    y = labels.float()
    weights = class_weights(y)
    losses = {}
    for l2 in grid:
        logits = out_of_fold_logits(features, y, members, l2, steps, seed)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
        losses[float(l2)] = float((weights * bce).sum())
    best = min(losses, key=lambda l2: (round(losses[l2], 9), -l2))
    return best, losses


@dataclass(frozen=True)
class CurvePoint:
    """One threshold of the trade-off curve and what it gives on the rows it was measured on."""

    threshold: float  # think where score >= threshold
    call_share: float  # share of the rows sent to the reasoner
    hit_at_1: float  # Hit@1 with the reasoned rows' traces and the skipped rows' no-trace vectors
    lost_share: float  # share of the trace-only hits that the skipped rows lose (0 when there are none)


def tradeoff_curve(scores: torch.Tensor, hit_with: torch.Tensor, hit_without: torch.Tensor) -> list[CurvePoint]:
    """Every distinct decision the scores allow, from reasoning on every row to reasoning on none: one
    point per cut between consecutive distinct scores (so a threshold never sits on a seen score), with
    the reasoner calls, Hit@1 and lost trace-only hits it gives. Sorting + cumulative sums: O(n log n)."""
    scores = scores.float()
    order = torch.argsort(scores, stable=True)
    ranked = scores[order]
    with_, without = hit_with.float()[order], hit_without.float()[order]
    only_trace = ((with_ > 0) & (without <= 0)).float()
    zero = torch.zeros(1)
    skipped_hits = torch.cat([zero, without.cumsum(0)])  # hits of rows [0, k) without their trace
    skipped_with = torch.cat([zero, with_.cumsum(0)])
    lost = torch.cat([zero, only_trace.cumsum(0)])
    n, total_with, total_only = len(ranked), float(with_.sum()), float(only_trace.sum())
    # cut k skips rows [0, k): valid where no score is split (k = 0, k = n, or a strict rise)
    cuts = [0, *(torch.nonzero(ranked[1:] > ranked[:-1]).flatten() + 1).tolist(), n]
    points = []
    for k in cuts:
        if k == 0:
            threshold = float(ranked[0]) - 1.0
        elif k == n:
            threshold = float(ranked[-1]) + 1.0
        else:
            threshold = float(ranked[k - 1] + ranked[k]) / 2
        hit = (float(skipped_hits[k]) + total_with - float(skipped_with[k])) / n
        points.append(CurvePoint(threshold, (n - k) / n, hit, float(lost[k]) / total_only if total_only else 0.0))
    return points


def check_budget(max_lost_share: float, call_margin: float) -> None:
    """Raise a ValueError naming the setting unless both are shares in [0, 1]."""
    if not 0.0 <= max_lost_share <= 1.0:
        raise ValueError(f"max_lost_share must be in [0, 1], got {max_lost_share} (a share of the trace-only hits).")
    if not 0.0 <= call_margin <= 1.0:
        raise ValueError(f"call_margin must be in [0, 1], got {call_margin} (a share of the rows).")


def choose_threshold(
    curve: list[CurvePoint], max_lost_share: float = MAX_LOST_SHARE, call_margin: float = CALL_MARGIN
) -> CurvePoint:
    """The point of ``curve`` with the fewest reasoner calls whose skips lose at most ``max_lost_share``
    of the trace-only hits (among equal calls the higher Hit@1), then moved up to ``call_margin`` more
    calls to the point of that window that loses the fewest of them (among equal losses the fewest calls).
    Reasoning on every row loses nothing, so there is always one."""
    check_budget(max_lost_share, call_margin)
    allowed = [point for point in curve if point.lost_share <= max_lost_share + 1e-9]
    edge = min(allowed, key=lambda point: (point.call_share, -point.hit_at_1))
    window = [point for point in allowed if point.call_share <= edge.call_share + call_margin + 1e-9]
    return min(window, key=lambda point: (point.lost_share, point.call_share, -point.hit_at_1))


def thin_curve(curve: list[CurvePoint], points: int = 101) -> list[CurvePoint]:
    """At most ``points`` points of ``curve``, the nearest to evenly spaced call shares (ends kept), for
    ``gate_config.json`` and plots: a curve measured on many rows has a point per distinct score."""
    if len(curve) <= points:
        return list(curve)
    picked = {
        min(range(len(curve)), key=lambda i: abs(curve[i].call_share - step / (points - 1))) for step in range(points)
    }
    return [curve[i] for i in sorted(picked | {0, len(curve) - 1})]
