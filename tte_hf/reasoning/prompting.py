"""The reasoner's prompt for one request: the task's system prompt + the user's input, as chat."""

from __future__ import annotations

from typing import Any

from ..ecr import task_prompt
from ..inputs import build_messages, render_prompt
from .base import ReasoningRequest


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
