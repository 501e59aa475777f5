"""Pair examples -> processor inputs for the embedder, split into GradCache mini-batch chunks.

Every text goes through `tte_hf.models.tte.inputs` (`build_messages`, `render_prompt`, `embedder_text`): the
embedder reads exactly the reasoner's generation sequence, prompt + ECR trace + end token. With
``token_traces`` (the unified head), the trace is appended as token ids after the tokenized prompt,
as `TTEUnifiedTransformer` does: the generated ids where the data has them, else the tokenized text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..models.tte.inputs import END_OF_TURN, build_messages, embedder_system_prompt, embedder_text, render_prompt
from .data import PairExample, Side


def side_prompt(processor, side: Side, instruction: str | None = None, task: str | None = None) -> str:
    """The prompt of one side, up to the assistant cue. With a trace, the system prompt is the
    reasoner's (the sequence the reasoner generated); without one, the template's default."""
    system = embedder_system_prompt(task, side.trace is not None)
    messages = build_messages(side.text, num_images=len(side.images), instruction=instruction, system=system)
    return render_prompt(processor, messages)


def side_text(processor, side: Side, instruction: str | None = None, task: str | None = None) -> str:
    """The embedder's input text for one side: prompt + trace + end token."""
    return embedder_text(side_prompt(processor, side, instruction, task), side.trace)


def trace_token_ids(tokenizer, side: Side) -> list[int]:
    """The tokens after the prompt: the trace (its generated ids, else its tokenized text) + end token."""
    if side.trace_ids is None:
        return tokenizer(embedder_text("", side.trace), add_special_tokens=False).input_ids
    return [*side.trace_ids, tokenizer.convert_tokens_to_ids(END_OF_TURN)]


def input_key(text: str, images: Sequence[str]) -> str:
    """A content key for one rendered input: its text and its images' bytes (not their paths, so an
    image edited in place gets a new key). Reads the files but does not decode them."""
    import hashlib

    from ..models.tte.fingerprints import file_digest

    return hashlib.sha256("\0".join([text, *map(file_digest, images)]).encode()).hexdigest()


def load_image(path: str):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


class ContrastiveCollator:
    """``collator(examples)`` -> ``{"query": [chunk, ...], "positive": [...], "negative": [...]}``.

    Each chunk is a dict of tensors for at most ``chunk_size`` inputs (``None``: one chunk). The
    ``negative`` list is empty when the batch has no hard negatives. ``with_keys`` adds each input's
    content key; with ``is_cached(key)`` as well, a chunk whose every input is cached holds its keys
    alone: the model reads it from the cache, so images are not decoded nor texts tokenized again.
    ``token_traces``: append each trace as token ids after its tokenized prompt (see the module doc).
    """

    def __init__(
        self,
        processor,
        chunk_size: int | None = None,
        with_keys: bool = False,
        is_cached: Callable[[str], bool] | None = None,
        token_traces: bool = False,
    ):
        # No truncation: cutting a sequence would drop the end token the embedding is read from (or
        # image tokens); traces are length-capped when they are generated.
        self.processor, self.chunk_size, self.with_keys = processor, chunk_size, with_keys
        self.is_cached = is_cached if with_keys else None
        self.token_traces = token_traces

    def encode(self, sides: Sequence[Side], examples: Sequence[PairExample]) -> list[dict[str, Any]]:
        size = self.chunk_size or len(sides)
        chunks = []
        for start in range(0, len(sides), size):
            part = list(zip(sides[start : start + size], examples[start : start + size]))
            if self.token_traces:
                texts = [side_prompt(self.processor, side, ex.instruction, ex.task) for side, ex in part]
                suffixes = [trace_token_ids(self.processor.tokenizer, side) for side, _ in part]
                key_texts = [f"{text}\0{suffix}" for text, suffix in zip(texts, suffixes)]
            else:
                texts = [side_text(self.processor, side, ex.instruction, ex.task) for side, ex in part]
                key_texts = texts
            chunk = {}
            if self.with_keys:  # content keys for the unified trainer's hidden-state cache
                chunk["keys"] = [input_key(text, side.images) for text, (side, _) in zip(key_texts, part)]
            if self.is_cached is None or not all(map(self.is_cached, chunk["keys"])):
                images = [load_image(path) for side, _ in part for path in side.images]
                batch = dict(self.processor(text=texts, images=images or None, padding=True, return_tensors="pt"))
                if self.token_traces:
                    from ..models.tte.st_unified import append_suffixes  # the unified ST module's own

                    batch = append_suffixes(batch, suffixes, self.processor.tokenizer.pad_token_id)
                chunk |= batch
            chunks.append(chunk)
        return chunks

    def __call__(self, examples: Sequence[PairExample]) -> dict[str, list[dict[str, Any]]]:
        with_neg = [ex.negative is not None for ex in examples]
        if any(with_neg) and not all(with_neg):
            raise ValueError(
                "A batch mixes rows with and without hard negatives; one dataset per batch keeps them apart."
            )
        return {
            "query": self.encode([ex.query for ex in examples], examples),
            "positive": self.encode([ex.positive for ex in examples], examples),
            "negative": self.encode([ex.negative for ex in examples], examples) if all(with_neg) else [],
        }
