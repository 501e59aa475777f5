"""Fitting the reasoning gate: labels from retrieval ranks, a class-weighted logistic probe, and the
threshold that skips the most reasoning at (nearly) always-mode Hit@1. Pure torch, no model."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def gold_ranks(queries: torch.Tensor, candidates: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Per query, how many candidates score strictly above its gold candidate (0 = Hit@1). Cosine
    scores: rows are normalised here."""
    q = torch.nn.functional.normalize(queries.float(), dim=-1)
    c = torch.nn.functional.normalize(candidates.float(), dim=-1)
    scores = q @ c.T
    gold_scores = scores.gather(1, gold.view(-1, 1))
    return (scores > gold_scores).sum(dim=1)


def trace_helps(rank_without: torch.Tensor, rank_with: torch.Tensor, min_gain: int = 1) -> torch.Tensor:
    """Label 1 where the trace moves the gold target up by at least ``min_gain`` places."""
    return (rank_without - rank_with >= min_gain).float()


def fit_probe(
    features: torch.Tensor, labels: torch.Tensor, l2: float = 1e-3, steps: int = 200, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-weighted L2 logistic regression on the normalised ``features`` (full-batch LBFGS, so the
    result does not depend on batch order): ``(weight (dim,), bias ())``. Each class weighs half of
    the loss, so a rare "trace helps" class is not ignored."""
    torch.manual_seed(seed)
    x = torch.nn.functional.normalize(features.float(), dim=-1)
    y = labels.float()
    positives = y.sum().clamp(min=1)
    negatives = (1 - y).sum().clamp(min=1)
    sample_weight = torch.where(y > 0, 0.5 / positives, 0.5 / negatives)
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
    return weight.detach(), bias.detach()


@dataclass(frozen=True)
class Threshold:
    """The chosen threshold and what it gives on the split it was chosen on."""

    threshold: float
    skip_rate: float
    hit_auto: float
    hit_always: float
    hit_never: float


def choose_threshold(
    scores: torch.Tensor, hit_with: torch.Tensor, hit_without: torch.Tensor, max_hit_drop: float = 0.01
) -> Threshold:
    """The threshold (think where score >= it) that skips the most rows while auto-mode Hit@1 stays
    within ``max_hit_drop`` (absolute) of always-mode Hit@1; among equal skip rates the higher Hit@1.
    Candidates lie between consecutive distinct scores, so a threshold never sits on a seen score."""
    scores = scores.float()
    hit_with, hit_without = hit_with.float(), hit_without.float()
    distinct = torch.unique(scores)
    candidates = [float(distinct[0]) - 1.0, *((distinct[1:] + distinct[:-1]) / 2).tolist(), float(distinct[-1]) + 1.0]
    always, never = float(hit_with.mean()), float(hit_without.mean())
    best = None
    for threshold in candidates:
        think = scores >= threshold
        hit = float(torch.where(think, hit_with, hit_without).mean())
        skip = float((~think).float().mean())
        if hit < always - max_hit_drop - 1e-9:
            continue
        if best is None or (skip, hit) > (best.skip_rate, best.hit_auto):
            best = Threshold(threshold, skip, hit, always, never)
    assert best is not None  # the lowest candidate thinks everywhere: hit == always
    return best
