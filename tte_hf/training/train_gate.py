"""``tte-hf train-gate``: learn when a TTE model's reasoning is worth running (``think="auto"``).

For every training query (MMEB-train style rows + their ``generate-ecr`` traces) the model embeds the
query with and without its trace; the gold target's rank among the dataset's targets (positives and
hard negatives) and its cosine margin over the best other target give the label (1: the trace moves
it up, or raises that margin by ``min_margin_gain`` where it was under ``clear_margin``). A logistic probe on the
recipe's ``feature`` (`tte_hf.models.tte.gate_tte`: ``embedding``, the query's no-trace embedding, which the
labelling has just computed, ``text`` or ``joint``, both) is cross-fitted: each query's score comes from
a probe fitted on the other folds, so every query serves as held-out data once; the threshold is read
off that out-of-fold trade-off curve by the budget (`gate_fit.choose_threshold`), and the gate saved is
the probe fitted on all queries. Use data the model did not train on (the demo's dev split): on its own training rows a model
often needs no trace, and the gate would learn to skip where reasoning helps on new inputs. The output
folder is the model with the gate added (``gate_config.json`` + ``gate.safetensors``) and
``query_reasoning: auto``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .gate_fit import (
    CALL_MARGIN,
    CLEAR_MARGIN,
    DEFAULT_FEATURE,
    FOLD_BY_DEFAULT,
    FOLDS,
    MAX_LOST_SHARE,
    MIN_MARGIN_GAIN,
    MIN_RANK_GAIN,
    PROBE_L2,
    PROBE_STEPS,
)

logger = logging.getLogger(__name__)

#: The trade-off curve's plot, next to ``gate_config.json``.
TRADEOFF_PLOT = "gate_tradeoff.png"


@dataclass
class GateArguments:
    """The gate recipe (``recipes/gate/*.yaml``). The defaults are `gate_fit`'s, where each says what
    it means."""

    model_name_or_path: str = field(metadata={"help": "A saved TTE sentence-transformers model folder."})
    output_dir: str = field(metadata={"help": "Where the model with its gate goes (may equal model_name_or_path)."})
    datasets: list[dict[str, Any]] = field(default_factory=list, metadata={"help": "MMEB-train rows + query_ecr (YAML), rows the model did not train on."})  # fmt: skip
    feature: str = field(default=DEFAULT_FEATURE, metadata={"help": "What the gate reads: embedding (the query's no-trace embedding, images included), text (the mean input embedding of its prompt's text tokens) or joint (both)."})  # fmt: skip
    min_rank_gain: int = field(default=MIN_RANK_GAIN, metadata={"help": "Label 1 when the trace moves the gold target up this much."})  # fmt: skip
    min_margin_gain: float | None = field(default=MIN_MARGIN_GAIN, metadata={"help": "...or raises its cosine margin over the best other target this much (null: ranks only)."})  # fmt: skip
    clear_margin: float | None = field(default=CLEAR_MARGIN, metadata={"help": "...unless the query already wins by this cosine margin without its trace (null: no such limit)."})  # fmt: skip
    folds: int = field(default=FOLDS, metadata={"help": "Cross-fitting folds: a query's threshold score comes from a probe fitted without it."})  # fmt: skip
    fold_by: str = field(default=FOLD_BY_DEFAULT, metadata={"help": "target: a fold holds out every query of some gold targets; row: shuffled rows."})  # fmt: skip
    max_lost_share: float = field(default=MAX_LOST_SHARE, metadata={"help": "The budget: share of the out-of-fold hits only the trace gives that skipping may lose (0: none; 1: never reason)."})  # fmt: skip
    call_margin: float = field(default=CALL_MARGIN, metadata={"help": "Extra reasoner calls (a share of the rows) the threshold may spend past the budget's edge to lose fewer trace-only hits (0: the edge)."})  # fmt: skip
    l2: float | None = field(default=PROBE_L2, metadata={"help": "L2 penalty of the logistic probe (on standardised features); null: chosen per fit from gate_fit.L2_GRID by the out-of-fold log-loss."})  # fmt: skip
    max_steps: int = field(default=PROBE_STEPS, metadata={"help": "LBFGS iterations."})
    batch_size: int = field(default=16, metadata={"help": "Encode batch size."})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, ... (default: sentence-transformers' choice)."})  # fmt: skip
    seed: int = field(default=0, metadata={"help": "Fold and fit seed."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a non-empty output_dir."})


def train_gate(config: str | os.PathLike | dict[str, Any] | None = None, argv: list[str] | None = None) -> dict:
    """Run the gate recipe ``config`` (YAML path or dict; ``argv`` = ``--key value`` overrides); returns
    the gate's ``info`` (also in ``gate_config.json``)."""
    from .config import parse_recipe

    (args,) = parse_recipe([GateArguments], config, argv)
    return fit_gate(args)


@dataclass
class _Measured:
    """What the model's vectors say about every query of the recipe's datasets, in dataset order."""

    features: Any  # (n, d) gate features
    labels: Any  # (n,) 1: the trace helps
    hit_with: Any  # (n,) Hit@1 with the trace
    hit_without: Any  # (n,) Hit@1 without it
    described: list[dict[str, Any]]  # per dataset: name, file, queries, targets


def fit_gate(args: GateArguments) -> dict:
    """Fit, choose the threshold of and save the gate of ``args``; returns the gate's ``info``. The data
    is read and the folds dealt before anything is copied or encoded: a recipe the data cannot serve
    fails in seconds and leaves ``output_dir`` as it was."""
    from sentence_transformers import SentenceTransformer

    from ..models.tte.configuration_tte import resolve_reference

    _check_arguments(args)
    source = Path(args.model_name_or_path)
    if not (source / "modules.json").is_file():
        raise FileNotFoundError(f"model_name_or_path={source} is not a saved sentence-transformers model folder.")
    datasets = _read_datasets(args, trace_field="raw" if _is_unified(source) else "ecr")
    members = _deal_folds(datasets, args)
    output = _prepare_output(source, Path(args.output_dir), args.overwrite_output_dir)
    model = SentenceTransformer(str(output), trust_remote_code=True, device=args.device)
    module = model[0]
    if isinstance(getattr(module, "reasoner_name_or_path", None), str):  # in a copy: as the source folder names it
        module.reasoner_name_or_path = resolve_reference(module.reasoner_name_or_path, source / _module_path(source))
    gate_code = _gate_code(module)
    measured = _measure(model, datasets, args, gate_code.GATE_FEATURES[args.feature])
    gate = gate_code.ReasoningGate(measured.features.shape[1], feature=gate_code.GATE_FEATURES[args.feature])
    chosen, curve, out_of_fold, l2, l2_losses = _cross_fit(gate, measured, members, args)
    gate.info = _gate_info(args, gate, measured, chosen, curve, out_of_fold, (l2, l2_losses))
    module.set_gate(gate.to(next(module.parameters()).device))
    module.query_reasoning = "auto"
    folder = output / _module_path(output)
    module.save_config(str(folder))
    module.gate_step.save(str(folder))
    plot_tradeoff(gate.info, folder / TRADEOFF_PLOT)
    held = gate.info["held_out"]
    logger.info("Gate: out-of-fold skip rate %.3f, Hit@1 auto %.3f / always %.3f / never %.3f", held["skip_rate"], held["hit_at_1_auto"], held["hit_at_1_always"], held["hit_at_1_never"])  # fmt: skip
    print(json.dumps({"output_dir": str(output), **gate.info["held_out"]}, indent=2))
    return gate.info


def _check_arguments(args: GateArguments) -> None:
    """Refuse settings no data can serve, naming the setting."""
    from ..models.tte.gate_tte import GATE_FEATURES
    from .gate_fit import FOLD_BY, check_budget, check_choice

    check_choice("feature", args.feature, GATE_FEATURES)
    if args.folds < 2:
        raise ValueError(
            f"folds must be >= 2 (each query is scored by a probe fitted on the others), got {args.folds}."
        )
    check_choice("fold_by", args.fold_by, FOLD_BY)
    check_budget(args.max_lost_share, args.call_margin)
    if args.l2 is not None and not args.l2 >= 0:
        raise ValueError(f"l2 must be >= 0 (or null to choose it by cross-fitting), got {args.l2}.")
    if args.min_margin_gain is not None and not args.min_margin_gain > 0:
        raise ValueError(f"min_margin_gain must be > 0 (or null for ranks only), got {args.min_margin_gain}.")
    if not args.datasets:
        raise ValueError("The recipe names no `datasets`; add at least one (name, path, query_ecr, ...).")


def _read_datasets(args: GateArguments, trace_field: str) -> list[tuple[Any, list, list, Any]]:
    """Per dataset of the recipe: (spec, pairs, candidate targets, each pair's gold index). The unified
    head reads the generated text as is (``trace_field="raw"``), a separate embedder the parsed trace."""
    from .data import DatasetSpec, load_pairs

    specs = [DatasetSpec.from_dict(raw, i) for i, raw in enumerate(args.datasets)]
    for spec in specs:
        if not spec.query_ecr:
            raise ValueError(f"Dataset {spec.name!r} has no `query_ecr`: the gate learns from traces; add one.")
    datasets = []
    for spec in specs:
        pairs = load_pairs(spec, traces=trace_field)
        datasets.append((spec, pairs, *_targets(pairs)))
    return datasets


def _deal_folds(datasets: list[tuple[Any, list, list, Any]], args: GateArguments) -> list[list[int]]:
    from .gate_fit import fold_members

    groups = [(n, int(g)) for n, (_, _, _, gold) in enumerate(datasets) for g in gold]
    if len(groups) < args.folds:
        raise ValueError(f"{len(groups)} queries cannot fill {args.folds} folds; add data or lower folds.")
    return fold_members(groups, args.folds, args.seed, args.fold_by)


def _measure(model, datasets: list[tuple[Any, list, list, Any]], args: GateArguments, feature: str) -> _Measured:
    """Embed every query with and without its trace and every target once; label each query. The gate's
    features: for the no-trace embedding, the no-trace vectors just computed (as ``think="auto"`` computes
    them: full width, not normalised), else ``model.gate_features``."""
    import torch
    from sentence_transformers.util import truncate_embeddings

    from ..models.tte.gate_tte import JOINT_FEATURES, NO_TRACE_EMBEDDING, TEXT_EMBEDDINGS, joint_features
    from .gate_fit import gold_margins, gold_ranks, trace_helps

    features, labels, hit_with, hit_without, described = [], [], [], [], []
    encode = {"batch_size": args.batch_size, "convert_to_tensor": True}
    for spec, pairs, targets, gold in datasets:
        queries = [_input(p.query, p.task) for p in pairs]
        docs = model.encode_document([_input(t, None) for t in targets], **encode)
        with model.truncate_embeddings(None):  # the gate reads the full width; the ranks the model's own
            no_trace = model.encode_query(queries, think=False, **encode)
        without = truncate_embeddings(no_trace, model.truncate_dim)
        traced = [{**q, "reasoning": p.query.trace} for q, p in zip(queries, pairs)]
        with_trace = model.encode_query(traced, think=True, **encode)
        rank0, rank1 = gold_ranks(without, docs, gold), gold_ranks(with_trace, docs, gold)
        margins = (gold_margins(without, docs, gold), gold_margins(with_trace, docs, gold))
        if feature == JOINT_FEATURES:
            text = model.gate_features(queries, batch_size=args.batch_size, feature=TEXT_EMBEDDINGS)
            no_trace = joint_features(no_trace, text)
        elif feature != NO_TRACE_EMBEDDING:
            no_trace = model.gate_features(queries, batch_size=args.batch_size, feature=feature)
        features.append(no_trace.float().cpu())
        hit_without.append((rank0 == 0).float().cpu())
        hit_with.append((rank1 == 0).float().cpu())
        labels.append(trace_helps(rank0, rank1, args.min_rank_gain, *margins, args.min_margin_gain, args.clear_margin).cpu())  # fmt: skip
        described.append({"name": spec.name, "file": Path(spec.path).name, "queries": len(pairs), "targets": len(targets)})  # fmt: skip
    return _Measured(torch.cat(features), torch.cat(labels), torch.cat(hit_with), torch.cat(hit_without), described)


def _cross_fit(gate, measured: _Measured, members: list[list[int]], args: GateArguments):
    """The probe's L2 penalty (the recipe's, or `gate_fit.choose_l2`'s), the out-of-fold trade-off
    curve (each query scored by a probe fitted on the other folds) and the point the budget picks from
    it; then ``gate``'s probe fitted on every query, with that point's threshold. Returns (the chosen
    `CurvePoint`, the curve, the out-of-fold scores, the penalty and what `choose_l2` measured)."""
    import torch

    from .gate_fit import choose_l2, choose_threshold, fit_probe, out_of_fold_logits, tradeoff_curve

    x, y = measured.features, measured.labels
    l2, losses = (args.l2, {}) if args.l2 is not None else choose_l2(x, y, members, steps=args.max_steps, seed=args.seed)  # fmt: skip
    out_of_fold = torch.sigmoid(out_of_fold_logits(x, y, members, l2, args.max_steps, args.seed))
    curve = tradeoff_curve(out_of_fold, measured.hit_with, measured.hit_without)
    chosen = choose_threshold(curve, args.max_lost_share, args.call_margin)
    weight, bias = fit_probe(x, y, l2=l2, steps=args.max_steps, seed=args.seed)  # the gate saved: every query
    with torch.no_grad():
        gate.linear.weight.copy_(weight.view(1, -1))
        gate.linear.bias.copy_(bias.view(1))
    gate.threshold.fill_(chosen.threshold)
    return chosen, curve, out_of_fold, l2, losses


def _gate_info(args: GateArguments, gate, measured: _Measured, chosen, curve, out_of_fold, penalty) -> dict[str, Any]:  # fmt: skip
    """How the gate was trained and what it gives, as ``gate_config.json`` records it (``penalty``: the
    probe's L2 and, where `choose_l2` chose it, each tried penalty's out-of-fold loss)."""
    from .. import __version__
    from .gate_fit import thin_curve

    y = measured.labels
    decisions = gate.score(measured.features) >= chosen.threshold
    oof_decisions = out_of_fold >= chosen.threshold
    return {
        "trained_with": f"tte-hf {__version__} train-gate",
        "feature": gate.feature,
        "label": _label_rule(args),
        "threshold_rule": f"{args.folds}-fold cross-fitted scores (folds by {args.fold_by}): the fewest reasoner calls whose skips lose at most {args.max_lost_share:.0%} of the hits only the trace gives, then up to {args.call_margin:.0%} more calls to lose fewer",  # fmt: skip
        "datasets": measured.described,
        "queries": len(y),
        "trace_helps_rate": float(y.mean()),
        "train": {"queries": len(y), "accuracy": float((decisions.float() == y).float().mean())},
        "held_out": {  # out of fold: every query, scored by a probe that did not see it
            "queries": len(y),
            "folds": args.folds,
            "skip_rate": 1.0 - chosen.call_share,
            "lost_share": chosen.lost_share,
            "hit_at_1_auto": chosen.hit_at_1,
            "hit_at_1_always": curve[0].hit_at_1,
            "hit_at_1_never": curve[-1].hit_at_1,
            "accuracy": float((oof_decisions.float() == y).float().mean()),
        },
        # reasoner calls vs Hit@1 over thresholds (out of fold), for choosing another budget
        "curve": [{k: round(v, 6) for k, v in asdict(point).items()} for point in thin_curve(curve)],
        "skip_rate_all": float((~decisions).float().mean()),
        "probe_l2": {"l2": penalty[0], "out_of_fold_loss": {str(k): round(v, 6) for k, v in penalty[1].items()}},
        "recipe": recorded_recipe(args),
    }


def plot_tradeoff(info: dict[str, Any], path: Path) -> None:
    """Out-of-fold Hit@1 against the share of queries reasoned on, over the gate's thresholds, with the
    chosen one marked (``info``: what `_gate_info` returns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    calls = [100 * point["call_share"] for point in info["curve"]]
    hits = [100 * point["hit_at_1"] for point in info["curve"]]
    held = info["held_out"]
    figure, axes = plt.subplots(figsize=(5, 3.5))
    axes.plot(calls, hits, drawstyle="steps-post", label="gate (out of fold)")
    axes.plot([0, 100], [100 * held["hit_at_1_never"], 100 * held["hit_at_1_always"]], "--", color="grey", label="random gate")  # fmt: skip
    axes.scatter([100 * (1 - held["skip_rate"])], [100 * held["hit_at_1_auto"]], color="C3", zorder=3, label="chosen")
    axes.set(xlabel="reasoner calls (% of queries)", ylabel="Hit@1 (%)", title=f"{held['queries']} held-out queries")
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def recorded_recipe(args: GateArguments) -> dict[str, Any]:
    """The recipe as ``gate_config.json`` records it: every setting that shapes the gate, not where the
    model is read from or written to, nor the device."""
    return {k: v for k, v in asdict(args).items() if k not in ("model_name_or_path", "output_dir", "device")}


def _label_rule(args: GateArguments) -> str:
    rule = f"1 when the query's trace moves its gold target up >= {args.min_rank_gain} place(s)"
    if args.min_margin_gain is not None:
        rule += f" or raises its cosine margin over the best other target by >= {args.min_margin_gain}"
        if args.clear_margin is not None:
            rule += f" where that margin was < {args.clear_margin} without it"
    return rule + " among its dataset's targets (positives and hard negatives)"


def _prepare_output(source: Path, output: Path, overwrite: bool) -> Path:
    """``output`` holding the model with this install's remote code (the gate needs it); a copy of
    ``source`` unless they are the same folder."""
    from ..models.remote_code import copy_remote_code

    if output.resolve() != source.resolve():
        if output.exists() and any(output.iterdir()):
            if not overwrite:
                raise FileExistsError(f"output_dir {output} is not empty; choose another or set overwrite_output_dir.")
            shutil.rmtree(output)
        shutil.copytree(source, output)
    copy_remote_code(output / _module_path(output))
    _drop_unreadable_gate(output / _module_path(output))
    return output


def _drop_unreadable_gate(folder: Path) -> None:
    """Remove a gate this code cannot read (a feature it does not know: another tte-hf version's), which
    the model would refuse to load with; the gate fitted here replaces it anyway."""
    from ..models.tte.gate_tte import GATE_CONFIG, GATE_FEATURES, GATE_WEIGHTS, UNRECORDED_FEATURE

    config = folder / GATE_CONFIG
    if not config.is_file():
        return
    feature = json.loads(config.read_text()).get("feature", UNRECORDED_FEATURE)
    if feature not in GATE_FEATURES.values():
        logger.warning("Replacing %s's gate, which reads %r, a feature this tte-hf does not know.", folder, feature)
        for name in (GATE_CONFIG, GATE_WEIGHTS):
            (folder / name).unlink(missing_ok=True)


def _module_path(folder: Path) -> str:
    return json.loads((folder / "modules.json").read_text())[0]["path"]


def _is_unified(folder: Path) -> bool:
    """Whether the folder's TTE module is the unified model (read from ``modules.json``, nothing loaded)."""
    return json.loads((folder / "modules.json").read_text())[0]["type"].endswith(".TTEUnifiedTransformer")


def _gate_code(module):
    """The ``gate_tte`` module of the module's own code (`ReasoningGate`, `GATE_FEATURES`):
    ``tte_hf.models.tte.gate_tte`` or a repo's shipped copy."""
    import importlib

    return importlib.import_module(type(module).__module__.rsplit(".", 1)[0] + ".gate_tte")


def _input(side, task: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if side.text:
        item["text"] = side.text
    if side.images:
        item["images"] = list(side.images)
    if task:
        item["task"] = task
    return item


def _targets(pairs) -> tuple[list, Any]:
    """The candidate pool, the dataset's distinct targets (positives, then the hard negatives of a dataset
    with ``hard_negatives``), and each pair's gold index in it. Negatives matter where the positives alone
    are few and unlike each other: without them a query need not be understood to rank first."""
    import torch

    index: dict[tuple, int] = {}
    targets = []

    def add(side) -> int:
        key = (side.text, side.images)
        if key not in index:
            index[key] = len(targets)
            targets.append(side)
        return index[key]

    gold = [add(pair.positive) for pair in pairs]
    for pair in pairs:
        if pair.negative is not None:
            add(pair.negative)
    return targets, torch.tensor(gold)
