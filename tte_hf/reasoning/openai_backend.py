"""Reasoner behind an OpenAI-compatible endpoint; defined in the shipped `tte_hf.reasoner_openai`."""

from __future__ import annotations

from ..reasoner_openai import OpenAIReasoner, ReasonerRequestError, image_data_url, openai_messages, with_thought

__all__ = ["OpenAIReasoner", "ReasonerRequestError", "image_data_url", "openai_messages", "with_thought"]
