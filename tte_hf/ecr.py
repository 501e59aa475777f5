"""Embedding-centric reasoning (ECR): task prompts for the reasoner and the trace parser.

PLACEHOLDER written by the sentence-transformers branch so its module can import ``task_prompt`` and
``parse_ecr``; the reasoning branch owns this file and its version replaces this one. Self-contained
(stdlib only): shipped next to the weights for ``trust_remote_code``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GENERIC_TASK_PROMPT = (
    "Think step by step about what in this input matters for finding related content, inside "
    "<think> and </think>, then give a short final answer or summary."
)

_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def task_prompt(task: str = "generic") -> str:
    """The system prompt that makes the reasoner write an ECR for ``task`` (placeholder: one prompt)."""
    return GENERIC_TASK_PROMPT


@dataclass(frozen=True)
class ECR:
    """A parsed trace: the chain of thought and the final answer/summary."""

    thought: str
    final: str

    def for_embedder(self, mode: str = "full") -> str:
        """The text appended as the assistant turn: ``"full"`` (thought + final) or ``"final"``."""
        if mode == "final":
            return self.final
        if mode != "full":
            raise ValueError(f"ECR mode {mode!r} is not supported; use 'full' or 'final'.")
        return f"<think>{self.thought}</think>{self.final}" if self.thought else self.final


def parse_ecr(text: str) -> ECR:
    """Split ``"<think>…</think> final"``; text without think tags is all final answer."""
    match = _THINK.search(text)
    if match is None:
        return ECR(thought="", final=text.replace("<think>", "").strip())
    return ECR(thought=match.group(1).strip(), final=text[match.end() :].strip())
