"""Token counts per input item: the ``--max-input-tokens`` check and the ``usage`` of a response.

An item counts its text and client-given reasoning (the processor's tokenizer) plus its images (one
token per merged patch of the decoded image: ``pixels / (patch_size * merge_size)²``, rounded up).
The chat template's few tokens and the trace the reasoner writes are not counted against the limit:
the template is fixed, and the trace is bounded by ``--reasoner-max-new-tokens``. An item over the
limit is refused (400 naming it) rather than truncated, because a truncated input would silently get
another vector than the client's text.
"""

from __future__ import annotations

import math
from typing import Any

from .schemas import RequestError


def default_max_input_tokens(module: Any) -> int | None:
    """The embedder's context length from its config (``max_position_embeddings`` of the text model)."""
    config = getattr(getattr(module, "model", None), "config", None)
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    value = getattr(text, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


class TokenCounter:
    """Counts tokens with ``module.processor`` (no processor, e.g. a stub model: characters / 4)."""

    def __init__(self, module: Any, max_input_tokens: int | None):
        processor = getattr(module, "processor", None)
        self.tokenizer = getattr(processor, "tokenizer", processor)
        image_processor = getattr(processor, "image_processor", None)
        patch = getattr(image_processor, "patch_size", None) or 14
        merge = getattr(image_processor, "merge_size", None) or 2
        self.pixels_per_token = (patch * merge) ** 2
        self.max_input_tokens = max_input_tokens

    def text_tokens(self, text: str | None) -> int:
        if not text:
            return 0
        if self.tokenizer is None or not callable(self.tokenizer):
            return math.ceil(len(text) / 4)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def item_tokens(self, item: Any) -> int:
        if isinstance(item, str):
            return self.text_tokens(item)
        count = self.text_tokens(item.get("text")) + self.text_tokens(item.get("reasoning"))
        for image in item.get("images", ()):
            width, height = image.size
            count += math.ceil(width * height / self.pixels_per_token)
        return count

    def check(self, inputs: list[Any]) -> int:
        """The request's tokens; `RequestError` naming the first item over ``max_input_tokens``."""
        total = 0
        for index, item in enumerate(inputs):
            count = self.item_tokens(item)
            if self.max_input_tokens is not None and count > self.max_input_tokens:
                where = f"input[{index}]"
                raise RequestError(
                    f"{where} has {count} tokens (text, reasoning and images); at most "
                    f"{self.max_input_tokens} per input (--max-input-tokens). It is refused, not truncated.",
                    param=where,
                )
            total += count
        return total
