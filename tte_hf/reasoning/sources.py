"""Input rows for ECR generation: MMEB-train JSONL, the package's own JSONL, or a `datasets` dataset.

Every row becomes an `ECRItem` with a stable id, or a `BadItem` saying where it is and what is wrong;
images are only checked for existence here and opened later, chunk by chunk (`load_images`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models.tte.ecr import MMEB_TRAIN_TASKS, TASKS
from ..models.tte.inputs import strip_image_tags

INPUT_FORMATS = ("auto", "mmeb", "tte", "datasets")
SIDES = ("query", "target")


class BadInputError(ValueError):
    """A row that cannot be reasoned about; the message names the row and what to do."""


@dataclass
class ECRItem:
    """One input to reason about. ``images``/``video`` hold paths (str) or PIL images."""

    id: str
    source: str
    task: str
    text: str | None = None
    instruction: str | None = None
    images: list[Any] = field(default_factory=list)
    video: list[Any] | None = None
    side: str = "query"
    explicit_id: bool = False  # the row's own ``id`` (else a content hash: duplicates are the same input)


@dataclass
class BadItem:
    id: str
    source: str
    error: str
    explicit_id: bool = False


def _content_ref(ref) -> str:
    if isinstance(ref, str):
        return ref
    if isinstance(ref, dict):
        return ref.get("path") or hashlib.sha256(ref.get("bytes") or b"").hexdigest()
    return hashlib.sha256(ref.tobytes()).hexdigest()  # a PIL image


def stable_id(side: str, task: str, text: str | None, instruction: str | None, images, video) -> str:
    """A content hash of the row as written (image paths relative to the image root, or pixel hashes):
    the same input always gets the same id, whatever file, line or machine it comes from."""
    frames = None if video is None else [_content_ref(f) for f in video]
    content = [side, task, text, instruction, [_content_ref(i) for i in images], frames]
    digest = hashlib.sha1(json.dumps(content, sort_keys=True).encode()).hexdigest()[:20]
    return f"{side[0]}-{digest}"


def shard_of(item_id: str, num_shards: int) -> int:
    return int(hashlib.sha1(item_id.encode()).hexdigest(), 16) % num_shards


def detect_format(path: str) -> str:
    """``mmeb`` for JSONL rows with ``qry``, ``tte`` for other JSONL, ``datasets`` otherwise."""
    if not path.endswith((".jsonl", ".json")):
        return "datasets"
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                try:
                    return "mmeb" if "qry" in json.loads(line) else "tte"
                except json.JSONDecodeError:
                    return "tte"  # the reader reports the bad line
    return "tte"


class ItemReader:
    """Turns rows into items. ``task`` applies to every row (a row's own ``task`` field wins in the
    ``tte`` format); for MMEB rows it defaults to the meta-task of ``dataset_name``."""

    def __init__(
        self,
        image_root: str | None = None,
        task: str | None = None,
        dataset_name: str | None = None,
        sides: tuple[str, ...] = ("query",),
    ):
        self.image_root = Path(image_root) if image_root else None
        if dataset_name and not task:
            if dataset_name not in MMEB_TRAIN_TASKS:
                raise ValueError(
                    f"dataset_name={dataset_name!r} is not an MMEB-train subset I know "
                    f"({', '.join(MMEB_TRAIN_TASKS)}); set `task` explicitly."
                )
            task = MMEB_TRAIN_TASKS[dataset_name]
        self.task = task
        bad_sides = [s for s in sides if s not in SIDES]
        if bad_sides or not sides:
            raise ValueError(f"sides={list(sides)} must be a non-empty subset of {SIDES}.")
        self.sides = tuple(sides)

    # --- files ---------------------------------------------------------------------------------
    def read_jsonl(self, path: str, fmt: str) -> Iterator[ECRItem | BadItem]:
        with open(path, encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                where = f"{path}:{line_no}"
                try:
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise ValueError("a JSON object per line is expected")
                except ValueError as err:
                    yield BadItem(id=f"line-{line_no}", source=where, error=f"malformed JSON line ({err})")
                    continue
                yield from self.from_row(row, where, fmt)

    def read_dataset(self, name_or_path: str, config_name: str | None, split: str) -> Iterator[ECRItem | BadItem]:
        import datasets

        if os.path.isdir(name_or_path) and (Path(name_or_path) / "dataset_info.json").exists():
            data = datasets.load_from_disk(name_or_path)
        elif os.path.isdir(name_or_path) and (Path(name_or_path) / "state.json").exists():
            data = datasets.load_from_disk(name_or_path)
        else:
            data = datasets.load_dataset(name_or_path, config_name, split=split)
        if isinstance(data, datasets.DatasetDict):
            data = data[split]
        for index, row in enumerate(data):
            yield from self.from_row(row, f"{name_or_path}[{split}] row {index}", "mmeb" if "qry" in row else "tte")

    # --- rows ----------------------------------------------------------------------------------
    def from_row(self, row: dict[str, Any], where: str, fmt: str) -> Iterator[ECRItem | BadItem]:
        if fmt == "mmeb":
            if "query" in self.sides:
                yield self._item(row, where, "query", row.get("qry"), row.get("qry_image_path"), None, None)
            if "target" in self.sides:
                yield self._item(row, where, "target", row.get("pos_text"), row.get("pos_image_path"), None, None)
        else:
            images = row.get("images") or ([row["image"]] if row.get("image") else [])
            side = row.get("side", "query")
            yield self._item(row, where, side, row.get("text"), images, row.get("video"), row.get("instruction"))

    def _item(self, row, where, side, text, images, video, instruction) -> ECRItem | BadItem:
        explicit_id = row.get("id")
        label = f"{where} ({side})" if len(self.sides) > 1 else where
        task = row.get("task") or self.task
        if images is None:  # an MMEB row without the image field at all
            images = []
        elif isinstance(images, (str, bytes)) or not isinstance(images, list):
            images = [images] if images else []
        if text is not None and not isinstance(text, str):
            error = f"text must be a string, got {type(text).__name__}"
            return BadItem(str(explicit_id or where), label, error, explicit_id is not None)
        if text:
            text = strip_image_tags(text) or None
        images = [i for i in images if i not in (None, "")]
        refs = [self._resolve(i) for i in images]
        frames = [self._resolve(f) for f in video] if video else None
        item_id = str(explicit_id) if explicit_id is not None else None
        explicit = item_id is not None
        if task is None:
            error = "no task: set `task` (or an MMEB `dataset_name`) in the config"
            return BadItem(item_id or where, label, error, explicit)
        if task not in TASKS:
            return BadItem(item_id or where, label, f"unknown task {task!r}; use one of {', '.join(TASKS)}", explicit)
        if item_id is None:
            item_id = stable_id(side, task, text, instruction, images, video or None)
        if not text and not instruction and not refs and not frames:
            return BadItem(item_id, label, "empty input: no text, no image and no video", explicit)
        for ref in [*refs, *(frames or [])]:
            if isinstance(ref, str) and not os.path.isfile(ref):
                return BadItem(item_id, label, f"image file not found: {ref} (check `image_root`)", explicit)
        return ECRItem(item_id, label, task, text, instruction, refs, frames, side, explicit)

    def _resolve(self, ref):
        if isinstance(ref, dict):  # a `datasets` Image feature not decoded: {"bytes", "path"}
            if ref.get("bytes"):
                import io

                from PIL import Image

                return Image.open(io.BytesIO(ref["bytes"]))
            ref = ref.get("path")
        if isinstance(ref, str) and self.image_root and not os.path.isabs(ref):
            return str(self.image_root / ref)
        return ref


def load_images(item: ECRItem) -> tuple[tuple[Any, ...], tuple[Any, ...] | None]:
    """Open ``item``'s images and video frames as RGB PIL images; raise `BadInputError` naming the file."""
    from PIL import Image

    def load(ref):
        try:
            image = Image.open(ref) if isinstance(ref, str) else ref
            return image.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise BadInputError(f"cannot read image {ref}: {err}") from err

    images = tuple(load(ref) for ref in item.images)
    video = tuple(load(ref) for ref in item.video) if item.video else None
    return images, video
