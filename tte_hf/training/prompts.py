"""The system prompt the reasoner sees for a task, shared by SFT data and embedder inputs."""

from __future__ import annotations

# Used until `tte_hf.ecr.task_prompt` (the reasoning engineer's task prompts) is available, and for
# data with no task set.
GENERIC_REASONER_PROMPT = (
    "Think step by step about the input inside <think> </think>, focusing on what matters for retrieving "
    "related content, then give a short final answer or summary."
)


def reasoner_system_prompt(task: str | None) -> str:
    """``tte_hf.ecr.task_prompt(task)`` when that module exists and a task is given, else a generic prompt."""
    if task is None:
        return GENERIC_REASONER_PROMPT
    try:
        from tte_hf.ecr import task_prompt
    except ImportError:
        return GENERIC_REASONER_PROMPT
    return task_prompt(task)
