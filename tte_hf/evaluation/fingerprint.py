"""What determines a model's vectors, hashed: the resume key of `tte-hf eval` beside the model id.

A model id string says nothing about what it names today: ``org/tte-2b`` re-pushed, loaded in another
dtype, with other prompts, another ``trace_mode`` or ``think`` setting, or another reasoner, embeds
differently. The fingerprint hashes each of those (with `tte_hf.models.tte.fingerprints`, the scheme
the caches share), so a results folder is only reused for a model that would write the same vectors,
and a refusal can say which part changed.
"""

from __future__ import annotations

from typing import Any

import torch

from ..models.tte.fingerprints import json_digest, weights_digest


def _module_config(module: Any) -> dict[str, Any]:
    config = module.get_config_dict() if callable(getattr(module, "get_config_dict", None)) else {}
    entry: dict[str, Any] = {"class": f"{type(module).__module__}.{type(module).__qualname__}", "config": config}
    # A reasoner given at run time (`set_reasoner`) is not in the saved config; its description is.
    # The private slot is read so that fingerprinting never loads a configured reasoner; one the config
    # already built is left out, so a model's fingerprint does not change with its first encode.
    backend = getattr(module, "_reasoner", None)
    if backend is not None and backend is not getattr(module, "_config_reasoner", None):
        describe = getattr(backend, "describe", None)
        entry["reasoner"] = describe() if callable(describe) else type(backend).__name__
    return entry


def model_fingerprint(model: Any) -> dict[str, str]:
    """Short digests of what determines ``model``'s vectors, by part.

    Parts: ``weights`` and ``dtype`` (a torch module), ``module_config`` (each module's class and
    config: pooling, normalisation, ``trace_mode``, query/document reasoning, system prompt, pixel
    budget, reasoner), ``prompts`` (sentence-transformers prompts, default prompt, ``truncate_dim``).
    A model with an ``eval_fingerprint()`` method gives its own parts; any other object is known only
    by its class.
    """
    custom = getattr(model, "eval_fingerprint", None)
    if callable(custom):
        return {key: str(value) for key, value in custom().items()}
    if not isinstance(model, torch.nn.Module):
        return {"class": f"{type(model).__module__}.{type(model).__qualname__}"}
    modules = list(model) if isinstance(model, torch.nn.Sequential) else [model]
    dtypes = sorted({str(p.dtype) for p in model.parameters()})
    prompts = {
        "prompts": getattr(model, "prompts", None),
        "default_prompt_name": getattr(model, "default_prompt_name", None),
        "truncate_dim": getattr(model, "truncate_dim", None),
    }
    return {
        "weights": weights_digest(model),
        "dtype": ",".join(dtypes),
        "module_config": json_digest([_module_config(m) for m in modules]),
        "prompts": json_digest(prompts),
    }
