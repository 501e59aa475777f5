"""The input types every sentence-transformers TTE file shares: `ParsedInput` (an input validated and
loaded) and `INPUT_KEYS` (the keys a dict input may have). A leaf: it imports no sibling, so any of
them can import it without a circle.

Self-contained (standard library): shipped next to the weights for ``trust_remote_code``.
"""

from __future__ import annotations

#: the keys a dict input may carry
INPUT_KEYS = ("text", "image", "images", "video", "reasoning", "task")


class ParsedInput(dict):
    """An input validated and loaded (PIL images): ``text``, ``images``, ``video``, ``reasoning``,
    ``task``, ``system``. A dict, so ST's length sort still sees its size; `preprocess` takes it as is."""

    def __init__(
        self, text=None, images=(), video=None, reasoning=None, task=None, system=None, index=None, loaded=True
    ):
        super().__init__(
            text=text,
            images=list(images),
            video=video,
            reasoning=reasoning,
            task=task,
            system=system,
            index=index,
            loaded=loaded,
        )

    text = property(lambda self: self["text"])
    images = property(lambda self: self["images"])
    video = property(lambda self: self["video"])
    reasoning = property(lambda self: self["reasoning"])
    task = property(lambda self: self["task"])
    system = property(lambda self: self["system"])
    #: position in the caller's list, so that errors raised after ST's length sort still name it
    index = property(lambda self: self["index"])
    #: False while ``images``/``video`` still hold the caller's sources (paths, arrays, ...), unread
    loaded = property(lambda self: self["loaded"])
