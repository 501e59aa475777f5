"""Reasoner on transformers; defined in the shipped `tte_hf.reasoner_transformers`."""

from __future__ import annotations

from ..reasoner_transformers import TransformersReasoner

__all__ = ["TransformersReasoner"]
