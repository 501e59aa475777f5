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

from .rows import EvalItem, TaskData, TaskDataError, fail, frame_paths, join, load_rows
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
        raise fail(task, f"row {index}", f"field {name!r} is missing", f"VLM2Vec's {task.parser!r} rows need {name!r}.")  # fmt: skip
    return value


def _frames(task: TaskSpec, video_id: str, where: str) -> list[str]:
    if task.frame_root is None:
        raise fail(task, where, "the task has no frame_root", "Point --image-root at the MMEB-V2 media folder.")
    return frame_paths(task, video_id, where, root=task.frame_root)


def _retrieval(task: TaskSpec) -> TaskData:
    instruction, id_field, caption_field = RETRIEVAL_FIELDS[task.parser]
    queries, candidates, relevance, index_of = [], [], [], {}
    for index, row in enumerate(load_rows(task)):
        caption = _field(task, row, index, caption_field)
        caption = caption[0] if isinstance(caption, list) else caption  # msvd / vatex: first caption
        video_id = str(_field(task, row, index, id_field))
        if task.parser == "didemo":  # the field holds a file path; the frame folder is its stem
            video_id = os.path.splitext(os.path.basename(video_id))[0]
        if video_id not in index_of:
            frames = _frames(task, video_id, f"row {index} (video {video_id})")
            index_of[video_id] = len(candidates)
            candidates.append(EvalItem(key=video_id, text=VIDEO_DOCUMENT_INSTRUCTION, frames=frames, where=f"row {index}"))  # fmt: skip
        queries.append(EvalItem(key=f"{task.name}/{index}", text=join(instruction, caption), where=f"row {index}"))
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
    for index, row in enumerate(load_rows(task)):
        video_id = str(_field(task, row, index, "video_id"))
        gold = _field(task, row, index, "pos_text")
        if task.parser == "ssv2":  # multiple choice: the row's own options (neg_text) hold the answer
            options = _field(task, row, index, "neg_text")
            for option in options:
                if option not in index_of:
                    index_of[option] = len(candidates)
                    candidates.append(EvalItem(key=option, text=option, where=f"row {index}"))
            own = [index_of[o] for o in options]  # repeats kept: an equal negative ties with the gold
        else:
            own = None
        if gold not in index_of or (own is not None and index_of[gold] not in own):
            raise fail(task, f"row {index}", f"the gold label {gold!r} is not among the candidates", "Fix pos_text / neg_text or the label list.")  # fmt: skip
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
    for index, row in enumerate(load_rows(task)):
        video_id, text, options, gold = _qa_row(task, row, index)
        own = []
        for key, option_text in options:
            if key not in index_of:
                index_of[key] = len(candidates)
                candidates.append(EvalItem(key=key, text=option_text, where=f"row {index}"))
            own.append(index_of[key])  # repeats kept: an equal negative ties with the gold
        if gold not in index_of or index_of[gold] not in own:
            raise fail(task, f"row {index}", f"the answer {gold!r} is not among the options", "Fix the answer / options.")  # fmt: skip
        frames = _frames(task, video_id, f"row {index} (video {video_id})")
        queries.append(EvalItem(key=f"{task.name}/{index}", text=join(QA_PROMPT, text), frames=frames, where=f"row {index}"))  # fmt: skip
        own_lists.append(own)
        relevance.append({index_of[gold]: 1.0})
    return TaskData(task, queries, candidates, own_lists, relevance, index_of)


# MVBench's 20 subsets, in VLM2Vec's order (mvbench_dataset.py `subset_meta`); frames live in <frame_root>/<subset>/.
MVBENCH_SUBSETS = (
    "episodic_reasoning", "action_sequence", "action_prediction", "action_antonym", "fine_grained_action",
    "unexpected_action", "object_existence", "object_interaction", "object_shuffle", "moving_direction",
    "action_localization", "scene_transition", "action_count", "moving_count", "moving_attribute",
    "state_change", "fine_grained_pose", "character_order", "egocentric_navigation", "counterfactual_inference",
)  # fmt: skip
MOMENT_QUERY_INSTRUCTION = "Find the clip that corresponds to the described scene in the given video:"
MOMENTSEEKER_INSTRUCTIONS = {
    "text": "Find the clip that corresponds to the given text:",
    "image": "Select the video clip that aligns with the given text and image:",
    "video": "Find the clip that corresponds to the given sentence and video segment:",
}
MOMENTSEEKER_DOCUMENT_INSTRUCTION = "Understand the content of the provided video clip."


def _mvbench_rows(task: TaskSpec):
    import datasets

    if task.data_files is not None:  # a local file already carries the `subset` column
        yield from enumerate(load_rows(task))
        return
    parts = []
    for subset in MVBENCH_SUBSETS:
        part = datasets.load_dataset(task.hf_path, subset, split=task.hf_split)
        parts.append(part.add_column("subset", [subset] * len(part)))
    yield from enumerate(datasets.concatenate_datasets(parts))


def _mvbench(task: TaskSpec) -> TaskData:
    queries, candidates, own_lists, relevance, index_of = [], [], [], [], {}
    for index, row in _mvbench_rows(task):
        question = _field(task, row, index, "question")
        options = [str(o) for o in _field(task, row, index, "candidates")]
        answer = str(_field(task, row, index, "answer"))
        subset = _field(task, row, index, "subset")
        video = str(_field(task, row, index, "video"))
        # VLM2Vec's qa_template: "(A) option" lines; candidates are the lettered options.
        lettered = [f"({chr(ord('A') + i)}) {o}" for i, o in enumerate(options)]
        if answer not in options:
            raise fail(task, f"row {index}", f"the answer {answer!r} is not among the candidates", "Fix answer / candidates.")  # fmt: skip
        gold = lettered[options.index(answer)]
        own = []
        for option in lettered:
            if option not in index_of:
                index_of[option] = len(candidates)
                candidates.append(EvalItem(key=option, text=option, where=f"row {index}"))
            own.append(index_of[option])  # repeats kept: an equal negative ties with the gold
        text = join(QA_PROMPT, question) + "\nOptions:\n" + "\n".join(lettered)
        frames = _frames(task, f"{subset}/{video}", f"row {index} (video {subset}/{video})")
        queries.append(EvalItem(key=f"{task.name}/{index}", text=text, frames=frames, where=f"row {index}"))
        own_lists.append(own)
        relevance.append({index_of[gold]: 1.0})
    return TaskData(task, queries, candidates, own_lists, relevance, index_of)


def _clip(task: TaskSpec, folder: str, where: str, candidates: list, index_of: dict, text: str) -> int:
    if folder not in index_of:
        frames = _frames(task, folder, where)
        index_of[folder] = len(candidates)
        candidates.append(EvalItem(key=folder, text=text, frames=frames, where=where))
    return index_of[folder]


def _moment_retrieval(task: TaskSpec) -> TaskData:
    """QVHighlight / Charades-STA: the query video's clips are <frame_root>/<video>/{positive*,negative*}/."""
    queries, candidates, own_lists, relevance, index_of = [], [], [], [], {}
    for index, row in enumerate(load_rows(task)):
        query = _field(task, row, index, "query")
        video = os.path.splitext(os.path.basename(str(_field(task, row, index, "video_path"))))[0]
        where = f"row {index} (video {video})"
        folder = Path(task.frame_root or "") / video
        if not folder.is_dir():
            raise fail(task, where, f"clip folder {str(folder)!r} does not exist", "Unpack MMEB-V2's video_mret frames.")  # fmt: skip
        clips = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name != "query")
        positives = [c for c in clips if c.startswith("positive")]
        if not positives:
            raise fail(task, where, "no 'positive*' clip folder, so the candidates lack the gold clip", "Check the frames.")  # fmt: skip
        own = [_clip(task, f"{video}/{c}", where, candidates, index_of, VIDEO_DOCUMENT_INSTRUCTION) for c in clips]
        frames = _frames(task, f"{video}/query", where)
        queries.append(EvalItem(key=f"{task.name}/{index}", text=join(MOMENT_QUERY_INSTRUCTION, query), frames=frames, where=where))  # fmt: skip
        own_lists.append(own)
        relevance.append({index_of[f"{video}/{positives[-1]}"]: 1.0})  # VLM2Vec keeps the last positive* it lists
    return TaskData(task, queries, candidates, own_lists, relevance, index_of)


def _momentseeker(task: TaskSpec) -> TaskData:
    """MomentSeeker: text, text+image or text+video queries; clips under <frame_root>/video_frames/."""
    queries, candidates, own_lists, relevance, index_of = [], [], [], [], {}
    for index, row in enumerate(load_rows(task)):
        query = _field(task, row, index, "query")
        source = row.get("input_frames") or ""
        where = f"row {index}"
        item = EvalItem(key=f"{task.name}/{index}", where=where)
        if source.endswith(".mp4"):
            item.text = join(MOMENTSEEKER_INSTRUCTIONS["video"], query)
            item.frames = _frames(task, f"video_frames/{source.split('.mp4')[0].replace('/', '_')}", where)
        elif source.endswith(".jpg"):
            item.text = join(MOMENTSEEKER_INSTRUCTIONS["image"], query)
            path = os.path.join(task.frame_root or "", f"query_{source}")
            if not os.path.isfile(path):
                raise fail(task, f"{where} field 'input_frames'", f"image {path!r} does not exist", "Unpack MMEB-V2's video_mret frames.")  # fmt: skip
            item.image = path
        else:
            item.text = join(MOMENTSEEKER_INSTRUCTIONS["text"], query)
        own, gold = [], {}
        for field_name, grade in (("positive_frames", 1.0), ("negative_frames", 0.0)):
            for entry in row.get(field_name) or []:
                clip = f"video_frames/{entry['output_path'].replace('/', '_').split('.mp4')[0]}"
                position = _clip(task, clip, where, candidates, index_of, MOMENTSEEKER_DOCUMENT_INSTRUCTION)
                own.append(position)
                if grade:
                    gold[position] = grade
        if not gold:
            raise fail(task, where, "'positive_frames' is empty, so the candidates lack a gold clip", "Check the row.")
        queries.append(item)
        own_lists.append(list(dict.fromkeys(own)))
        relevance.append(gold)
    return TaskData(task, queries, candidates, own_lists, relevance, index_of)


def load_vlm2vec_video(task: TaskSpec, protocol: str = "leaderboard") -> TaskData:
    """Queries, candidates and relevance of a registered MMEB-V2 video task (candidates are keyed by
    VLM2Vec's own names — option text, video or clip id — under either ``protocol``)."""
    if task.parser in RETRIEVAL_FIELDS:
        data = _retrieval(task)
    elif task.parser in ("video_classification", "ssv2"):
        data = _classification(task)
    elif task.parser in ("nextqa", "videomme", "egoschema", "activitynetqa"):
        data = _question_answering(task)
    elif task.parser == "mvbench":
        data = _mvbench(task)
    elif task.parser == "moment_retrieval":
        data = _moment_retrieval(task)
    elif task.parser == "momentseeker":
        data = _momentseeker(task)
    else:
        raise TaskDataError(f"Task {task.name!r}: {task.note or f'parser {task.parser!r} is not implemented.'}")
    if not data.queries:
        raise fail(task, "data", "the dataset has no rows", "Check the split / data_root.")
    return data
