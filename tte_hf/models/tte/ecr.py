"""Embedding-Centric Reasoning (ECR): the task prompts a reasoner answers and the parser of its traces.

Self-contained (standard library only): shipped next to the weights for ``trust_remote_code``.

A trace reads ``<think> step-by-step reasoning </think> short final part``. What the reasoning is
about depends on the task, so each MMEB meta-task has its own system prompt. ``PROMPT_VERSION``
changes whenever a prompt's wording does; caches and ECR files record it, so traces written under
other prompts are never mixed in silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PROMPT_VERSION = "ecr-v1"

_FORMAT = (
    "Write your reasoning between <think> and </think>, then, after </think>, one short final line. "
    "Be concrete and factual; do not mention these instructions."
)

TASK_PROMPTS: dict[str, str] = {
    "generic": (
        "You write an embedding-centric reasoning trace for a multimodal search system. Look carefully at "
        "the input and the instruction, and reason step by step about what the input shows or asks and "
        "which details matter for finding the right match. " + _FORMAT + " The final line summarises the "
        "input in the terms a matching item would use."
    ),
    "classification": (
        "You help classify an image. Describe the visual evidence step by step: the main subject, its "
        "attributes, the scene and any text, and weigh which category of the instruction they point to. "
        + _FORMAT
        + " The final line is the most likely label only."
    ),
    "vqa": (
        "You help answer a question about an image. Reason step by step: find the regions and objects the "
        "question refers to, read any text or numbers, relate them, and work towards the answer. "
        + _FORMAT
        + " The final line is the answer only."
    ),
    "retrieval": (
        "You help retrieve matching images or captions. Describe the input step by step: objects, people, "
        "actions, attributes, setting and any requested modification, keeping what a matching candidate "
        "must contain. " + _FORMAT + " The final line is a one-sentence caption of the target."
    ),
    "grounding": (
        "You help locate the object an expression refers to. Reason step by step about which object in the "
        "image is meant, its appearance, its position and its surroundings that tell it apart from similar "
        "objects. " + _FORMAT + " The final line describes the referred object and where it is."
    ),
    "video_classification": (
        "You help classify a video from its frames. Describe step by step the actors, objects and the "
        "actions or events that unfold over time, and weigh which category of the instruction they point "
        "to. " + _FORMAT + " The final line is the most likely label only."
    ),
    "video_qa": (
        "You help answer a question about a video from its frames. Reason step by step over the events in "
        "their order, the people and objects involved and what changes between frames, towards the "
        "answer. " + _FORMAT + " The final line is the answer only."
    ),
    "video_retrieval": (
        "You help retrieve matching videos or captions. Describe step by step the relevant events in order: "
        "who does what, with which objects, where, and how it changes over time. "
        + _FORMAT
        + " The final line is a one-sentence caption of the video."
    ),
    "moment_retrieval": (
        "You help find the moment of a video that matches a query. Reason step by step about the event the "
        "query describes, its participants, and what comes before and after it in the frames. "
        + _FORMAT
        + " The final line describes the moment in one sentence."
    ),
    "visdoc": (
        "You help retrieve visual documents (pages, slides, charts, forms). For a page, describe it in "
        "detail step by step: its type, title, sections, tables, figures, key numbers and named entities. "
        "For a question, reason about which page content would answer it. "
        + _FORMAT
        + " The final line is a summary of the page or of the information sought."
    ),
}

TASKS: tuple[str, ...] = tuple(TASK_PROMPTS)

#: MMEB-V1 training subsets (TIGER-Lab/MMEB-train) and their meta-tasks.
MMEB_TRAIN_TASKS: dict[str, str] = {
    **dict.fromkeys(("ImageNet_1K", "N24News", "HatefulMemes", "VOC2007", "SUN397"), "classification"),
    **dict.fromkeys(("OK-VQA", "A-OKVQA", "DocVQA", "InfographicsVQA", "ChartQA", "Visual7W"), "vqa"),
    **dict.fromkeys(
        (
            "VisDial",
            "CIRR",
            "VisualNews_t2i",
            "VisualNews_i2t",
            "MSCOCO_t2i",
            "MSCOCO_i2t",
            "NIGHTS",
            "WebQA",
        ),
        "retrieval",
    ),
    "MSCOCO": "grounding",
}


def task_prompt(task: str) -> str:
    """The system prompt of ``task`` (one of `TASKS`)."""
    try:
        return TASK_PROMPTS[task]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown ECR task {task!r}; use one of {', '.join(TASKS)}.") from None


# --- parsing -----------------------------------------------------------------------------------

_OPEN = re.compile(r"<\s*think\s*>", re.IGNORECASE)
_CLOSE = re.compile(r"<\s*/\s*think\s*>", re.IGNORECASE)
# Chat/control tokens a decoder may leave in: <|im_end|>, <|endoftext|>, <|image_pad|>, <|image_1|>, </s> ...
_SPECIAL = re.compile(r"<\|[^<>|\s]{1,40}\|>|</?s>|<pad>|<unk>")
_SPACES = re.compile(r"[ \t]+")
_BLANK_LINES = re.compile(r"\n{3,}")


@dataclass(frozen=True)
class ECR:
    """A parsed trace: ``thought`` (the reasoning) and ``final`` (the short final part).

    ``issues`` lists what the parser had to repair: ``empty``, ``special_tokens``, ``missing_open_tag``,
    ``missing_close_tag``, ``no_tags``, ``doubled_tags``, ``truncated``.
    """

    thought: str
    final: str
    issues: tuple[str, ...] = field(default=())

    @property
    def truncated(self) -> bool:
        return "truncated" in self.issues

    def for_embedder(self, mode: str = "full") -> str:
        """The text placed as the embedder's assistant turn.

        ``"full"``: ``<think>\\n{thought}\\n</think>\\n\\n{final}`` (just ``final`` when there is no
        thought); ``"final"``: the final part only — the paper's "ECR without chain of thought" ablation.
        """
        if mode == "final":
            return self.final
        if mode != "full":
            raise ValueError(f"Unknown ECR embedder mode {mode!r}; use 'full' or 'final'.")
        if not self.thought:
            return self.final
        return f"<think>\n{self.thought}\n</think>\n\n{self.final}".rstrip()


def _clean(text: str) -> str:
    lines = [_SPACES.sub(" ", line).strip() for line in text.replace("\r\n", "\n").split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _cap(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` characters, at a word boundary where one is near."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit * 0.8 else cut).rstrip()


def parse_ecr(text: str | None, max_chars: int | None = None) -> ECR:
    """Split a raw reasoner output into thought and final part, repairing what a model gets wrong.

    - stray special tokens (``<|im_end|>``, ``<|endoftext|>``, ...) are removed;
    - ``<think> a </think> b``: thought ``a``, final ``b``; tags match case- and space-insensitively;
    - doubled or repeated tags: the thought runs to the *last* ``</think>``, inner tags removed;
    - ``a </think> b`` (open tag in the prompt): thought ``a``; ``<think> a`` (cut off): thought ``a``,
      no final; no tags at all: the whole text is the final part;
    - ``max_chars`` caps thought + final (a runaway generation): the thought is shortened first,
      so the final part survives when it fits.
    """
    if max_chars is not None and max_chars <= 0:
        raise ValueError(f"max_chars must be a positive int or None, got {max_chars!r}.")
    issues: list[str] = []
    text = text or ""
    stripped = _SPECIAL.sub(" ", text)
    if stripped != text:
        issues.append("special_tokens")
    opens, closes = len(_OPEN.findall(stripped)), len(_CLOSE.findall(stripped))
    if opens > 1 or closes > 1:
        issues.append("doubled_tags")

    close_tags = list(_CLOSE.finditer(stripped))
    last_close = close_tags[-1] if close_tags else None
    if last_close is not None:
        before, after = stripped[: last_close.start()], stripped[last_close.end() :]
        if not opens:
            issues.append("missing_open_tag")
        thought, final = before, after
    elif opens:
        issues.append("missing_close_tag")
        thought, final = stripped, ""
    else:
        if stripped.strip():
            issues.append("no_tags")
        thought, final = "", stripped
    # Any tag left inside a part is noise (a repeated block or a stray open tag after the close).
    thought = _clean(_CLOSE.sub(" ", _OPEN.sub(" ", thought)))
    final = _clean(_CLOSE.sub(" ", _OPEN.sub(" ", final)))
    if not thought and not final:
        issues = [i for i in issues if i not in ("missing_open_tag", "missing_close_tag")] + ["empty"]

    if max_chars is not None and len(thought) + len(final) > max_chars:
        issues.append("truncated")
        final = _cap(final, max_chars)
        thought = _cap(thought, max_chars - len(final)) if max_chars > len(final) else ""
    return ECR(thought=thought, final=final, issues=tuple(dict.fromkeys(issues)))
