"""The system prompt the reasoner sees for a task, shared by SFT data and embedder inputs."""

from __future__ import annotations

# Used only while `tte_hf.ecr` (the reasoning branch's task prompts) is not installed.
GENERIC_REASONER_PROMPT = (
    "Think step by step about the input inside <think> </think>, focusing on what matters for retrieving "
    "related content, then give a short final answer or summary."
)


def reasoner_system_prompt(task: str | None) -> str:
    """``tte_hf.ecr.task_prompt(task or "generic")`` -- the prompt ``generate-ecr`` uses -- when that
    module is available, else a generic prompt of this module."""
    try:
        from tte_hf.ecr import task_prompt
    except ImportError:
        return GENERIC_REASONER_PROMPT
    return task_prompt(task or "generic")
