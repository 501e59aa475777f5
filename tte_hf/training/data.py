"""Training data: MMEB-train style JSONL rows joined with ECR traces by item id, validated up front.

Every check runs when a dataset is loaded, before any model is built, so a bad file fails in seconds
with the file, line and field that is wrong.

Item ids are the ones ``tte-hf generate-ecr`` writes: a row's ``id`` field when it has one, else the
content hash `tte_hf.reasoning.sources.stable_id` of that side (side, task, text, images as written).
A hard negative of a row with an ``id`` is looked up as ``"{id}:neg"`` in the target-side ECR file.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..ecr_jsonl import read_ecr, read_jsonl
from ..models.tte.ecr import MMEB_TRAIN_TASKS
from ..models.tte.inputs import strip_image_tags
from ..reasoning.sources import stable_id

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Side:
    """One side of a pair: text, image paths (absolute) and the ECR trace, if any; ``trace_ids``: the
    trace's generated token ids, when the pair was loaded with ``traces="raw"`` and the file has them."""

    text: str
    images: tuple[str, ...] = ()
    trace: str | None = None
    trace_ids: tuple[int, ...] | None = None


@dataclass(frozen=True)
class PairExample:
    item_id: str
    query: Side
    positive: Side
    negative: Side | None = None
    instruction: str | None = None
    task: str | None = None


@dataclass
class DatasetSpec:
    """One training dataset of a recipe (a dict in the YAML ``datasets:`` list). The defaults read every
    row as it is, with no trace changed or left out."""

    #: the dataset's name: in errors and logs, and an MMEB-train subset's name gives its ``task``
    name: str
    #: the MMEB-train style JSONL file (``qry``, ``qry_image_path``, ``pos_text``, ``pos_image_path``, ...)
    path: str
    #: folder the rows' relative image paths are resolved against (``None``: as written)
    image_root: str | None = None
    #: batches per epoch from this dataset, as a multiple of its own full batches (1: each row once;
    #: above 1 repeats rows, below 1 leaves some out; one dataset per step, `sampler`)
    weight: float = 1.0
    #: the ECR task of every row (``None``: the MMEB-train subset ``name``'s meta-task)
    task: str | None = None
    #: the instruction (ST prompt) of every query (``None``: none)
    instruction: str | None = None
    #: ``generate-ecr`` output with the query traces (``None``: queries without traces)
    query_ecr: str | None = None
    #: ``generate-ecr`` output with the target (and hard-negative) traces (``None``: targets without)
    target_ecr: str | None = None
    #: read each row's ``neg_text``/``neg_image_path`` as a hard negative
    hard_negatives: bool = False
    #: read at most this many rows (after ``held_out_fraction``); ``None``: all
    max_examples: int | None = None
    #: drop rows whose trace is missing from the ECR file (logged) instead of stopping at the first one
    skip_missing_traces: bool = False
    #: fraction of query rows trained WITHOUT their trace, so one embedder (or unified head) serves both
    #: modes of ``think="auto"``; which rows is fixed by (``trace_dropout_seed``, row id), see `drops_trace`
    trace_dropout: float = 0.0
    #: fraction of the rows marked ``trace_optional: true`` (a row field: the query is embedded right
    #: without its trace, e.g. it states its answer) ALSO trained without their trace, as an extra row
    #: (the traced row stays): both modes without taking traced examples away. Rows not so marked get no
    #: copy: a no-trace copy of a query that needs its trace teaches the embedder to guess its answer,
    #: which on new inputs means recalling a training one. Same row choice as ``trace_dropout``.
    no_trace_copies: float = 0.0
    #: seed of the hashed row choice of ``trace_dropout`` and ``no_trace_copies``
    trace_dropout_seed: int = 0
    #: fraction of the rows set aside, chosen by a hash of the row's ECR id: training reads the others,
    #: and a recipe with the same fraction and ``held_out: true`` reads exactly those (e.g. a gate fitted
    #: on rows its embedder never trained on). 0: every row.
    held_out_fraction: float = 0.0
    #: read only the ``held_out_fraction`` rows set aside, instead of the rest
    held_out: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def resolved_task(self) -> str | None:
        """``task``, else the meta-task of an MMEB-train subset called ``name``."""
        if self.task is not None:
            return self.task
        return MMEB_TRAIN_TASKS.get(self.name)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], index: int) -> DatasetSpec:
        if not isinstance(raw, dict):
            raise ValueError(f"datasets[{index}] must be a mapping with at least `name` and `path`, got {raw!r}.")
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"datasets[{index}] has unknown key(s) {unknown}; known keys: {sorted(known)}.")
        missing = [k for k in ("name", "path") if not raw.get(k)]
        if missing:
            raise ValueError(f"datasets[{index}] is missing {missing}.")
        spec = cls(**raw)
        if not spec.weight > 0:
            raise ValueError(f"datasets[{index}] ({spec.name}): weight must be > 0, got {spec.weight}.")
        for key in ("trace_dropout", "no_trace_copies"):
            value = getattr(spec, key)
            if not 0 <= value <= 1:
                raise ValueError(f"datasets[{index}] ({spec.name}): {key} must lie in [0, 1], got {value}.")
            if value and not spec.query_ecr:
                raise ValueError(f"datasets[{index}] ({spec.name}): {key} needs query_ecr (traces to leave out).")
        if not 0 <= spec.held_out_fraction < 1:
            raise ValueError(
                f"datasets[{index}] ({spec.name}): held_out_fraction must lie in [0, 1), got {spec.held_out_fraction}."
            )
        if spec.held_out and not spec.held_out_fraction:
            raise ValueError(
                f"datasets[{index}] ({spec.name}): held_out needs held_out_fraction > 0 (the rows set aside)."
            )
        return spec


def drops_trace(key: str, fraction: float, seed: int = 0) -> bool:
    """Whether the query row with ECR id ``key`` trains without its trace: a hash of (seed, key) below
    ``fraction``. Independent of file order, epoch, process and rank, so every worker agrees."""
    if fraction <= 0:
        return False
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def load_ecr(path: str | Path) -> dict[str, str]:
    """id -> ECR trace from a ``generate-ecr`` JSONL file (fields ``id`` and ``ecr``; see `tte_hf.ecr_jsonl`)."""
    return {item_id: record.ecr for item_id, record in read_ecr(path, need="ecr").items()}


def load_raw_traces(path: str | Path) -> dict[str, tuple[str, tuple[int, ...] | None]]:
    """id -> (raw reasoner output, its generated token ids or ``None``) from a ``generate-ecr`` file
    (fields ``id``, ``raw`` and, when the backend recorded them, ``raw_token_ids``)."""
    records = read_ecr(path, need="raw")
    traces = {item_id: (record.raw, record.raw_token_ids) for item_id, record in records.items()}
    without_ids = sum(record.raw_token_ids is None for record in records.values())
    if without_ids:
        logger.warning(
            "%s: %d of %d traces have no `raw_token_ids`; the head reads their re-tokenized `raw` text, which "
            "equals what the unified model embeds only where the tokenizer spells it as the model generated it. "
            "Generate the traces with the reasoner's transformers backend to record the ids.",
            path,
            without_ids,
            len(traces),
        )
    return traces


def _content_id(side: str, task: str | None, text: str, images: Any, dataset_name: str, index: int) -> str:
    if task is None:
        raise ValueError(
            f"Dataset {dataset_name!r}: rows without `id` are matched to ECR by content, which needs `task`."
        )
    values = images if isinstance(images, list) else [images]
    return stable_id(side, task, text or None, None, [v for v in values if v not in (None, "")], None)


def side_id(row: dict[str, Any], side: str, spec: DatasetSpec, index: int) -> str:
    """The ECR id of one side (``query``, ``target`` or ``negative``) of a data row."""
    if "id" in row:
        return f"{row['id']}:neg" if side == "negative" else str(row["id"])
    text_key, image_key = _FIELDS[side]
    hashed_side = "query" if side == "query" else "target"
    return _content_id(
        hashed_side, spec.resolved_task, _clean_text(row.get(text_key)), row.get(image_key), spec.name, index
    )


_FIELDS = {
    "query": ("qry", "qry_image_path"),
    "target": ("pos_text", "pos_image_path"),
    "negative": ("neg_text", "neg_image_path"),
}


def _clean_text(text: Any) -> str:
    """MMEB-train marks where its image goes with Phi-3-V's tag; the chat messages place images themselves."""
    return strip_image_tags(text or "") if isinstance(text, str) or text is None else str(text)


def _image_paths(value: Any, image_root: Path | None, where: str) -> tuple[str, ...]:
    if value in (None, "", []):
        return ()
    values = value if isinstance(value, list) else [value]
    paths = []
    for rel in values:
        path = Path(rel) if image_root is None else image_root / rel
        if not path.is_file():
            raise FileNotFoundError(f"{where}: image {path} does not exist (check `image_root`).")
        paths.append(str(path))
    return tuple(paths)


def _side(row, text_key, image_key, image_root, trace, where) -> Side:
    text = _clean_text(row.get(text_key))
    images = _image_paths(row.get(image_key), image_root, f"{where} field `{image_key}`")
    if not text and not images:
        raise ValueError(f"{where}: both `{text_key}` and `{image_key}` are empty; an input needs one of them.")
    if isinstance(trace, tuple):  # a raw trace: (text, generated ids or None)
        return Side(text=text, images=images, trace=trace[0], trace_ids=trace[1])
    return Side(text=text, images=images, trace=trace)


class MissingTraceError(KeyError):
    """A data row has no trace in its ECR file."""


def _lookup(traces: dict | None, key: str, source: str | None, where: str) -> str | None:
    if traces is None:
        return None
    if key not in traces:
        raise MissingTraceError(
            f"{where}: no ECR trace with id {key!r} in {source}. The trace file must come from the same data "
            "(regenerate it with `tte-hf generate-ecr` over this file, or fix the `id` fields; "
            "`skip_missing_traces: true` drops such rows, e.g. those generate-ecr skipped)."
        )
    return traces[key]


def _pair(spec, row, index, where, image_root, query_traces, target_traces) -> PairExample:
    key = side_id(row, "query", spec, index)
    query_trace = _lookup(query_traces, key, spec.query_ecr, where)
    if drops_trace(key, spec.trace_dropout, spec.trace_dropout_seed):
        query_trace = None  # embedded as think=False embeds it: the no-trace prompt + end token
    query = _side(row, "qry", "qry_image_path", image_root, query_trace, where)
    pos_trace = _lookup(target_traces, side_id(row, "target", spec, index), spec.target_ecr, where)
    positive = _side(row, "pos_text", "pos_image_path", image_root, pos_trace, where)
    negative = None
    if spec.hard_negatives:
        neg_trace = _lookup(target_traces, side_id(row, "negative", spec, index), spec.target_ecr, where)
        negative = _side(row, "neg_text", "neg_image_path", image_root, neg_trace, where)
    return PairExample(key, query, positive, negative, spec.instruction, spec.resolved_task)


#: the row field that marks a query as embedded right without its trace (`DatasetSpec.no_trace_copies`)
TRACE_OPTIONAL = "trace_optional"


def _trace_optional(row: dict[str, Any], where: str) -> bool:
    value = row.get(TRACE_OPTIONAL, False)
    if not isinstance(value, bool):
        raise ValueError(f"{where}: `{TRACE_OPTIONAL}` must be true or false, got {value!r}.")
    return value


def _copies_without_trace(spec: DatasetSpec, pair: PairExample, trace_optional: bool) -> bool:
    """Does ``pair`` get a no-trace copy (`DatasetSpec.no_trace_copies`, rows marked ``trace_optional``)?"""
    if pair.query.trace is None or not trace_optional:
        return False
    return drops_trace(pair.item_id, spec.no_trace_copies, spec.trace_dropout_seed)


def is_held_out(key: str, fraction: float) -> bool:
    """Whether the row with ECR id ``key`` is among the ``fraction`` set aside (`DatasetSpec.held_out_fraction`):
    a hash of the id alone, so every recipe naming the same fraction sets aside the same rows."""
    return drops_trace(f"held-out:{key}", fraction)


def _without_trace(pair: PairExample) -> PairExample:
    """The pair's no-trace copy (`DatasetSpec.no_trace_copies`): its own id, the query as ``think=False``
    embeds it."""
    return replace(pair, item_id=f"{pair.item_id}#no-trace", query=replace(pair.query, trace=None, trace_ids=None))


def report_skipped(spec: DatasetSpec, skipped: int, total: int) -> None:
    """Say how many rows had no trace; all of them is an error (wrong trace file)."""
    if not skipped:
        return
    if skipped == total:
        raise MissingTraceError(f"Dataset {spec.name!r}: none of its {total} rows has a trace; wrong ECR file?")
    logger.warning("Dataset %r: skipped %d of %d rows without an ECR trace.", spec.name, skipped, total)


TRACE_FIELDS = ("ecr", "raw")


def selected_rows(spec: DatasetSpec, rows: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, dict[str, Any]]]:
    """The rows the spec reads: those on its ``held_out`` side of ``held_out_fraction``, then at most
    ``max_examples`` of them."""
    if spec.held_out_fraction:
        rows = [
            (line_no, row)
            for index, (line_no, row) in enumerate(rows)
            if is_held_out(side_id(row, "query", spec, index), spec.held_out_fraction) == spec.held_out
        ]
    if spec.max_examples is not None:
        rows = rows[: spec.max_examples]
    if not rows:
        which = " held-out" if spec.held_out else ""
        raise ValueError(f"Dataset {spec.name!r} ({spec.path}) has no{which} rows.")
    return rows


def load_pairs(spec: DatasetSpec, traces: str = "ecr") -> list[PairExample]:
    """Read, validate and join one dataset; raises on the first bad row, naming file, line and field.

    ``traces="ecr"``: the parsed trace (what a separate embedder reads); ``"raw"``: the reasoner's output
    as generated, with its token ids where recorded (what the unified head reads, see `load_raw_traces`).
    """
    if traces not in TRACE_FIELDS:
        raise ValueError(f"traces must be one of {TRACE_FIELDS}, got {traces!r}.")
    load = load_ecr if traces == "ecr" else load_raw_traces
    query_traces = load(spec.query_ecr) if spec.query_ecr else None
    target_traces = load(spec.target_ecr) if spec.target_ecr else None
    image_root = Path(spec.image_root) if spec.image_root else None
    rows = selected_rows(spec, read_jsonl(spec.path))
    examples, skipped, optional = [], 0, 0
    for index, (line_no, row) in enumerate(rows):
        where = f"{spec.path}:{line_no}"
        try:
            pair = _pair(spec, row, index, where, image_root, query_traces, target_traces)
            examples.append(pair)
            trace_optional = _trace_optional(row, where)
            optional += trace_optional
            if spec.no_trace_copies and _copies_without_trace(spec, pair, trace_optional):
                examples.append(_without_trace(pair))
        except MissingTraceError:
            if not spec.skip_missing_traces:
                raise
            skipped += 1
    if spec.no_trace_copies and not optional:
        raise ValueError(
            f"Dataset {spec.name!r} ({spec.path}): no_trace_copies={spec.no_trace_copies} copies only rows marked "
            f"`{TRACE_OPTIONAL}: true` (queries embedded right without their trace) and none is; mark them, "
            "or use trace_dropout."
        )
    report_skipped(spec, skipped, len(rows))
    return examples
