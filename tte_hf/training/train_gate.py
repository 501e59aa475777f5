"""``tte-hf train-gate``: learn when a TTE model's reasoning is worth running (``think="auto"``).

For every training query (MMEB-train style rows + their ``generate-ecr`` traces) the model embeds the
query with and without its trace; the gold target's rank among the dataset's targets gives the label
(1: the trace moves it up). A logistic probe on the no-trace embedding (the gate's runtime feature,
see `tte_hf.gate_tte`) is fitted on one split; the threshold is chosen on a held-out split to keep
always-mode Hit@1 while skipping the most reasoning. The output folder is the model with the gate
added (``gate_config.json`` + ``gate.safetensors``) and ``query_reasoning: auto``.
"""

from __future__ import annotations

import json
import logging
import os
import random
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
    held_out_fraction: float = field(default=0.25, metadata={"help": "Queries kept out of the fit to choose the threshold."})  # fmt: skip
    max_hit_drop: float = field(default=0.01, metadata={"help": "Allowed Hit@1 loss vs always-reasoning on the held-out split."})  # fmt: skip
    l2: float = field(default=1e-3, metadata={"help": "L2 penalty of the logistic probe."})
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
    from .data import DatasetSpec, load_pairs
    from .gate_fit import choose_threshold, fit_probe, gold_ranks, trace_helps

    if not 0 < args.held_out_fraction < 1:
        raise ValueError(f"held_out_fraction must lie in (0, 1), got {args.held_out_fraction}.")
    if not args.datasets:
        raise ValueError("The recipe names no `datasets`; add at least one (name, path, query_ecr, ...).")
    specs = [DatasetSpec.from_dict(raw, i) for i, raw in enumerate(args.datasets)]
    for spec in specs:
        if not spec.query_ecr:
            raise ValueError(f"Dataset {spec.name!r} has no `query_ecr`: the gate learns from traces; add one.")
    source = Path(args.model_name_or_path)
    if not (source / "modules.json").is_file():
        raise FileNotFoundError(f"model_name_or_path={source} is not a saved sentence-transformers model folder.")
    output = _prepare_output(source, Path(args.output_dir), args.overwrite_output_dir)
    model = SentenceTransformer(str(output), trust_remote_code=True, device=args.device)
    module = model[0]
    unified = hasattr(module, "trace_token_ids")
    trace_field = "raw" if unified else "ecr"  # the unified head reads the generated text as is

    features, hit_with, hit_without, labels, described = [], [], [], [], []
    for spec in specs:
        pairs = load_pairs(spec, traces=trace_field)
        queries = [_input(p.query, p.task) for p in pairs]
        targets, gold = _targets(pairs)
        docs = model.encode_document([_input(t, None) for t in targets], batch_size=args.batch_size, convert_to_tensor=True)  # fmt: skip
        without = model.encode_query(queries, think=False, batch_size=args.batch_size, convert_to_tensor=True)
        traced = [{**q, "reasoning": p.query.trace} for q, p in zip(queries, pairs)]
        with_trace = model.encode_query(traced, think=True, batch_size=args.batch_size, convert_to_tensor=True)
        rank0, rank1 = gold_ranks(without, docs, gold), gold_ranks(with_trace, docs, gold)
        features.append(without.float().cpu())
        hit_without.append((rank0 == 0).float().cpu())
        hit_with.append((rank1 == 0).float().cpu())
        labels.append(trace_helps(rank0, rank1, args.min_rank_gain).cpu())
        described.append({"name": spec.name, "file": Path(spec.path).name, "queries": len(pairs), "targets": len(targets)})  # fmt: skip
    x, y = torch.cat(features), torch.cat(labels)
    hit1, hit0 = torch.cat(hit_with), torch.cat(hit_without)
    order = list(range(len(y)))
    random.Random(args.seed).shuffle(order)
    held = max(1, round(len(order) * args.held_out_fraction))
    held_out, train = torch.tensor(sorted(order[:held])), torch.tensor(sorted(order[held:]))
    if len(train) == 0:
        raise ValueError(f"{len(order)} queries leave none to fit on; add data or lower held_out_fraction.")
    weight, bias = fit_probe(x[train], y[train], l2=args.l2, steps=args.max_steps, seed=args.seed)
    gate_cls = _gate_class(module)
    gate = gate_cls(x.shape[1])
    with torch.no_grad():
        gate.linear.weight.copy_(weight.view(1, -1))
        gate.linear.bias.copy_(bias.view(1))
    scores = gate.score(x)
    chosen = choose_threshold(scores[held_out], hit1[held_out], hit0[held_out], args.max_hit_drop)
    gate.threshold.fill_(chosen.threshold)
    decisions = scores >= chosen.threshold
    info = {
        "trained_with": f"tte-hf {__version__} train-gate",
        "feature": "the input's no-trace embedding (what think=False returns), L2-normalised",
        "label": f"1 when the query's trace moves its gold target up >= {args.min_rank_gain} place(s) among its dataset's targets",  # fmt: skip
        "threshold_rule": f"most skipped reasoning on the held-out split with Hit@1 >= always-mode Hit@1 - {args.max_hit_drop}",  # fmt: skip
        "datasets": described,
        "queries": len(y),
        "trace_helps_rate": float(y.mean()),
        "train": {"queries": len(train), "accuracy": float((decisions[train].float() == y[train]).float().mean())},
        "held_out": {
            "queries": len(held_out),
            "skip_rate": chosen.skip_rate,
            "hit_at_1_auto": chosen.hit_auto,
            "hit_at_1_always": chosen.hit_always,
            "hit_at_1_never": chosen.hit_never,
            "accuracy": float((decisions[held_out].float() == y[held_out]).float().mean()),
        },
        "skip_rate_all": float((~decisions).float().mean()),
        "recipe": {k: v for k, v in asdict(args).items() if k not in ("model_name_or_path", "output_dir", "device")},
    }
    gate.info = info
    module.set_gate(gate.to(next(module.parameters()).device))
    module.query_reasoning = "auto"
    folder = output / _module_path(output)
    module.save_config(str(folder))
    module._save_gate(str(folder))
    logger.info("Gate: held-out skip rate %.3f, Hit@1 auto %.3f / always %.3f / never %.3f", chosen.skip_rate, chosen.hit_auto, chosen.hit_always, chosen.hit_never)  # fmt: skip
    print(json.dumps({"output_dir": str(output), **info["held_out"]}, indent=2))
    return info


def _prepare_output(source: Path, output: Path, overwrite: bool) -> Path:
    """``output`` holding the model with this install's remote code (the gate needs it); a copy of
    ``source`` unless they are the same folder."""
    from ..hub.export import copy_remote_code

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


def _gate_class(module):
    """The `ReasoningGate` class of the module's own code: ``tte_hf.gate_tte`` or a repo's shipped copy."""
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
    """The dataset's distinct positives (the candidate pool) and each pair's gold index in it."""
    import torch

    index: dict[tuple, int] = {}
    targets, gold = [], []
    for pair in pairs:
        key = (pair.positive.text, pair.positive.images)
        if key not in index:
            index[key] = len(targets)
            targets.append(pair.positive)
        gold.append(index[key])
    return targets, torch.tensor(gold)
