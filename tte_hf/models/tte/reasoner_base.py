"""The reasoner interface every backend implements (transformers, vLLM, OpenAI-compatible, cache), the
request it answers and the chat prompt built from a request.

Self-contained (standard library and sibling files): shipped next to the weights for
``trust_remote_code``; ``tte_hf.reasoning`` re-exports it.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .ecr import PROMPT_VERSION, task_prompt
from .inputs import build_messages, render_prompt


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

    def __reduce__(self):  # copy and pickle rebuild it with its ids (str's own would call __new__ without them)
        return type(self), (str(self), self.token_ids)


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


def request_messages(request: ReasoningRequest) -> list[dict[str, Any]]:
    """Chat messages for ``request`` with its task's ECR system prompt (raises on an unknown task)."""
    return build_messages(
        request.text,
        num_images=len(request.images),
        has_video=bool(request.video),
        instruction=request.instruction,
        system=task_prompt(request.task),
    )


def request_prompt(processor, request: ReasoningRequest) -> str:
    """The rendered prompt the reasoner generates from (and the embedder's input starts with)."""
    return render_prompt(processor, request_messages(request))


def describe_request(request: ReasoningRequest) -> str:
    """A short name for ``request`` in error messages."""
    return f"item {request.item_id!r}" if request.item_id is not None else "an item without id"
