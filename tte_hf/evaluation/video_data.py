"""VLM2Vec's MMEB-V2 video tasks, read from their Hub rows plus pre-extracted frames.

Each parser mirrors one loader of TIGER-AI-Lab/VLM2Vec `src/data/eval_dataset/` (field names,
instructions, candidate sets). Frames are not decoded here: they are read from the task's
``frame_root/<video id>/`` folders as TIGER-Lab/MMEB-V2 ships them (``video-tasks/frames/...``).
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from .data import EvalItem, TaskData, TaskDataError, _fail, _frame_paths, _join, _load_rows
from .tasks import TaskSpec

VIDEO_DOCUMENT_INSTRUCTION = "Understand the content of the provided video."
# parser -> (query instruction, video-id field, caption field); from each VLM2Vec retrieval loader.
RETRIEVAL_FIELDS = {
    "msrvtt": ("Find a video that contains the following visual content:", "video_id", "caption"),
    "msvd": ("Find the video snippet that corresponds to the given summary:", "video_id", "caption"),
    "didemo": ("Find a video that includes the following described scenes:", "video", "caption"),
    "vatex": ("Select a video that fits the description provided:", "videoID", "enCap"),
    "youcook2": ("Find a video that demonstrates the following action while making a recipe:", "id", "sentence"),
}
LABEL_KEYS = {"K700": "Kinetics-700"}
QA_PROMPT = (
    "Given a video and a question, select the most accurate answer from the provided candidates. "
    "Return only the exact text of your chosen answer. Question:"
)
LETTERS = ("A", "B", "C", "D")  # task name -> key of VLM2Vec's label / instruction tables


@cache
def _label_tables() -> dict[str, Any]:
    return json.loads((Path(__file__).with_name("video_labels.json")).read_text())


def _field(task: TaskSpec, row: dict, index: int, name: str) -> Any:
    value = row.get(name)
    if value is None or value == "" or value == []:
        raise _fail(task, f"row {index}", f"field {name!r} is missing", f"VLM2Vec's {task.parser!r} rows need {name!r}.")  # fmt: skip
    return value


def _frames(task: TaskSpec, video_id: str, where: str) -> list[str]:
    if task.frame_root is None:
        raise _fail(task, where, "the task has no frame_root", "Point --image-root at the MMEB-V2 media folder.")
    return _frame_paths(task, video_id, where, root=task.frame_root)


def _retrieval(task: TaskSpec) -> TaskData:
    instruction, id_field, caption_field = RETRIEVAL_FIELDS[task.parser]
    queries, candidates, relevance, index_of = [], [], [], {}
    for index, row in enumerate(_load_rows(task)):
        caption = _field(task, row, index, caption_field)
        caption = caption[0] if isinstance(caption, list) else caption  # msvd / vatex: first caption
        video_id = str(_field(task, row, index, id_field))
        if task.parser == "didemo":  # the field holds a file path; the frame folder is its stem
            video_id = os.path.splitext(os.path.basename(video_id))[0]
        if video_id not in index_of:
            frames = _frames(task, video_id, f"row {index} (video {video_id})")
            index_of[video_id] = len(candidates)
            candidates.append(EvalItem(key=video_id, text=VIDEO_DOCUMENT_INSTRUCTION, frames=frames, where=f"row {index}"))  # fmt: skip
        queries.append(EvalItem(key=f"{task.name}/{index}", text=_join(instruction, caption), where=f"row {index}"))
        relevance.append({index_of[video_id]: 1.0})
    return TaskData(task, queries, candidates, [None] * len(queries), relevance, index_of)


def _classification(task: TaskSpec) -> TaskData:
    tables = _label_tables()
    key = LABEL_KEYS.get(task.name, task.name)
    if key not in tables["labels"]:
        raise TaskDataError(f"Task {task.name!r}: no VLM2Vec label list for {key!r}; known: {sorted(tables['labels'])}.")  # fmt: skip
    instruction = tables["instructions"][key]
    labels = tables["labels"][key]
    candidates = [EvalItem(key=label, text=label, where=f"label {i}") for i, label in enumerate(labels)]
    index_of = {label: i for i, label in enumerate(labels)}
    queries, own_lists, relevance = [], [], []
    for index, row in enumerate(_load_rows(task)):
        video_id = str(_field(task, row, index, "video_id"))
        gold = _field(task, row, index, "pos_text")
        if task.parser == "ssv2":  # multiple choice: the row's own options (neg_text) hold the answer
            options = _field(task, row, index, "neg_text")
            for option in options:
                if option not in index_of:
                    index_of[option] = len(candidates)
                    candidates.append(EvalItem(key=option, text=option, where=f"row {index}"))
            own = list(dict.fromkeys(index_of[o] for o in options))
        else:
            own = None
        if gold not in index_of or (own is not None and index_of[gold] not in own):
            raise _fail(task, f"row {index}", f"the gold label {gold!r} is not among the candidates", "Fix pos_text / neg_text or the label list.")  # fmt: skip
        frames = _frames(task, video_id, f"row {index} (video {video_id})")
        queries.append(EvalItem(key=f"{task.name}/{index}", text=instruction.strip(), frames=frames, where=f"row {index}"))  # fmt: skip
        own_lists.append(own)
        relevance.append({index_of[gold]: 1.0})
    return TaskData(task, queries, candidates, own_lists, relevance, index_of)


def _option_text(option: str) -> str:
    """VLM2Vec's ``o[o.find('. '):].strip('. ')``: "B. a red car" -> "a red car"."""
    return option[option.find(". ") :].strip(". ")


def _qa_row(task: TaskSpec, row: dict, index: int) -> tuple[str, str, list[tuple[str, str]], str]:
    """(video id, query text, [(candidate key, candidate text)], gold key) of one video-QA row."""
    if task.parser == "nextqa":
        options = [str(_field(task, row, index, f"a{i}")) for i in range(5)]
        question = _field(task, row, index, "question")
        answer = int(_field(task, row, index, "answer"))
        # VLM2Vec's qa_template: the question, then "Options:" and "(A) ..." lines.
        listed = "\n".join(f"({chr(ord('A') + i)}) {o}" for i, o in enumerate(options))
        text = f"{question}\nOptions:\n{listed}"
        return str(_field(task, row, index, "video")), text, [(o, o) for o in options], options[answer]
    if task.parser in ("videomme", "egoschema"):
        options = list(_field(task, row, index, "options" if task.parser == "videomme" else "option"))
        question = _field(task, row, index, "question")
        answer = _field(task, row, index, "answer")
        position = LETTERS.index(answer) if task.parser == "videomme" else int(answer)
        text = question + "\n" + "\n".join(options) if task.parser == "videomme" else question + " ".join(options)
        video = _field(task, row, index, "videoID" if task.parser == "videomme" else "video_idx")
        return str(video), text, [(o, _option_text(o)) for o in options], options[position]
    if task.parser == "activitynetqa":
        question = _field(task, row, index, "question")
        answer = _field(task, row, index, "answer")
        video = f"v_{_field(task, row, index, 'video_name')}"
        return video, question + "? (A) yes; (B) no.", [("yes", "yes"), ("no", "no")], answer
    raise TaskDataError(f"Task {task.name!r}: {task.note or f'parser {task.parser!r} is not implemented.'}")


def _question_answering(task: TaskSpec) -> TaskData:
    queries, candidates, own_lists, relevance, index_of = [], [], [], [], {}
    for index, row in enumerate(_load_rows(task)):
        video_id, text, options, gold = _qa_row(task, row, index)
        own = []
        for key, option_text in options:
            if key not in index_of:
                index_of[key] = len(candidates)
                candidates.append(EvalItem(key=key, text=option_text, where=f"row {index}"))
            if index_of[key] not in own:
                own.append(index_of[key])
        if gold not in index_of or index_of[gold] not in own:
            raise _fail(task, f"row {index}", f"the answer {gold!r} is not among the options", "Fix the answer / options.")  # fmt: skip
        frames = _frames(task, video_id, f"row {index} (video {video_id})")
        queries.append(EvalItem(key=f"{task.name}/{index}", text=_join(QA_PROMPT, text), frames=frames, where=f"row {index}"))  # fmt: skip
        own_lists.append(own)
        relevance.append({index_of[gold]: 1.0})
    return TaskData(task, queries, candidates, own_lists, relevance, index_of)


def load_vlm2vec_video(task: TaskSpec) -> TaskData:
    """Queries, candidates and relevance of a registered MMEB-V2 video task."""
    if task.parser in RETRIEVAL_FIELDS:
        data = _retrieval(task)
    elif task.parser in ("video_classification", "ssv2"):
        data = _classification(task)
    elif task.parser in ("nextqa", "videomme", "egoschema", "activitynetqa"):
        data = _question_answering(task)
    else:
        raise TaskDataError(f"Task {task.name!r}: {task.note or f'parser {task.parser!r} is not implemented.'}")
    if not data.queries:
        raise _fail(task, "data", "the dataset has no rows", "Check the split / data_root.")
    return data
