"""The reasoner interface every backend implements; defined in the shipped `tte_hf.reasoner_base`."""

from __future__ import annotations

from ..reasoner_base import GeneratedText, ReasoningBackend, ReasoningRequest

__all__ = ["GeneratedText", "ReasoningBackend", "ReasoningRequest"]
