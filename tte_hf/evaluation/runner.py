"""Run MMEB-style evaluation of a sentence-transformers-like model, resumably, task by task.

Layout of ``output_dir``::

    tasks/<task>/meta.json                 what was evaluated (task spec, model id, sizes)
    tasks/<task>/{query,candidate}-00000.safetensors   embeddings, one file per finished chunk
    tasks/<task>/score.json                the task's metrics: written last, marks the task finished
    tasks/<task>/per_query.jsonl           per-query metrics
    report.json, report.md, meta_tasks.png

A rerun skips finished tasks and finished chunks, so an interrupted run loses at most one chunk per
process. Launched data-parallel (``torchrun`` / ``accelerate launch -m tte_hf.evaluation``), the
processes split each task's missing chunks and the main process scores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from ..ecr_jsonl import read_ecr
from .data import TaskData, load_task, materialize, profile_input
from .distributed import Processes, current_processes
from .fingerprint import model_fingerprint
from .input_formats import TTE, check_input_format
from .metrics import LEADERBOARD, check_protocol, score_rankings, tie_counts
from .report import build_report, write_report
from .tasks import (
    IMPLEMENTED_VIDEO_PARSERS,
    VLM2VEC_VIDEO_FORMAT,
    Benchmark,
    TaskSpec,
    get_benchmark,
    select_tasks,
    with_data_root,
)

logger = logging.getLogger(__name__)
DEFAULT_INPUT_FORMAT = TTE  # the model builds its own inputs (a TTE / sentence-transformers model)


class EncoderModel(Protocol):
    """What `evaluate` needs: sentence-transformers' query / document encoders."""

    def encode_query(self, inputs: list, **kwargs) -> torch.Tensor: ...

    def encode_document(self, inputs: list, **kwargs) -> torch.Tensor: ...


def load_ecr_files(paths: Iterable[str | Path]) -> dict[str, str]:
    """``id -> ecr`` from JSONL files written by ``tte-hf generate-ecr`` (one id with two different
    traces is an error naming both lines; see `tte_hf.ecr_jsonl`)."""
    return {item_id: record.ecr for item_id, record in read_ecr(list(paths), need="ecr").items()}


def default_model_id(model: Any) -> str:
    """The checkpoint path / repo id behind a sentence-transformers model, else its class name.

    It tags cached results so a rerun with another model never reuses them; pass ``model_id``
    explicitly for models this cannot identify (two adapters of one class would look the same).
    """
    modules = list(model) if hasattr(model, "__iter__") else []
    for module in modules:
        backbone = getattr(module, "model", None) or getattr(module, "auto_model", None)
        name = getattr(getattr(backbone, "config", None), "_name_or_path", None)
        if name:
            return str(name)
    return type(model).__name__


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _chunk_path(task_dir: Path, side: str, index: int) -> Path:
    return task_dir / f"{side}-{index:05d}.safetensors"


def _chunk_jobs(num_candidates: int, num_queries: int, chunk_size: int) -> list[tuple[str, int]]:
    """Every ``(side, chunk index)`` of a task: the unit of resuming and of splitting across processes."""
    jobs = [("candidate", i) for i in range(math.ceil(num_candidates / chunk_size))]
    return jobs + [("query", i) for i in range(math.ceil(num_queries / chunk_size))]


def _encode_chunk(
    encode,
    task: TaskSpec,
    items: Sequence,
    path: Path,
    side: str,
    traces: dict[str, str] | None,
    trace_prefix: str,
    batch_size: int,
    input_format: str = TTE,
) -> None:
    """Embed ``items`` and write them to ``path`` (atomically: a chunk file is whole or absent)."""
    from safetensors.torch import save_file

    if input_format != TTE:  # a baseline, fed what its reference evaluation feeds it
        inputs = [profile_input(task, item) for item in items]
    else:
        inputs = [materialize(task, item, traces.get(trace_prefix + item.key) if traces else None) for item in items]
    embeddings = encode(inputs, batch_size=batch_size, show_progress_bar=False, convert_to_tensor=True)
    embeddings = torch.as_tensor(embeddings).detach().float().cpu()
    if embeddings.ndim != 2 or embeddings.shape[0] != len(items):
        raise RuntimeError(f"Task {task.name!r}: the model returned shape {tuple(embeddings.shape)} for {len(items)} {side} inputs; expected (n, dim).")  # fmt: skip
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
    save_file({"embeddings": embeddings.contiguous()}, str(tmp))
    tmp.replace(path)


def _load_side(task_dir: Path, side: str, count: int, chunk_size: int) -> torch.Tensor:
    """A side's embeddings from its chunk files, L2-normalised."""
    from safetensors.torch import load_file

    chunks = [load_file(_chunk_path(task_dir, side, i))["embeddings"] for i in range(math.ceil(count / chunk_size))]
    return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)


def _check_ecr(data: TaskData, traces: dict[str, str] | None, require: bool) -> None:
    if not traces or not require:
        return
    missing = [q.key for q in data.queries if q.key not in traces]
    if missing:
        raise ValueError(
            f"Task {data.task.name!r}: {len(missing)} queries have no ECR trace in the given files "
            f"(first: {missing[:3]}). Generate them (tte-hf generate-ecr) or pass require_ecr=False."
        )


def traces_digest(traces: dict[str, str] | None) -> str | None:
    """A short fingerprint of the ECR traces, so cached embeddings are never reused with other traces."""
    if not traces:
        return None
    payload = json.dumps(sorted(traces.items()), ensure_ascii=False).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def _check_identity(task_dir: Path, identity: dict[str, Any]) -> None:
    """Refuse to reuse a task folder written by a different model / task definition / ECR / chunk size."""
    meta_path = task_dir / "meta.json"
    if not meta_path.exists():
        return
    previous = json.loads(meta_path.read_text())
    differing = sorted(k for k in identity if previous.get(k) != identity[k])
    if "fingerprint" in differing:  # name the parts: weights, dtype, module_config, prompts
        before, now = previous.get("fingerprint") or {}, identity["fingerprint"]
        parts = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        differing[differing.index("fingerprint")] = f"fingerprint: {', '.join(parts)}"
    if differing:
        raise ValueError(
            f"{task_dir} holds results of a different run (differing: {differing}; before: model "
            f"{previous.get('model')!r}, chunk_size {previous.get('chunk_size')}); use another output folder, "
            "the same settings, or overwrite=True (--overwrite)."
        )


def _prepare_task_dir(task_dir: Path, meta: dict[str, Any], overwrite: bool) -> None:
    meta_path = task_dir / "meta.json"
    if meta_path.exists() and not overwrite:
        _check_identity(task_dir, meta)  # the counts too: the data changed under a partial run
        return
    if overwrite:
        for old in task_dir.glob("*"):
            old.unlink()
    task_dir.mkdir(parents=True, exist_ok=True)
    meta_path.write_text(json.dumps(meta, indent=2))


@dataclass(frozen=True)
class RunKey:
    """What determines a task folder's content besides the task: its resume record in ``meta.json``."""

    model_id: str
    fingerprint: dict[str, str]
    ecr: str | None
    chunk_size: int
    protocol: str = LEADERBOARD
    input_format: str = DEFAULT_INPUT_FORMAT

    def identity(self, task: TaskSpec) -> dict[str, Any]:
        return {
            "task": task.to_dict(),
            "model": self.model_id,
            "fingerprint": self.fingerprint,
            "ecr": self.ecr,
            "chunk_size": self.chunk_size,
            "protocol": self.protocol,
            "input_format": self.input_format,
        }


def _missing_chunks(task_dir: Path, meta: dict[str, Any], jobs, overwrite: bool, processes: Processes) -> list:
    """The chunks no process has written yet, the same list on every process.

    The main process prepares the folder and lists them; every process gets the same list (or the same
    error), so the shares never overlap nor miss a chunk, whatever ran before.
    """
    status, error = None, None
    if processes.is_main:
        try:
            _prepare_task_dir(task_dir, meta, overwrite)
            status = ("ok", [job for job in jobs if not _chunk_path(task_dir, *job).exists()])
        except ValueError as err:
            status, error = ("error", str(err)), err
    status = processes.broadcast(status)
    if status[0] == "error":
        raise error if error is not None else ValueError(status[1])
    return status[1]


def _embed_chunks(model, data: TaskData, task_dir: Path, mine: list, settings: dict[str, Any]) -> None:
    """Embed this process's share of the missing chunks into ``task_dir``."""
    task, chunk_size, traces = data.task, settings["chunk_size"], settings["traces"]
    # Query keys are already "<task>/<row id>"; candidate traces (e.g. page descriptions) use "<task>/candidate/<key>".
    sides = {
        "candidate": (model.encode_document, data.candidates, f"{task.name}/candidate/"),
        "query": (model.encode_query, data.queries, ""),
    }
    total = sum(len(sides[side][1][i * chunk_size : (i + 1) * chunk_size]) for side, i in mine)
    bar = tqdm(total=total, desc=task.name, unit="item", disable=not settings["show_progress_bar"])
    for side, index in mine:
        encode, items, prefix = sides[side]
        chunk = items[index * chunk_size : (index + 1) * chunk_size]
        path = _chunk_path(task_dir, side, index)
        _encode_chunk(encode, task, chunk, path, side, traces, prefix, settings["batch_size"], settings["input_format"])
        bar.update(len(chunk))
    bar.close()


def _score_task(data: TaskData, candidates: torch.Tensor, queries: torch.Tensor, protocol: str):
    """The task's score dict and per-query metrics from its normalised embeddings."""
    task = data.task
    scores, names = [], []
    for q, own in enumerate(data.query_candidates):
        if own is None:  # global: rank every candidate of the task
            scores.append(candidates @ queries[q])
            names.append(None)
        else:  # local: rank the query's own list; a listing is named by its candidate index
            scores.append(candidates[own] @ queries[q])
            names.append(own)
    mean, per_query = score_rankings(scores, data.relevance, protocol=protocol, names=names)
    result = {
        "task": task.name,
        "modality": task.modality,
        "meta_task": task.meta_task,
        "split": task.split,
        "metric": task.metric,
        "main_score": 100.0 * mean[task.metric],
        "metrics": mean,
        "num_queries": len(data.queries),
        "num_candidates": len(data.candidates),
        "ranking": task.ranking,
        "protocol": protocol,
        "ties": tie_counts(scores, data.relevance, names),
    }
    return result, per_query


def _write_scores(task_dir: Path, data: TaskData, result: dict[str, Any], per_query: list[dict]) -> None:
    with open(task_dir / "per_query.jsonl", "w") as handle:
        for item, metrics in zip(data.queries, per_query):
            handle.write(json.dumps({"id": item.key, **metrics}) + "\n")
    score_path = task_dir / "score.json"
    tmp = score_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(score_path)  # atomic: a score file exists only for a finished task


def evaluate_task(
    model: EncoderModel,
    task: TaskSpec,
    output_dir: str | Path,
    *,
    model_id: str,
    batch_size: int = 8,
    chunk_size: int = 256,
    traces: dict[str, str] | None = None,
    require_ecr: bool = True,
    show_progress_bar: bool = True,
    overwrite: bool = False,
    ecr_digest: str | None = None,
    fingerprint: dict[str, str] | None = None,
    processes: Processes | None = None,
    protocol: str = LEADERBOARD,
    input_format: str = DEFAULT_INPUT_FORMAT,
) -> dict[str, Any] | None:
    """Score one task (or load its finished score) and return its ``score.json`` dict.

    ``fingerprint`` (default: `model_fingerprint`) keys the results with ``model_id``, ``protocol``
    (`metrics.PROTOCOLS`) and ``input_format``: a finished task is only reused for a model whose
    weights, dtype, module config and prompts match, scored under the same rules.
    With ``processes`` (data-parallel, see `current_processes`) each process embeds its share of the
    missing chunks and the main process scores; the others return ``None``.
    """
    processes = processes or Processes()
    task_dir = Path(output_dir) / "tasks" / _safe_name(task.name)
    key = RunKey(
        model_id,
        fingerprint if fingerprint is not None else model_fingerprint(model),
        ecr_digest if ecr_digest is not None else traces_digest(traces),
        chunk_size,
        check_protocol(protocol),
        input_format,
    )
    identity = key.identity(task)
    if (task_dir / "score.json").exists() and not overwrite:
        _check_identity(task_dir, identity)
        return json.loads((task_dir / "score.json").read_text())
    data = load_task(task, protocol=protocol)
    _check_ecr(data, traces, require_ecr)
    meta = {**identity, "num_queries": len(data.queries), "num_candidates": len(data.candidates)}
    jobs = _chunk_jobs(len(data.candidates), len(data.queries), chunk_size)
    missing = _missing_chunks(task_dir, meta, jobs, overwrite, processes)
    mine = processes.share(missing)
    logger.info("%s: process %d of %d embeds %d of %d missing chunks", task.name, processes.rank, processes.world_size, len(mine), len(missing))  # fmt: skip
    settings = {"chunk_size": chunk_size, "traces": traces, "batch_size": batch_size, "input_format": input_format}
    settings["show_progress_bar"] = show_progress_bar and processes.is_main
    _embed_chunks(model, data, task_dir, mine, settings)
    processes.barrier()  # every chunk of the task is on disk
    if not processes.is_main:
        return None
    candidates = _load_side(task_dir, "candidate", len(data.candidates), chunk_size)
    queries = _load_side(task_dir, "query", len(data.queries), chunk_size)
    result, per_query = _score_task(data, candidates, queries, protocol)
    _write_scores(task_dir, data, result, per_query)
    return result


def _input_format(model: Any, requested: str | None) -> str:
    """The model's input profile (its ``input_format`` attribute, else ``tte``); a different request is an error."""
    own = getattr(model, "input_format", None) or DEFAULT_INPUT_FORMAT
    if requested is not None and check_input_format(requested) != own:
        raise ValueError(f"input_format={requested!r}, but the model applies {own!r}; load it with that profile (tte-hf eval --input-format).")  # fmt: skip
    return own


def _resolve_tasks(benchmark_or_tasks, tasks, data_root, image_root) -> tuple[str, str | None, int, list[TaskSpec]]:
    """(benchmark name, baseline key, the benchmark's task count, the selected tasks with their roots)."""
    if isinstance(benchmark_or_tasks, str):
        benchmark_or_tasks = get_benchmark(benchmark_or_tasks)
    if isinstance(benchmark_or_tasks, Benchmark):
        benchmark = benchmark_or_tasks
    else:
        benchmark = Benchmark("custom", tuple(benchmark_or_tasks))
    selected = select_tasks(benchmark, list(tasks) if tasks else None)
    selected = [with_data_root(t, data_root, image_root) for t in selected]
    return benchmark.name, benchmark.baseline_key, len(benchmark.tasks), selected


def _skip_unloadable(selected: list[TaskSpec]) -> tuple[list[TaskSpec], dict[str, str]]:
    """Fail fast on tasks this package cannot load yet, but keep the rest of the benchmark running."""
    skipped = {
        t.name: t.note or f"VLM2Vec video parser {t.parser!r} is not implemented"
        for t in selected
        if t.data_format == VLM2VEC_VIDEO_FORMAT and t.parser not in IMPLEMENTED_VIDEO_PARSERS
    }
    for name, reason in skipped.items():
        logger.warning("Skipping task %s: %s", name, reason)
    selected = [t for t in selected if t.name not in skipped]
    if not selected:
        raise ValueError(f"None of the selected tasks can be loaded: {skipped}")
    return selected, skipped


def evaluate(
    model: EncoderModel,
    benchmark_or_tasks: str | Benchmark | Sequence[TaskSpec],
    output_dir: str | Path,
    *,
    tasks: Sequence[str] | None = None,
    batch_size: int = 8,
    chunk_size: int = 256,
    data_root: str | Path | None = None,
    image_root: str | Path | None = None,
    ecr_files: Sequence[str | Path] = (),
    require_ecr: bool = True,
    model_id: str | None = None,
    show_progress_bar: bool = True,
    overwrite: bool = False,
    chart: bool = True,
    baselines: str | None = None,
    cpu: bool = False,
    protocol: str = LEADERBOARD,
    input_format: str | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on a benchmark name (``"mmeb-v2"``), a `Benchmark` or a list of `TaskSpec`;
    writes per-task results and ``report.json`` / ``report.md`` / ``meta_tasks.png`` into
    ``output_dir`` and returns the report dict.

    ``protocol``: ``"leaderboard"`` (VLM2Vec's candidate identity and tie rules, comparable with
    published scores) or ``"strict"`` (`metrics`). ``input_format``: the model's input profile (default:
    its ``input_format`` attribute, else ``"tte"``). Finished tasks and chunks in ``output_dir`` are
    reused only when ``model_id`` (default: `default_model_id`), the model's fingerprint
    (`model_fingerprint`), the task, the traces, ``chunk_size``, ``protocol`` and ``input_format``
    match. ``ecr_files`` (JSONL with ``id`` and ``ecr``) attach a ``"reasoning"`` trace to every item
    whose id (``<task>/<row id>`` for queries) they contain; ``baselines`` (``"mmeb-v1"`` /
    ``"mmeb-v2"``) prints those published scores beside a custom task list.

    Under ``torchrun`` / ``accelerate launch`` each process embeds its share of every task's missing
    chunks, the main process scores and writes the reports, every process returns the report (``cpu``:
    gloo even on a GPU machine); chunk files do not depend on the number of processes.
    """
    check_protocol(protocol)
    benchmark_name, baseline_key, benchmark_tasks, selected = _resolve_tasks(benchmark_or_tasks, tasks, data_root, image_root)  # fmt: skip
    selected, skipped = _skip_unloadable(selected)
    model_id = model_id or default_model_id(model)
    traces = load_ecr_files(ecr_files) if ecr_files else None
    processes = current_processes(cpu=cpu)
    shared = dict(model_id=model_id, batch_size=batch_size, chunk_size=chunk_size, traces=traces, processes=processes)
    shared |= dict(require_ecr=require_ecr, show_progress_bar=show_progress_bar, overwrite=overwrite, protocol=protocol)
    shared |= dict(ecr_digest=traces_digest(traces), fingerprint=model_fingerprint(model))
    shared["input_format"] = _input_format(model, input_format)
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    show_tasks = show_progress_bar and processes.is_main and len(selected) > 1
    results = [
        evaluate_task(model, task, output_dir, **shared)
        for task in tqdm(selected, desc="tasks", unit="task", disable=not show_tasks)
    ]
    report_kwargs = dict(benchmark=benchmark_name, baseline_key=baselines or baseline_key, model_id=model_id)
    report_kwargs |= dict(benchmark_tasks=benchmark_tasks, protocol=protocol, input_format=shared["input_format"])
    return _finish_run(results, Path(output_dir), processes, chart, skipped, report_kwargs)


def _finish_run(results, output_dir: Path, processes: Processes, chart: bool, skipped: dict, report_kwargs: dict):
    """The main process writes the report; every process returns it."""
    if not processes.is_main:
        processes.barrier()  # the main process writes the report
        return json.loads((output_dir / "report.json").read_text())
    report = build_report(results, **report_kwargs)
    report["skipped"] = skipped
    write_report(report, output_dir, chart=chart)
    processes.barrier()
    return report
