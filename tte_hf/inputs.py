"""From a user's input to the chat sequence the reasoner generates from and the embedder reads.

The one rule of TTE's data flow lives here: the embedder's input is the reasoner's own generation
sequence — the prompt with the generation cue, then the ECR trace as the assistant turn, then the end
token. The embedding is the hidden state of that end token. Without a trace the assistant turn is
empty. Reasoner, embedder and unified model all build their text with these functions.
"""

from __future__ import annotations

from typing import Any

END_OF_TURN = "<|im_end|>"


def build_messages(
    text: str | None = None,
    num_images: int = 0,
    has_video: bool = False,
    instruction: str | None = None,
    system: str | None = None,
) -> list[dict[str, Any]]:
    """Chat messages for one input: optional system prompt, then a user turn with the visual
    placeholders first and ``instruction`` + ``text`` after them (the VLM2Vec / GME order)."""
    content: list[dict[str, Any]] = [{"type": "image"} for _ in range(num_images)]
    if has_video:
        content.append({"type": "video"})
    words = " ".join(part.strip() for part in (instruction, text) if part and part.strip())
    if words:
        content.append({"type": "text", "text": words})
    if not content:
        raise ValueError("An input needs text, an image or a video; got none.")
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": content})
    return messages


def render_prompt(processor_or_tokenizer, messages: list[dict[str, Any]]) -> str:
    """The prompt the reasoner generates from: the chat template with the assistant cue."""
    return processor_or_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def embedder_text(prompt: str, trace: str | None, end_token: str = END_OF_TURN) -> str:
    """The embedder's input: ``prompt`` + trace as the assistant turn + end token (pooled)."""
    return f"{prompt}{trace or ''}{end_token}"
