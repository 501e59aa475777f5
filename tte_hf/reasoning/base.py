"""The reasoner interface every backend implements (transformers, vLLM, OpenAI-compatible, cache)."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..ecr import PROMPT_VERSION


@dataclass(frozen=True)
class ReasoningRequest:
    """One item to reason about. ``images`` and ``video`` frames are PIL images, already loaded.

    ``task`` names the task prompt (a meta-task such as ``"vqa"``, or ``"generic"``);
    ``item_id`` is a stable id used for caching and resumable files.
    """

    text: str | None = None
    images: tuple[Any, ...] = ()
    video: tuple[Any, ...] | None = None
    instruction: str | None = None
    task: str = "generic"
    item_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


class GeneratedText(str):
    """A generated trace: its decoded text (a ``str``, so every consumer of traces takes it as is) plus
    ``token_ids``, the tokens the model generated, up to and without the end token.

    Decoding is lossy (special tokens are skipped) and re-encoding the text need not give the generated
    tokens back (a model may spell a word in other pieces than the tokenizer would), so a backend that
    has the ids hands them on: the unified head trains on exactly the tokens its backbone generates.
    """

    token_ids: tuple[int, ...]

    def __new__(cls, text: str, token_ids):
        trace = super().__new__(cls, text)
        trace.token_ids = tuple(int(i) for i in token_ids)
        return trace


class ReasoningBackend(abc.ABC):
    """Generates raw ECR texts (``"<think>…</think> final"``) for a batch of requests, in order."""

    #: identifies the model (id + revision) and settings in cache keys and manifests
    name: str = "reasoner"

    @abc.abstractmethod
    def generate(self, requests: Sequence[ReasoningRequest]) -> list[str]: ...

    def describe(self) -> dict[str, Any]:
        """Everything that changes the output (model, revision, sampling, prompt version)."""
        return {"name": self.name}

    def _sampling_description(self, backend: str, model: str) -> dict[str, Any]:
        """`describe` for a backend that keeps ``revision``, ``max_new_tokens`` and sampling settings."""
        return {
            "backend": backend,
            "model": model,
            "revision": self.revision,
            "prompt_version": PROMPT_VERSION,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
        }
