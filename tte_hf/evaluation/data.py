"""Load an MMEB task into queries, candidates and relevance, validating every row.

Two row formats (see `tasks.py`):
- ``mmeb``: one row per query — ``qry_inst``, ``qry_text``, ``qry_img_path`` (or ``qry_video_path``:
  a folder of frames / a list of frame files), ``tgt_inst``, ``tgt_text`` (list), ``tgt_img_path``
  (list, or ``tgt_video_path``); the first candidate is the gold one. Paths are relative to the task's
  ``image_root``. Rows may carry an ``id``.
- ``beir``: ``queries`` (``query-id``, ``query``), ``corpus`` (``corpus-id``, ``image``: a PIL image or
  a path) and ``qrels`` (``query-id``, ``corpus-id``, ``score``); positive qrels are the relevant pages.

MMEB-V2's video tasks keep VLM2Vec's per-dataset rows; `video_data.py` parses them. Media are only
checked for existence here and decoded later, chunk by chunk (`materialize`).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from typing import Any

from PIL import Image

from ..models.tte.inputs import strip_image_tags
from .input_formats import ProfileItem
from .metrics import LEADERBOARD, check_protocol
from .rows import EvalItem, TaskData, TaskDataError, fail, frame_paths, join, load_rows, sample_frames
from .tasks import BEIR_FORMAT, DATA_FORMATS, MMEB_FORMAT, VLM2VEC_VIDEO_FORMAT, TaskSpec

__all__ = ["EvalItem", "TaskData", "TaskDataError", "load_task", "materialize", "register_loader", "sample_frames"]


def _strip_markers(text: str | None) -> str:
    """MMEB_Test_Instruct instructions keep Phi-3-V's image placeholder; the chat messages place images."""
    return strip_image_tags(text or "")


def _resolve(task: TaskSpec, relative: str) -> str:
    return os.path.join(task.image_root, relative) if task.image_root else relative


def _image_path(task: TaskSpec, value: str, where: str) -> str:
    path = _resolve(task, value)
    if not os.path.isfile(path):
        raise fail(task, where, f"image {path!r} does not exist", "Check the path and the task's image_root.")
    return path


def _require(task: TaskSpec, row: Mapping[str, Any], index: int, name: str, kind: type | tuple) -> Any:
    value = row.get(name)
    if value is None:
        raise fail(task, f"row {index}", f"field {name!r} is missing", f"Each row needs {name!r}.")
    if not isinstance(value, kind):
        raise fail(task, f"row {index}", f"field {name!r} is a {type(value).__name__}", f"Expected {kind}.")
    return value


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _vlm2vec_parser(task: TaskSpec, query_image: bool, candidate_images: bool) -> str:
    """Which of VLM2Vec's image parsers reads this task's rows (image.yaml), from the row's shape: the
    input profiles rebuild that parser's text. MMEB's image tasks all follow this rule."""
    if not query_image:
        return "image_t2i"
    if candidate_images:
        return "image_i2i_vg"
    return "image_qa" if task.meta_task == "QA" else "image_cls"  # image_i2t builds text as image_cls


def _candidate_key(protocol: str, image: str | None, video: Any, caption: str, with_caption: bool) -> str:
    """What makes two listed candidates one candidate (one embedding).

    ``leaderboard``: VLM2Vec's candidate name (src/data/eval_dataset/image_*.py): the raw text of a
    text candidate; the image path of an image candidate, with ``":" + caption.strip('"')`` appended
    when the query has an image too (its ``image_i2i_vg`` parser: RefCOCO lists several objects of one
    image). The first listing of a name gives its text. ``strict``: media path(s) and stripped text.
    """
    if protocol == LEADERBOARD:
        if image:
            return f"{image}:{caption.strip(chr(34))}" if with_caption else image
        return str(video) if video else caption
    return "|".join([image or "", str(video or ""), caption.strip()])


def _mmeb_query(task: TaskSpec, row: Mapping[str, Any], row_index: int, row_id: str, parser: str) -> EvalItem:
    qry_text = row["qry_text"]
    query = EvalItem(key=f"{task.name}/{row_id}", text=join(_strip_markers(row.get("qry_inst")), qry_text))
    query.where = f"row {row_index} (id {row_id})"
    query.profile = {"side": "query", "parser": parser, "instruction": row.get("qry_inst") or "", "text": qry_text}
    if row.get("qry_img_path"):
        query.image = _image_path(task, row["qry_img_path"], f"row {row_index} field 'qry_img_path'")
    if row.get("qry_video_path"):
        query.frames = frame_paths(task, row["qry_video_path"], f"row {row_index} field 'qry_video_path'")
    if not (query.text or query.image or query.frames):
        raise fail(task, f"row {row_index}", "the query has no text, image or video", "Fill qry_text or a media path.")  # fmt: skip
    return query


def _load_mmeb(task: TaskSpec, protocol: str = LEADERBOARD) -> TaskData:
    queries, candidates, query_candidates, relevance = [], [], [], []
    index_of: dict[str, int] = {}
    for row_index, row in enumerate(load_rows(task)):
        row_id = str(row["id"]) if row.get("id") is not None else str(row_index)
        _require(task, row, row_index, "qry_text", str)
        tgt_texts = _require(task, row, row_index, "tgt_text", (list, tuple))
        if not tgt_texts:
            raise fail(task, f"row {row_index}", "the candidate list 'tgt_text' is empty, so it lacks the gold item", "MMEB lists the gold candidate first; give at least one.")  # fmt: skip
        n = len(tgt_texts)
        media_lists = {}
        for name in ("tgt_img_path", "tgt_video_path"):
            values = _as_list(row.get(name))
            if values and not all(v in ("", None) for v in values):
                if len(values) != n:
                    raise fail(task, f"row {row_index}", f"{name!r} has {len(values)} entries for {n} 'tgt_text' candidates", "Give one entry per candidate ('' for none).")  # fmt: skip
                media_lists[name] = values
        parser = _vlm2vec_parser(task, bool(row.get("qry_img_path")), "tgt_img_path" in media_lists)
        query = _mmeb_query(task, row, row_index, row_id, parser)
        tgt_inst = _strip_markers(row.get("tgt_inst"))
        own: list[int] = []
        for c in range(n):
            where = f"row {row_index} candidate {c}"
            image_rel = media_lists.get("tgt_img_path", [None] * n)[c] or None
            video_rel = media_lists.get("tgt_video_path", [None] * n)[c] or None
            caption = tgt_texts[c] or ""
            if not isinstance(caption, str):
                raise fail(task, where, f"'tgt_text' entry is a {type(caption).__name__}", "Candidates are strings.")
            # VLM2Vec: text candidates are the bare label/caption; visual candidates get the target instruction.
            text = join(tgt_inst, caption) if (image_rel or video_rel) else caption.strip()
            key = _candidate_key(protocol, image_rel, video_rel, caption, with_caption=bool(query.image))
            if not (text or image_rel or video_rel):
                raise fail(task, where, "the candidate has no text, image or video", "Fill tgt_text or a media path.")
            if key not in index_of:
                item = EvalItem(key=key, text=text or None, where=where)
                item.profile = {"side": "candidate", "parser": parser, "instruction": row.get("tgt_inst") or "", "text": caption}  # fmt: skip
                item.profile["captioned"] = bool(str(tgt_texts[0] or "").strip())
                if image_rel:
                    item.image = _image_path(task, image_rel, f"{where} field 'tgt_img_path'")
                if video_rel:
                    item.frames = frame_paths(task, video_rel, f"{where} field 'tgt_video_path'")
                index_of[key] = len(candidates)
                candidates.append(item)
            # Every listing is kept, repeats included; the protocol (metrics.py) decides whether a
            # repeat of the gold's key (two classes named "crane") is the gold or a negative.
            own.append(index_of[key])
        queries.append(query)
        query_candidates.append(own)
        relevance.append({own[0]: 1.0})
    if not queries:
        raise fail(task, "data", "the dataset has no rows", "Check the split / data_files.")
    if task.ranking == "global":
        query_candidates = [None] * len(queries)
    return TaskData(task, queries, candidates, query_candidates, relevance, index_of)


def _load_beir(task: TaskSpec, protocol: str = LEADERBOARD) -> TaskData:  # corpus-ids name pages in both
    corpus_rows = load_rows(task, "corpus")
    candidates: list[EvalItem] = []
    index_of: dict[str, int] = {}
    for row_index, row in enumerate(corpus_rows):
        where = f"corpus row {row_index}"
        corpus_id = row.get("corpus-id")
        if corpus_id is None:
            raise fail(task, where, "field 'corpus-id' is missing", "Each corpus row needs 'corpus-id' and 'image'.")
        image = row.get("image")
        if image is None:
            raise fail(task, where, "field 'image' is missing", "Each corpus row needs 'corpus-id' and 'image'.")
        if isinstance(image, str):
            image = _image_path(task, image, f"{where} field 'image'")
        item = EvalItem(key=str(corpus_id), text=task.document_instruction, image=image, where=where)
        item.profile = {"side": "candidate", "parser": "vidore", "instruction": task.document_instruction or ""}
        index_of[item.key] = len(candidates)
        candidates.append(item)
    qrels: dict[str, dict[int, float]] = {}
    for row_index, row in enumerate(load_rows(task, "qrels")):
        for name in ("query-id", "corpus-id", "score"):
            if row.get(name) is None:
                raise fail(task, f"qrels row {row_index}", f"field {name!r} is missing", "qrels rows need query-id, corpus-id and score.")  # fmt: skip
        if float(row["score"]) <= 0:  # VLM2Vec keeps positive qrels only
            continue
        corpus_id = str(row["corpus-id"])
        if corpus_id not in index_of:
            raise fail(task, f"qrels row {row_index}", f"corpus-id {corpus_id!r} is not in the corpus, so query {row['query-id']!r} would miss its gold page", "Add the page to the corpus or drop the qrel.")  # fmt: skip
        grades = qrels.setdefault(str(row["query-id"]), {})
        grades[index_of[corpus_id]] = max(grades.get(index_of[corpus_id], 0.0), float(row["score"]))
    queries, relevance = [], []
    for row_index, row in enumerate(load_rows(task, "queries")):
        query_id = row.get("query-id")
        text = row.get("query")
        if query_id is None or text is None:
            missing = "query-id" if query_id is None else "query"
            raise fail(task, f"queries row {row_index}", f"field {missing!r} is missing", "Query rows need query-id and query.")  # fmt: skip
        if str(query_id) not in qrels:
            raise fail(task, f"queries row {row_index} (query-id {query_id})", "the query has no positive qrels, so its candidates lack a gold item", "Add a qrel with score > 0 or drop the query.")  # fmt: skip
        query = EvalItem(key=f"{task.name}/{query_id}", text=join(task.query_instruction, text), where=f"queries row {row_index}")  # fmt: skip
        query.profile = {"side": "query", "parser": "vidore", "instruction": task.query_instruction or "", "text": text}
        queries.append(query)
        relevance.append(qrels[str(query_id)])
    if not queries:
        raise fail(task, "queries", "the dataset has no queries", "Check the split / data_files.")
    return TaskData(task, queries, candidates, [None] * len(queries), relevance, index_of)


Loader = Callable[[TaskSpec], TaskData]
# data_format -> loader, or "module:function" imported on first use (video parsing stays unloaded
# until a video task needs it). `tasks.DATA_FORMATS` lists the formats a TaskSpec may name.
_LOADERS: dict[str, Loader | str] = {
    MMEB_FORMAT: _load_mmeb,
    BEIR_FORMAT: _load_beir,
    VLM2VEC_VIDEO_FORMAT: "tte_hf.evaluation.video_data:load_vlm2vec_video",
}


def register_loader(data_format: str, loader: Loader | str) -> None:
    """Make `load_task` read tasks of ``data_format`` with ``loader`` (a function or "module:function")."""
    if data_format not in DATA_FORMATS:
        raise ValueError(f"data_format {data_format!r} is not one of tasks.DATA_FORMATS {DATA_FORMATS}; add it there.")
    _LOADERS[data_format] = loader


def load_task(task: TaskSpec, protocol: str = LEADERBOARD) -> TaskData:
    """Read and validate a task's rows (nothing is decoded yet), with the loader of its data format.

    ``protocol`` (`metrics.PROTOCOLS`) sets which listed candidates are one candidate; a loader is
    called as ``loader(task, protocol=protocol)``.
    """
    check_protocol(protocol)
    loader = _LOADERS.get(task.data_format)
    if loader is None:
        raise TaskDataError(f"Task {task.name!r}: no loader for data_format {task.data_format!r} (known: {sorted(_LOADERS)}).")  # fmt: skip
    if isinstance(loader, str):
        module, _, name = loader.partition(":")
        loader = _LOADERS[task.data_format] = getattr(importlib.import_module(module), name)
    return loader(task, protocol=protocol)


def _open_image(task: TaskSpec, image: Any, where: str) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    try:
        with Image.open(image) as opened:
            return opened.convert("RGB")
    except Exception as err:  # PIL raises several types for corrupt or unsupported files
        raise fail(task, where, f"cannot read image {str(image)!r} ({type(err).__name__}: {err})", "Replace or remove the file.") from err  # fmt: skip


def profile_input(task: TaskSpec, item: EvalItem) -> ProfileItem:
    """The input for a model with an input profile (`input_formats`): the item's raw row fields, decoded media."""
    if item.profile is None:
        raise fail(task, item.where, "this task's loader keeps no raw row fields for input profiles", "Use --input-format tte.")  # fmt: skip
    image = _open_image(task, item.image, item.where) if item.image is not None else None
    frames = [_open_image(task, frame, item.where) for frame in item.frames] if item.frames is not None else None
    return ProfileItem(task=task.name, image=image, frames=frames, **item.profile)


def materialize(task: TaskSpec, item: EvalItem, reasoning: str | None = None) -> Any:
    """The sentence-transformers input for an item: str, PIL image, or a dict with text/image/video/reasoning."""
    data: dict[str, Any] = {}
    if item.text:
        data["text"] = item.text
    if item.image is not None:
        data["image"] = _open_image(task, item.image, item.where)
    if item.frames is not None:
        data["video"] = [_open_image(task, frame, item.where) for frame in item.frames]
    if reasoning is not None:
        data["reasoning"] = reasoning
    if list(data) == ["text"]:
        return data["text"]
    if list(data) == ["image"]:
        return data["image"]
    return data
