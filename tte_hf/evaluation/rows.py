"""What every evaluation loader shares: the item / task-data types, row reading and frame listing.

The format loaders (`data.py`: ``mmeb`` and ``beir``; `video_data.py`: ``vlm2vec-video``) import this
module and never each other; `data.load_task` dispatches on the task's ``data_format``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .tasks import BEIR_FORMAT, TaskSpec

FRAME_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


class TaskDataError(ValueError):
    """A task's data is unusable; the message names the task, the row and what to fix."""


@dataclass
class EvalItem:
    """One query or candidate before decoding: text, and at most one image or one frame list."""

    key: str
    text: str | None = None
    image: Any = None  # a path or a PIL image
    frames: list[str] | None = None
    where: str = ""  # "row 3 field 'qry_img_path'", for error messages
    # The raw row fields an input profile rebuilds its reference's text from (`input_formats.ProfileItem`).
    profile: dict[str, Any] | None = None


@dataclass
class TaskData:
    """Queries, the task's distinct candidates and, per query, its candidates and their relevance.

    ``query_candidates[q]`` is None for a global task (rank every candidate), else the query's listed
    candidates (indices into ``candidates``, repeats kept); ``relevance[q]`` maps a candidate index
    (into ``candidates``) to its grade — in a local list, only that index's first listing is relevant.
    """

    task: TaskSpec
    queries: list[EvalItem]
    candidates: list[EvalItem]
    query_candidates: list[list[int] | None]
    relevance: list[dict[int, float]]
    candidate_index: dict[str, int] = field(default_factory=dict)


def fail(task: TaskSpec, where: str, problem: str, fix: str) -> TaskDataError:
    return TaskDataError(f"Task {task.name!r}, {where}: {problem}. {fix}")


def join(*parts: str | None) -> str:
    return " ".join(p.strip() for p in parts if p and p.strip())


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def sample_frames(files: list, num_frames: int) -> list:
    """VLM2Vec's frame sampling: ``np.linspace(0, n - 1, num_frames, dtype=int)`` when there are enough frames."""
    if num_frames <= 0 or len(files) <= num_frames:
        return list(files)
    if num_frames == 1:
        return [files[0]]
    step = (len(files) - 1) / (num_frames - 1)  # numpy: arange(num) * step, last index set to stop
    indices = [int(i * step) for i in range(num_frames - 1)] + [len(files) - 1]
    return [files[i] for i in indices]


def frame_paths(task: TaskSpec, value: Any, where: str, root: str | None = None) -> list[str]:
    """Frame files of a video: a folder (naturally sorted, sampled to ``num_frames``) or an explicit list."""
    root = task.image_root if root is None else root
    if isinstance(value, str):
        folder = Path(os.path.join(root, value) if root else value)
        if not folder.is_dir():
            raise fail(task, where, f"frame folder {str(folder)!r} does not exist", "Extract the frames there or fix the path / root.")  # fmt: skip
        files = sorted((p.name for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES), key=_natural_key)
        if not files:
            raise fail(task, where, f"frame folder {str(folder)!r} holds no images", "Extract the frames first.")
        return [str(folder / f) for f in sample_frames(files, task.num_frames)]
    paths = [os.path.join(root, p) if root else p for p in value]
    if not paths:
        raise fail(task, where, "the frame list is empty", "Give at least one frame.")
    for path in paths:
        if not os.path.isfile(path):
            raise fail(task, where, f"frame {path!r} does not exist", "Check the path and image_root.")
    return paths


def load_rows(task: TaskSpec, config: str | None = None):
    """Rows of a local file/folder or a Hub (or locally mirrored) dataset, through `datasets`."""
    import datasets

    if task.data_files is not None:
        path = Path(task.data_files)
        if task.data_format == BEIR_FORMAT:
            matches = sorted(path.glob(f"{config}.*")) if path.is_dir() else []
            if not matches:
                raise fail(task, f"{config} file", f"no {config}.jsonl/.parquet in {str(path)!r}", "A BEIR folder holds queries, corpus and qrels files.")  # fmt: skip
            path = matches[0]
        if not path.exists():
            raise fail(task, "data_files", f"{str(path)!r} does not exist", "Check the task's data_files.")
        builder = "parquet" if path.suffix == ".parquet" else "json"
        rows = datasets.load_dataset(builder, data_files=str(path), split="train")
    else:
        subset = config if task.data_format == BEIR_FORMAT else task.hf_subset
        rows = datasets.load_dataset(task.hf_path, subset, split=task.hf_split)
    if task.num_samples is not None and config in (None, "queries") and task.num_samples < len(rows):
        rows = rows.select(range(task.num_samples))  # VLM2Vec keeps the first rows
    return rows
