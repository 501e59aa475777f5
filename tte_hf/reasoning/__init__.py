"""The reasoner half of Think-Then-Embed: ECR prompts, parsing, backends, cache, generation."""

from .base import ReasoningBackend, ReasoningRequest

__all__ = ["ReasoningBackend", "ReasoningRequest"]
