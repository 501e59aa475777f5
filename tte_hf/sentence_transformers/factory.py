"""`build_sentence_transformer`: TTETransformer + lasttoken Pooling + Normalize as one ST model."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

SHIPPED_MODULE = "sentence_transformer_tte"
PACKAGE_DIR = Path(__file__).resolve().parent.parent


def load_tte_transformer_class(name: str = "TTETransformer"):
    """``name`` (`TTETransformer` or `TTEUnifiedTransformer`) imported the way ``trust_remote_code``
    imports it (transformers' dynamic modules).

    Then ST's own ``save`` sees a repo-local class: it writes ``sentence_transformer_tte.TTETransformer``
    to ``modules.json`` and copies the file and its sibling imports (``inputs.py``, ``ecr.py``) next to
    the weights, so the saved folder loads without ``tte_hf`` installed.
    """
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    return get_class_from_dynamic_module(f"{SHIPPED_MODULE}.{name}", str(PACKAGE_DIR))


def _model_type(path: str) -> str | None:
    config_file = Path(path) / "config.json"
    return json.loads(config_file.read_text()).get("model_type") if config_file.is_file() else None


def _plain_backbone_path(embedder_path: str, model_kwargs: dict) -> str:
    """A `TTEEmbedderModel` checkpoint becomes its plain backbone (what ST's Transformer loads)."""
    if _model_type(embedder_path) != "tte_embedder":
        return embedder_path
    from transformers import AutoProcessor

    from tte_hf.modeling_tte import TTEEmbedderModel

    target = tempfile.mkdtemp(prefix="tte_backbone_")
    TTEEmbedderModel.from_pretrained(embedder_path, **model_kwargs).backbone.save_pretrained(target)
    AutoProcessor.from_pretrained(embedder_path).save_pretrained(target)
    return target


def build_sentence_transformer(
    embedder_path: str | os.PathLike,
    *,
    reasoner: Any = None,
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
    config), or a backend object with ``generate(requests)`` (vLLM, ``tte_hf.reasoning`` backends;
    used at runtime, not saved). ``prompts`` are ST prompts, i.e. the task instructions, e.g.
    ``{"query": "Find the image that answers the question."}``. Other keyword arguments go to
    `TTETransformer` (``system_prompt``, ``trace_mode``, ``max_new_tokens``, ``min_pixels``, ...).
    ``.save(dir)`` writes a folder that ``SentenceTransformer(dir, trust_remote_code=True)`` loads.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    model_kwargs = dict(model_kwargs or {})
    backend = None
    if isinstance(reasoner, (str, os.PathLike)):
        module_kwargs |= {"reasoning_source": "transformers", "reasoner_name_or_path": os.fspath(reasoner)}
    elif reasoner is not None:
        backend = reasoner
    elif reasoner_endpoint or reasoner_model:
        module_kwargs |= {
            "reasoning_source": "openai",
            "reasoner_endpoint": reasoner_endpoint,
            "reasoner_model": reasoner_model,
        }
    if _model_type(os.fspath(embedder_path)) == "tte_unified":
        if module_kwargs.get("reasoning_source") or reasoner_endpoint:
            raise ValueError(
                "a unified TTE model reasons with its own backbone; pass reasoner=None or a backend object."
            )
        module = load_tte_transformer_class("TTEUnifiedTransformer")(
            os.fspath(embedder_path),
            query_reasoning=query_reasoning,
            document_reasoning=document_reasoning,
            model_kwargs=model_kwargs,
            **module_kwargs,
        )
        if backend is not None:
            module.set_reasoner(backend)
        return SentenceTransformer(modules=[module], prompts=prompts, truncate_dim=truncate_dim, device=device)
    tte_transformer_cls = load_tte_transformer_class()
    module = tte_transformer_cls(
        _plain_backbone_path(os.fspath(embedder_path), model_kwargs),
        query_reasoning=query_reasoning,
        document_reasoning=document_reasoning,
        model_kwargs=model_kwargs,
        **module_kwargs,
    )
    if backend is not None:
        module.set_reasoner(backend)
    pooling = Pooling(module.get_embedding_dimension(), pooling_mode="lasttoken")
    return SentenceTransformer(
        modules=[module, pooling, Normalize()],
        prompts=prompts,
        truncate_dim=truncate_dim,
        device=device,
    )


BUNDLED_REASONER_DIR = "reasoner"


def save_sentence_transformer(model, path: str | os.PathLike, *, bundle_reasoner: bool = True, **save_kwargs) -> None:
    """``model.save(path)``; with ``bundle_reasoner`` a transformers reasoner checkpoint is copied into
    ``path/reasoner`` and the saved config points there, so the folder (or its Hub repo) is complete.

    The module resolves a relative ``reasoner_name_or_path`` against the model's own folder or repo.
    """
    module = model[0]
    source = getattr(module, "reasoner_name_or_path", None)
    if not (bundle_reasoner and getattr(module, "reasoning_source", None) == "transformers" and source):
        model.save(os.fspath(path), **save_kwargs)
        return
    source_dir = module._resolve_reasoner_path()
    if not os.path.isdir(source_dir):
        from huggingface_hub import snapshot_download

        source_dir = snapshot_download(source_dir)
    module.reasoner_name_or_path = BUNDLED_REASONER_DIR
    try:
        model.save(os.fspath(path), **save_kwargs)
    finally:
        module.reasoner_name_or_path = source
    target = Path(path) / BUNDLED_REASONER_DIR
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source_dir, target)
