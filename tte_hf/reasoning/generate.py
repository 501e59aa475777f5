"""Dataset-scale ECR generation: sharded, resumable, crash-safe JSONL (``tte-hf generate-ecr``).

Output: one JSON object per line, keyed by a stable item ``id``, with the raw trace (and
``raw_token_ids``, the generated tokens, when the backend has them), its parsed parts (``ecr``,
``thought``, ``final``, ``issues``), task, side and source; next to it
``<output>.manifest.json`` (reasoner, sampling, prompt version, package versions, counts) and, with
``skip_bad``, ``<output>.skipped.jsonl``. Each chunk is appended with one ``write`` and fsynced, so a
killed run loses at most the chunk in flight; on restart a cut-off last line is dropped and every id
already written (or skipped) is not generated again — skipped rows are tried again with
``retry_skipped`` (e.g. after fixing their images), which the manifest records. Ids must be unique:
two rows with the same explicit ``id`` are refused, naming both (rows without one share a content
id only when they are the same input, and are reasoned about once).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..ecr_jsonl import read_ecr
from ..environment import package_versions
from ..models.tte.ecr import PROMPT_VERSION, parse_ecr
from ..models.tte.reasoner_base import ReasoningBackend, ReasoningRequest
from .sources import INPUT_FORMATS, BadInputError, BadItem, ECRItem, ItemReader, detect_format, load_images, shard_of

logger = logging.getLogger(__name__)


@dataclass
class GenerateECRConfig:
    """Settings of one ECR generation run (the YAML recipe's keys).

    Args:
        output: JSONL file to write (with ``num_shards > 1``: ``<stem>.shard-K-of-N.jsonl`` beside it).
        input: MMEB-train style JSONL, the package's JSONL (``text``/``image``/``images``/``video``/
            ``instruction``/``task``/``id``), or a `datasets` dataset (Hub name or a saved folder).
        input_format: ``auto`` | ``mmeb`` | ``tte`` | ``datasets``.
        image_root: folder relative image paths are resolved against.
        dataset_name: an MMEB-train subset name (e.g. ``OK-VQA``); gives the task when ``task`` is unset.
        task: the ECR task prompt for every row (rows of the ``tte`` format may carry their own).
        sides: ``query`` and/or ``target`` (MMEB ``pos_text``/``pos_image_path``, for rich targets).
        reasoner: `load_reasoner` options (``backend``, ``model``, ``max_new_tokens``, ...).
        cache: optional SQLite ECR cache path shared across runs.
        chunk_size: items generated and written together (one batch, one fsync).
        max_trace_chars: cap on the parsed trace (thought shortened first); ``None`` keeps everything.
        skip_bad: log bad rows to the skip list and go on, instead of stopping at the first one.
        retry_skipped: on resume, try the rows of the skip list again (those still bad are skipped
            again with ``skip_bad``, or stop the run without it).
    """

    output: str
    input: str | None = None
    input_format: str = "auto"
    image_root: str | None = None
    dataset_name: str | None = None
    dataset_config: str | None = None
    split: str = "train"
    task: str | None = None
    sides: list[str] = field(default_factory=lambda: ["query"])
    reasoner: dict[str, Any] = field(default_factory=dict)
    cache: str | None = None
    chunk_size: int = 16
    num_shards: int = 1
    shard_id: int = 0
    max_items: int | None = None
    max_trace_chars: int | None = 4000
    skip_bad: bool = False
    retry_skipped: bool = False
    progress: bool = True

    def __post_init__(self):
        if self.input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format={self.input_format!r}; use one of {INPUT_FORMATS}.")
        if self.num_shards < 1 or not 0 <= self.shard_id < self.num_shards:
            raise ValueError(f"shard_id={self.shard_id} must be in [0, num_shards={self.num_shards}).")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {self.chunk_size}.")
        if isinstance(self.sides, str):
            self.sides = [self.sides]

    @classmethod
    def from_any(cls, config: GenerateECRConfig | dict[str, Any] | str | os.PathLike) -> GenerateECRConfig:
        """From a config object, a dict, or a YAML file path."""
        if isinstance(config, cls):
            return config
        if isinstance(config, (str, os.PathLike)):
            import yaml

            with open(config, encoding="utf-8") as handle:
                config = yaml.safe_load(handle) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"Unknown ECR generation config keys {unknown}; known keys: {sorted(known)}.")
        return cls(**config)

    @property
    def output_path(self) -> Path:
        path = Path(self.output)
        if self.num_shards == 1:
            return path
        return path.with_name(f"{path.stem}.shard-{self.shard_id:05d}-of-{self.num_shards:05d}{path.suffix}")


@dataclass
class GenerateECRResult:
    output: Path
    manifest: Path
    written: int  # records written by this run
    skipped: int  # bad rows skipped by this run
    already_done: int  # items found done on disk when the run started
    total: int  # items of this shard
    retried: int = 0  # rows of the skip list tried again (``retry_skipped``)


def _sidecar(output: Path, suffix: str) -> Path:
    return output.with_name(output.name + suffix)


def repair_jsonl(path: Path) -> set[str]:
    """Drop a cut-off last line (a crash mid-write) and return the ids on disk.

    Only the last line can be incomplete: anything unreadable before it is reported, not dropped.
    """
    if not path.exists():
        return set()
    with open(path, "rb+") as handle:
        data = handle.read()
        keep = data.rfind(b"\n") + 1
        if keep < len(data):
            logger.warning(
                "%s: dropping a cut-off last line (%d bytes) from an interrupted run", path, len(data) - keep
            )
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
    try:
        return set(read_ecr(path, need="id"))
    except ValueError as err:
        raise ValueError(
            f"{err} It is not the last line, so this is not an interrupted write: move the file away or fix that line."
        ) from err


def _append(path: Path, lines: Sequence[str]) -> None:
    """Append ``lines`` with one write and fsync: a kill leaves whole lines or one cut-off last line."""
    if not lines:
        return
    data = "".join(line + "\n" for line in lines).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _drop_from_skip_list(path: Path, ids: set[str]) -> None:
    """Rewrite the skip list without ``ids`` (atomically): they are tried again and, if still bad,
    appended anew. A crash in between leaves them in neither file, so they are simply tried again."""
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.strip() and str(json.loads(line)["id"]) not in ids]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def check_unique_ids(items: Sequence[ECRItem | BadItem]) -> None:
    """Refuse two rows with the same explicit id (one would silently be dropped), naming both."""
    first: dict[str, ECRItem | BadItem] = {}
    for item in items:
        seen = first.setdefault(item.id, item)
        if seen is not item and (seen.explicit_id or item.explicit_id):
            raise BadInputError(
                f"Duplicate item id {item.id!r} at {seen.source} and at {item.source}: ids must be unique, and one of "
                "the two would be dropped. Fix the `id` fields; for MMEB rows with ids, generate the query and "
                "target sides into separate outputs (sides: [query], then sides: [target])."
            )


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _versions() -> dict[str, str]:
    packages = ("tte-hf", "torch", "transformers", "vllm", "pillow", "datasets")
    return {"python": platform.python_version(), **package_versions(packages)}


def read_items(config: GenerateECRConfig) -> list[ECRItem | BadItem]:
    """All rows of ``config.input`` as items (or bad items), in input order, before sharding."""
    if not config.input:
        raise ValueError("No input: set `input` (a JSONL file or a datasets name/folder).")
    reader = ItemReader(config.image_root, config.task, config.dataset_name, tuple(config.sides))
    fmt = detect_format(config.input) if config.input_format == "auto" else config.input_format
    if fmt == "datasets":
        rows = reader.read_dataset(config.input, config.dataset_config, config.split)
    else:
        if not os.path.isfile(config.input):
            raise FileNotFoundError(f"Input file not found: {config.input}")
        rows = reader.read_jsonl(config.input, fmt)
    return list(rows)


def _record(item: ECRItem, raw: str, reasoner_name: str, max_chars: int | None) -> dict[str, Any]:
    ecr = parse_ecr(raw, max_chars=max_chars)
    # ``ecr`` (parsed, re-formatted, capped) is what a separate embedder reads; the unified head reads
    # the backbone's own generation, so ``raw`` and, when the backend has them, its token ids are kept.
    token_ids = getattr(raw, "token_ids", None)
    return {
        "id": item.id,
        "ecr": ecr.for_embedder("full"),
        "thought": ecr.thought,
        "final": ecr.final,
        "issues": list(ecr.issues),
        "raw": str(raw),
        **({"raw_token_ids": list(token_ids)} if token_ids is not None else {}),
        "task": item.task,
        "side": item.side,
        "source": item.source,
        "prompt_version": PROMPT_VERSION,
        "reasoner": reasoner_name,
    }


def _fail(bad: BadItem, more: int = 0) -> BadInputError:
    tail = f" ({more} more bad rows after it)" if more else ""
    return BadInputError(
        f"Bad input at {bad.source}, item {bad.id!r}: {bad.error}{tail}. Fix the row, or pass --skip-bad "
        "(skip_bad: true) to log it in the skip list and go on."
    )


def generate_ecr(
    config: GenerateECRConfig | dict[str, Any] | str | os.PathLike, reasoner: ReasoningBackend | None = None
) -> GenerateECRResult:
    """Generate ECR traces for every item of this shard not yet on disk; see the module docstring.

    ``reasoner`` overrides ``config.reasoner`` (handy when one is already loaded, e.g. in the demo).
    """
    from tqdm.auto import tqdm

    config = GenerateECRConfig.from_any(config)
    output = config.output_path
    output.parent.mkdir(parents=True, exist_ok=True)
    manifest_path, skipped_path = _sidecar(output, ".manifest.json"), _sidecar(output, ".skipped.jsonl")
    items = shard_items(config)
    reasoner = _open_reasoner(config, reasoner)
    written_before, skipped_before, retry = _resume(output, skipped_path, items, config.retry_skipped)
    done = written_before | skipped_before
    manifest = _start_manifest(
        config, manifest_path, reasoner.describe(), len(items), retry, resumed=bool(done or retry)
    )

    already_done = sum(i.id in done for i in items)
    written = skipped = retried_written = 0
    bar = tqdm(total=len(items), initial=already_done, unit="item", desc="ECR", disable=not config.progress)
    # Chunks are cut at fixed positions of the shard's item list, so a resumed run batches items as
    # an uninterrupted run would (batch composition can change floating-point results).
    for start in range(0, len(items), config.chunk_size):
        chunk = [i for i in items[start : start + config.chunk_size] if i.id not in done]
        ready, requests, skips = _chunk_requests(chunk, config.skip_bad)
        traces = reasoner.generate(requests) if requests else []
        if len(traces) != len(requests):
            raise RuntimeError(f"{reasoner.name} returned {len(traces)} traces for {len(requests)} requests.")
        records = [
            json.dumps(_record(item, raw, reasoner.name, config.max_trace_chars), ensure_ascii=False)
            for item, raw in zip(ready, traces)
        ]
        _append(output, records)
        _append(skipped_path, skips)
        written, skipped = written + len(records), skipped + len(skips)
        retried_written += sum(item.id in retry for item in ready)
        bar.update(len(chunk))
    bar.close()

    manifest.update(
        complete=True,
        finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        counts={
            "items": len(items),
            "records": sum(i.id in written_before for i in items) + written,
            "skipped": sum(i.id in skipped_before for i in items) + skipped,
        },
        retried_skipped={"rows": len(retry), "written": retried_written, "skipped_again": len(retry) - retried_written},
    )
    _write_json_atomic(manifest_path, manifest)
    return GenerateECRResult(output, manifest_path, written, skipped, already_done, len(items), len(retry))


def shard_items(config: GenerateECRConfig) -> list[ECRItem | BadItem]:
    """This shard's items, each id once, at most ``max_items``; a bad row fails here, before any
    generation, unless ``skip_bad``."""
    all_items = read_items(config)
    check_unique_ids(all_items)  # over every shard's rows, so that every shard refuses alike
    items = [i for i in all_items if shard_of(i.id, config.num_shards) == config.shard_id]
    unique: dict[str, ECRItem | BadItem] = {}
    for item in items:
        unique.setdefault(item.id, item)  # the same content twice is reasoned about once
    items = list(unique.values())[: config.max_items]
    bad_rows = [i for i in items if isinstance(i, BadItem)]
    if bad_rows and not config.skip_bad:
        raise _fail(bad_rows[0], len(bad_rows) - 1)
    return items


def _open_reasoner(config: GenerateECRConfig, reasoner: ReasoningBackend | None) -> ReasoningBackend:
    """``reasoner``, else the one ``config.reasoner`` describes; behind the SQLite cache with ``config.cache``."""
    if reasoner is None:
        from .factory import load_reasoner

        reasoner = load_reasoner(config.reasoner)
    if config.cache:
        from .cache import CachedReasoner

        reasoner = CachedReasoner(reasoner, config.cache)
    return reasoner


def _resume(
    output: Path, skipped_path: Path, items: list[ECRItem | BadItem], retry_skipped: bool
) -> tuple[set[str], set[str], set[str]]:
    """(ids already written, ids in the skip list, ids of this shard to retry): the files are repaired
    (a cut-off last line dropped) and, with ``retry_skipped``, the retried rows leave the skip list."""
    written_before, skipped_before = repair_jsonl(output), repair_jsonl(skipped_path)
    shard_ids = {i.id for i in items}
    retry = (skipped_before & shard_ids) - written_before if retry_skipped else set()
    if retry:
        _drop_from_skip_list(skipped_path, retry)
        skipped_before -= retry
        logger.info("retrying %d rows of the skip list %s", len(retry), skipped_path)
    return written_before, skipped_before, retry


def _start_manifest(
    config: GenerateECRConfig,
    manifest_path: Path,
    description: dict[str, Any],
    num_items: int,
    retry: set[str],
    resumed: bool,
) -> dict[str, Any]:
    """Write the run's manifest (``complete: false`` until the end); a resumed run must use the reasoner
    and settings it was started with."""
    previous = json.loads(manifest_path.read_text()) if manifest_path.exists() and resumed else None
    if previous and previous.get("reasoner") != description:
        raise ValueError(
            f"{config.output_path} was started with another reasoner or settings ({previous.get('reasoner')}) than "
            f"this run ({description}); write to a new output path or delete the old files."
        )
    manifest = {
        "output": str(config.output_path),
        "created": (previous or {}).get("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
        "reasoner": description,
        "prompt_version": PROMPT_VERSION,
        "config": dataclasses.asdict(config),
        "versions": _versions(),
        "shard": {"id": config.shard_id, "num_shards": config.num_shards, "items": num_items},
        "retried_skipped": {"rows": len(retry)},
        "complete": False,
    }
    _write_json_atomic(manifest_path, manifest)
    return manifest


def _chunk_requests(
    chunk: list[ECRItem | BadItem], skip_bad: bool
) -> tuple[list[ECRItem], list[ReasoningRequest], list[str]]:
    """(the items whose inputs load, their requests, skip-list lines of the others); a bad item raises
    unless ``skip_bad``."""
    ready, requests, skips = [], [], []
    for item in chunk:
        try:
            if isinstance(item, BadItem):
                raise _fail(item)
            images, video = load_images(item)
        except BadInputError as err:
            bad = item if isinstance(item, BadItem) else BadItem(item.id, item.source, str(err))
            if not skip_bad:
                raise _fail(bad) from None
            logger.warning("skipping %s (%s): %s", bad.id, bad.source, bad.error)
            skips.append(json.dumps({"id": bad.id, "source": bad.source, "error": bad.error}))
            continue
        ready.append(item)
        requests.append(
            ReasoningRequest(item.text, images, video, item.instruction, item.task, item.id, {"side": item.side})
        )
    return ready, requests, skips
