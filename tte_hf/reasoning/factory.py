"""`load_reasoner`: one entry point from a config dict to a ready `ReasoningBackend`."""

from __future__ import annotations

from typing import Any

from ..models.tte.reasoner_base import ReasoningBackend

BACKENDS = ("transformers", "vllm", "openai", "precomputed")


def load_reasoner(config: dict[str, Any] | None = None, **kwargs: Any) -> ReasoningBackend:
    """Build a reasoner from ``config`` (a dict, e.g. a YAML section) and/or keyword arguments.

    ``backend`` picks the class (``transformers`` — the default —, ``vllm``, ``openai``,
    ``precomputed``); ``cache`` (a path) wraps it in `CachedReasoner`; every other key goes to the
    backend's constructor, e.g. ``load_reasoner(backend="transformers", model="path", max_new_tokens=64)``.
    """
    options = {**(config or {}), **kwargs}
    backend = options.pop("backend", "transformers")
    cache = options.pop("cache", None)
    if backend == "transformers":
        from ..models.tte.reasoner_transformers import TransformersReasoner as cls
    elif backend == "vllm":
        from .vllm_backend import VLLMReasoner as cls
    elif backend == "openai":
        from ..models.tte.reasoner_openai import OpenAIReasoner as cls
    elif backend == "precomputed":
        from .precomputed import PrecomputedReasoner as cls
    else:
        raise ValueError(f"Unknown reasoner backend {backend!r}; use one of {', '.join(BACKENDS)}.")
    try:
        reasoner = cls(**options)
    except TypeError as err:
        raise TypeError(f"Bad options for the {backend} reasoner ({sorted(options)}): {err}") from err
    if cache:
        from .cache import CachedReasoner

        reasoner = CachedReasoner(reasoner, cache)
    return reasoner
