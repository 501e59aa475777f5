"""`build_sentence_transformer`: TTETransformer + lasttoken Pooling + Normalize as one ST model.

The modules are ``tte_hf``'s own classes; their model's ``save`` (`tte_hf.models.tte.st_model`) names them
``sentence_transformer_tte.<Class>`` in ``modules.json`` and ships that code, so the folder loads
with ``trust_remote_code`` where ``tte_hf`` is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any


def _config(path: str) -> dict[str, Any]:
    config_file = Path(path) / "config.json"
    return json.loads(config_file.read_text()) if config_file.is_file() else {}


def build_sentence_transformer(
    embedder_path: str | os.PathLike,
    *,
    reasoner: Any = None,
    reasoner_revision: str | None = None,
    query_reasoning: bool = True,
    document_reasoning: bool = False,
    prompts: dict[str, str] | None = None,
    reasoner_endpoint: str | None = None,
    reasoner_model: str | None = None,
    truncate_dim: int | None = None,
    device: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    **module_kwargs,
):
    """A `SentenceTransformer` that reasons (reasoner), then embeds (``embedder_path``: a Qwen2-VL /
    Qwen2.5-VL / Qwen3-VL backbone or a `TTEEmbedderModel` checkpoint).

    A local `TTEUnifiedModel` checkpoint (``model_type="tte_unified"``) gives the unified model: its
    own backbone reasons and its head embeds (`TTEUnifiedTransformer`, alone in the model);
    ``reasoner`` must then be ``None`` or a backend object that replaces the backbone as reasoner.

    ``reasoner``: ``None`` (off, unless ``reasoner_endpoint`` + ``reasoner_model`` name an
    OpenAI-compatible server), a checkpoint path / repo id (run with transformers; saved in the
    config, with ``reasoner_revision`` pinning a repo id's branch, tag or commit), or a backend object with ``generate(requests)`` (vLLM, ``tte_hf.reasoning`` backends;
    used at runtime, not saved). ``prompts`` are ST prompts, i.e. the task instructions, e.g.
    ``{"query": "Find the image that answers the question."}``. Other keyword arguments go to
    `TTETransformer` (``system_prompt``, ``trace_mode``, ``max_new_tokens``, ``min_pixels``, ...).
    ``.save(dir)`` writes a folder that ``SentenceTransformer(dir, trust_remote_code=True)`` loads.
    """
    model_kwargs = dict(model_kwargs or {})
    backend, module_kwargs = _reasoner_settings(reasoner, reasoner_revision, reasoner_endpoint, reasoner_model, module_kwargs)  # fmt: skip
    path = os.fspath(embedder_path)
    config = _config(path)
    reasoning = {"query_reasoning": query_reasoning, "document_reasoning": document_reasoning}
    if config.get("model_type") == "tte_unified":
        modules = _unified_modules(path, module_kwargs, reasoning, model_kwargs)
    else:
        modules = _embedder_modules(path, config, module_kwargs, reasoning, model_kwargs)
    if backend is not None:
        modules[0].set_reasoner(backend)
    from ..models.tte.st_model import TTESentenceTransformer

    return _without_card_encoding(
        TTESentenceTransformer(modules=modules, prompts=prompts, truncate_dim=truncate_dim, device=device)
    )


def _reasoner_settings(
    reasoner: Any,
    revision: str | None,
    endpoint: str | None,
    model: str | None,
    module_kwargs: dict[str, Any],
) -> tuple[Any, dict[str, Any]]:
    """(a runtime backend object or ``None``, ``module_kwargs`` with the saved reasoner settings)."""
    if revision is not None and not isinstance(reasoner, str):
        raise ValueError(f"reasoner_revision={revision!r} pins a reasoner repo id; reasoner is {reasoner!r}.")
    if isinstance(reasoner, (str, os.PathLike)):
        settings = {"reasoning_source": "transformers", "reasoner_name_or_path": os.fspath(reasoner)}
        if revision is not None:
            settings["reasoner_revision"] = revision
        return None, {**module_kwargs, **settings}
    if reasoner is not None:
        return reasoner, module_kwargs
    if endpoint or model:
        return None, {**module_kwargs, "reasoning_source": "openai", "reasoner_endpoint": endpoint, "reasoner_model": model}  # fmt: skip
    return None, module_kwargs


def _unified_modules(path: str, module_kwargs: dict, reasoning: dict, model_kwargs: dict) -> list:
    """The unified model: `TTEUnifiedTransformer` alone (its head pools and normalises)."""
    if module_kwargs.get("reasoning_source"):
        raise ValueError("a unified TTE model reasons with its own backbone; pass reasoner=None or a backend object.")
    from ..models.tte.st_unified import TTEUnifiedTransformer

    return [TTEUnifiedTransformer(path, **reasoning, model_kwargs=model_kwargs, **module_kwargs)]


def _embedder_modules(path: str, config: dict, module_kwargs: dict, reasoning: dict, model_kwargs: dict) -> list:
    """`TTETransformer` + lasttoken `Pooling` (+ `Normalize`). A `TTEEmbedderModel` checkpoint loads as
    itself (one copy of the weights) and keeps its own ``normalize`` setting, so its vectors are the
    same through ST as through AutoModel."""
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    from ..models.tte.st_embedder import TTETransformer

    module = TTETransformer(path, **reasoning, model_kwargs=model_kwargs, **module_kwargs)
    pooling = Pooling(module.get_embedding_dimension(), pooling_mode="lasttoken")
    normalize = config.get("normalize", True) if config.get("model_type") == "tte_embedder" else True
    return [module, pooling, *([Normalize()] if normalize else [])]


def _without_card_encoding(model):
    """Saving writes sentence-transformers' model card, which encodes example sentences (as queries, once
    the model has a query prompt) to print their similarities. For a TTE model that runs the reasoner: a
    2B-72B model decoding hundreds of tokens at save time, or, while `save_sentence_transformer` points
    the config at the not-yet-copied ``reasoner/`` folder, a Hub lookup of a repo called "reasoner"
    (minutes of retries without a network). The card keeps its usage snippet, without the scores."""
    model.model_card_data.generate_widget_examples = False
    return model


BUNDLED_REASONER_DIR = "reasoner"


def save_sentence_transformer(model, path: str | os.PathLike, *, bundle_reasoner: bool = True, **save_kwargs) -> None:
    """``model.save(path)``; with ``bundle_reasoner`` a transformers reasoner checkpoint is copied into
    ``path/reasoner`` and the saved config points there, so the folder (or its Hub repo) is complete.

    The module resolves a relative ``reasoner_name_or_path`` against the model's own folder or repo.
    """
    module = model[0]
    _without_card_encoding(model)  # also for a model loaded from a folder (its card data is fresh)
    source = getattr(module, "reasoner_name_or_path", None)
    if not (bundle_reasoner and getattr(module, "reasoning_source", None) == "transformers" and source):
        model.save(os.fspath(path), **save_kwargs)
        return
    source_dir = module._resolve_reasoner_path()
    revision = getattr(module, "reasoner_revision", None)
    if not os.path.isdir(source_dir):
        from huggingface_hub import snapshot_download

        source_dir = snapshot_download(source_dir, revision=revision)
    # The bundled copy is the pinned revision; it lives at the model's own revision from now on.
    module.reasoner_name_or_path, module.reasoner_revision = BUNDLED_REASONER_DIR, None
    try:
        model.save(os.fspath(path), **save_kwargs)
    finally:
        module.reasoner_name_or_path, module.reasoner_revision = source, revision
    target = Path(path) / BUNDLED_REASONER_DIR
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source_dir, target)
