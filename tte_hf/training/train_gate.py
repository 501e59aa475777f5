"""``tte-hf train-gate``: learn when a TTE model's reasoning is worth running (``think="auto"``).

For every training query (MMEB-train style rows + their ``generate-ecr`` traces) the model embeds the
query with and without its trace; the gold target's rank among the dataset's targets (positives and
hard negatives) and its cosine margin over the best other target give the label (1: the trace moves
it up, or raises that margin by ``min_margin_gain`` where it was under ``clear_margin``). A logistic probe on the gate's runtime
feature (`tte_hf.models.tte.gate_tte`) is cross-fitted: each query's score for choosing the threshold comes from
a probe fitted on the other folds, so every query serves as held-out data once; the threshold keeps
always-mode Hit@1 while skipping the most reasoning, and the gate saved is the probe fitted on all
queries. Use data the model did not train on (the demo's dev split): on its own training rows a model
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

logger = logging.getLogger(__name__)


@dataclass
class GateArguments:
    """The gate recipe (``recipes/gate/*.yaml``)."""

    model_name_or_path: str = field(metadata={"help": "A saved TTE sentence-transformers model folder."})
    output_dir: str = field(metadata={"help": "Where the model with its gate goes (may equal model_name_or_path)."})
    datasets: list[dict[str, Any]] = field(default_factory=list, metadata={"help": "MMEB-train rows + query_ecr (YAML)."})  # fmt: skip
    min_rank_gain: int = field(default=1, metadata={"help": "Label 1 when the trace moves the gold target up this much."})  # fmt: skip
    # Cosine units: with the contrastive temperature 0.02 of the recipes, 0.05 is 2.5 logits. Chosen on
    # the demo's seeds 0-2 (benchmarks/RESULTS.md): no riddle skipped on any, fewest calls on the whole.
    min_margin_gain: float | None = field(default=0.05, metadata={"help": "...or raises its cosine margin over the best other target this much (null: ranks only)."})  # fmt: skip
    # 0.05 (= min_margin_gain): on the demo's seed 4 traces that widened clear wins labelled about 78 of
    # 256 plain dev queries helped, and the unified gate reasoned on 25 held-out plain queries. With
    # target folds, every gate of seeds 0, 1, 4, 5 reasons on exactly the riddles (benchmarks/RESULTS.md).
    clear_margin: float | None = field(default=0.05, metadata={"help": "...unless the query already wins by this cosine margin without its trace (null: no such limit)."})  # fmt: skip
    folds: int = field(default=4, metadata={"help": "Cross-fitting folds: a query's threshold score comes from a probe fitted without it."})  # fmt: skip
    # target: a query's threshold score then comes from a probe that saw no query with its answer, as a
    # gate meets a new task's queries. Row folds put the unified gate's threshold among held-out plain
    # queries on the demo's seeds 4 and 5 (benchmarks/RESULTS.md).
    fold_by: str = field(default="target", metadata={"help": "target: a fold holds out every query of some gold targets; row: shuffled rows."})  # fmt: skip
    max_hit_drop: float = field(default=0.01, metadata={"help": "Out-of-fold Hit@1 a skip may lose, as hit_drop counts it (a share of the queries)."})  # fmt: skip
    # lost: the hits only the trace gives that a skip loses, nothing offsetting them. net lets hits won
    # back where the trace hurts offset them: on the demo's seed 3 (AMD CPU) that stopped the unified gate
    # reasoning on 136 held-out plain queries, but on seed 2 its out-of-fold threshold then skipped about
    # 20 dev riddles, paid for by 27 plain queries the trace got wrong (benchmarks/RESULTS.md). Reasoning
    # too often costs time; skipping riddles costs Hit@1.
    hit_drop: str = field(default="lost", metadata={"help": "lost: the hits only the trace gives that a skip loses; net: minus the hits it wins back."})  # fmt: skip
    # 0.05: on the demo's seeds 0-4, 0.1 reasoned on up to 90 of 256 plain queries besides the riddles
    # and 0.02 skipped riddles the trace was needed for; 0.05 kept both checks on 9 of 10 gates (RESULTS).
    skip_tolerance: float = field(default=0.05, metadata={"help": "Skip rate given up for the lowest such threshold (margin)."})  # fmt: skip
    l2: float = field(default=0.1, metadata={"help": "L2 penalty of the logistic probe (on standardised features)."})
    max_steps: int = field(default=200, metadata={"help": "LBFGS iterations."})
    batch_size: int = field(default=16, metadata={"help": "Encode batch size."})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, ... (default: sentence-transformers' choice)."})  # fmt: skip
    seed: int = field(default=0, metadata={"help": "Split and fit seed."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a non-empty output_dir."})


def train_gate(config: str | os.PathLike | dict[str, Any] | None = None, argv: list[str] | None = None) -> dict:
    """Run the gate recipe ``config`` (YAML path or dict; ``argv`` = ``--key value`` overrides); returns
    the gate's ``info`` (also in ``gate_config.json``)."""
    from .config import parse_recipe

    (args,) = parse_recipe([GateArguments], config, argv)
    return fit_gate(args)


def fit_gate(args: GateArguments) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer

    from .. import __version__
    from ..models.tte.configuration_tte import resolve_reference
    from .data import DatasetSpec, load_pairs
    from .gate_fit import (
        FOLD_BY,
        HIT_DROP,
        check_choice,
        choose_threshold,
        fit_probe,
        fold_members,
        gold_margins,
        gold_ranks,
        trace_helps,
    )

    if args.folds < 2:
        raise ValueError(
            f"folds must be >= 2 (each query is scored by a probe fitted on the others), got {args.folds}."
        )
    check_choice("fold_by", args.fold_by, FOLD_BY)
    check_choice("hit_drop", args.hit_drop, HIT_DROP)
    if args.min_margin_gain is not None and not args.min_margin_gain > 0:
        raise ValueError(f"min_margin_gain must be > 0 (or null for ranks only), got {args.min_margin_gain}.")
    if not args.datasets:
        raise ValueError("The recipe names no `datasets`; add at least one (name, path, query_ecr, ...).")
    specs = [DatasetSpec.from_dict(raw, i) for i, raw in enumerate(args.datasets)]
    for spec in specs:
        if not spec.query_ecr:
            raise ValueError(f"Dataset {spec.name!r} has no `query_ecr`: the gate learns from traces; add one.")
    source = Path(args.model_name_or_path)
    if not (source / "modules.json").is_file():
        raise FileNotFoundError(f"model_name_or_path={source} is not a saved sentence-transformers model folder.")
    # The data is read and the folds dealt before anything is copied or encoded: a recipe the data cannot
    # serve fails in seconds and leaves output_dir as it was.
    trace_field = "raw" if _is_unified(source) else "ecr"  # the unified head reads the generated text as is
    datasets = [(spec, load_pairs(spec, traces=trace_field)) for spec in specs]
    pools = [_targets(pairs) for _, pairs in datasets]
    groups = [(n, int(g)) for n, (_, gold) in enumerate(pools) for g in gold]
    if len(groups) < args.folds:
        raise ValueError(f"{len(groups)} queries cannot fill {args.folds} folds; add data or lower folds.")
    members = fold_members(groups, args.folds, args.seed, args.fold_by)
    output = _prepare_output(source, Path(args.output_dir), args.overwrite_output_dir)
    model = SentenceTransformer(str(output), trust_remote_code=True, device=args.device)
    module = model[0]
    if isinstance(getattr(module, "reasoner_name_or_path", None), str):  # in a copy: as the source folder names it
        module.reasoner_name_or_path = resolve_reference(module.reasoner_name_or_path, source / _module_path(source))

    features, hit_with, hit_without, labels, described = [], [], [], [], []
    for (spec, pairs), (targets, gold) in zip(datasets, pools):
        queries = [_input(p.query, p.task) for p in pairs]
        docs = model.encode_document([_input(t, None) for t in targets], batch_size=args.batch_size, convert_to_tensor=True)  # fmt: skip
        without = model.encode_query(queries, think=False, batch_size=args.batch_size, convert_to_tensor=True)
        traced = [{**q, "reasoning": p.query.trace} for q, p in zip(queries, pairs)]
        with_trace = model.encode_query(traced, think=True, batch_size=args.batch_size, convert_to_tensor=True)
        rank0, rank1 = gold_ranks(without, docs, gold), gold_ranks(with_trace, docs, gold)
        features.append(model.gate_features(queries, batch_size=args.batch_size).float().cpu())
        hit_without.append((rank0 == 0).float().cpu())
        hit_with.append((rank1 == 0).float().cpu())
        margins = (gold_margins(without, docs, gold), gold_margins(with_trace, docs, gold))
        labels.append(trace_helps(rank0, rank1, args.min_rank_gain, *margins, args.min_margin_gain, args.clear_margin).cpu())  # fmt: skip
        described.append({"name": spec.name, "file": Path(spec.path).name, "queries": len(pairs), "targets": len(targets)})  # fmt: skip
    x, y = torch.cat(features), torch.cat(labels)
    hit1, hit0 = torch.cat(hit_with), torch.cat(hit_without)
    gate_cls = _gate_class(module)
    gate = gate_cls(x.shape[1])

    def fitted(rows: torch.Tensor):
        weight, bias = fit_probe(x[rows], y[rows], l2=args.l2, steps=args.max_steps, seed=args.seed)
        with torch.no_grad():
            gate.linear.weight.copy_(weight.view(1, -1))
            gate.linear.bias.copy_(bias.view(1))
        return gate

    out_of_fold = torch.zeros(len(y))
    for fold in range(args.folds):
        held = torch.tensor(members[fold])
        rest = torch.tensor(sorted(set(range(len(y))) - set(members[fold])))
        out_of_fold[held] = fitted(rest).score(x[held])
    chosen = choose_threshold(out_of_fold, hit1, hit0, args.max_hit_drop, args.skip_tolerance, args.hit_drop)
    scores = fitted(torch.arange(len(y))).score(x)  # the gate saved: fitted on every query
    gate.threshold.fill_(chosen.threshold)
    decisions = scores >= chosen.threshold
    oof_decisions = out_of_fold >= chosen.threshold
    info = {
        "trained_with": f"tte-hf {__version__} train-gate",
        "feature": gate.feature,
        "label": _label_rule(args),
        "threshold_rule": f"{args.folds}-fold cross-fitted scores (folds by {args.fold_by}): the lowest threshold that skips within {args.skip_tolerance} of the most while skipping at most {args.max_hit_drop} of the queries as {HIT_DROP[args.hit_drop]}",  # fmt: skip
        "datasets": described,
        "queries": len(y),
        "trace_helps_rate": float(y.mean()),
        "train": {"queries": len(y), "accuracy": float((decisions.float() == y).float().mean())},
        "held_out": {  # out of fold: every query, scored by a probe that did not see it
            "queries": len(y),
            "folds": args.folds,
            "skip_rate": chosen.skip_rate,
            "hit_at_1_auto": chosen.hit_auto,
            "hit_at_1_always": chosen.hit_always,
            "hit_at_1_never": chosen.hit_never,
            "accuracy": float((oof_decisions.float() == y).float().mean()),
        },
        "skip_rate_all": float((~decisions).float().mean()),
        "recipe": recorded_recipe(args),
    }
    gate.info = info
    module.set_gate(gate.to(next(module.parameters()).device))
    module.query_reasoning = "auto"
    folder = output / _module_path(output)
    module.save_config(str(folder))
    module._save_gate(str(folder))
    logger.info("Gate: out-of-fold skip rate %.3f, Hit@1 auto %.3f / always %.3f / never %.3f", chosen.skip_rate, chosen.hit_auto, chosen.hit_always, chosen.hit_never)  # fmt: skip
    print(json.dumps({"output_dir": str(output), **info["held_out"]}, indent=2))
    return info


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
    return output


def _module_path(folder: Path) -> str:
    return json.loads((folder / "modules.json").read_text())[0]["path"]


def _is_unified(folder: Path) -> bool:
    """Whether the folder's TTE module is the unified model (read from ``modules.json``, nothing loaded)."""
    return json.loads((folder / "modules.json").read_text())[0]["type"].endswith(".TTEUnifiedTransformer")


def _gate_class(module):
    """The `ReasoningGate` class of the module's own code: ``tte_hf.models.tte.gate_tte`` or a repo's shipped copy."""
    import importlib

    return importlib.import_module(type(module).__module__.rsplit(".", 1)[0] + ".gate_tte").ReasoningGate


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
