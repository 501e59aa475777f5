"""The reasoner half of Think-Then-Embed: ECR prompts, parsing, backends, cache, generation.

Backends import their heavy libraries (transformers, vLLM) only when built through `load_reasoner`.
"""

from ..models.tte.reasoner_base import ReasoningBackend, ReasoningRequest
from .cache import CachedReasoner, ECRCache, cache_key
from .factory import BACKENDS, load_reasoner

__all__ = [
    "BACKENDS",
    "CachedReasoner",
    "ECRCache",
    "ReasoningBackend",
    "ReasoningRequest",
    "cache_key",
    "generate_ecr",
    "load_reasoner",
]


def generate_ecr(config, reasoner: ReasoningBackend | None = None):
    """Run ECR generation from a config (see `tte_hf.reasoning.generate.generate_ecr`)."""
    from .generate import generate_ecr as _generate_ecr

    return _generate_ecr(config, reasoner=reasoner)
