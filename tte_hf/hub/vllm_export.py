"""``--vllm`` export: the TTE embedder as a plain Qwen2-VL ``...ForConditionalGeneration`` checkpoint
that vLLM's pooling runner serves with LAST pooling and normalisation.

vLLM reads the pooling settings from the sentence-transformers files: ``modules.json`` entries typed
``sentence_transformers.models.Pooling`` / ``...Normalize`` and ``<pooling dir>/config.json`` with
``pooling_mode_lasttoken: true`` (vllm/transformers_utils/config.py, ``get_pooling_config``). Those are
the legacy type names and keys, which sentence-transformers 6 still loads; we write them on purpose.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

from .cards import VLLM_TEMPLATE
from .export import (
    CardInfo,
    card_tags,
    check_output,
    hub_id,
    prevalidate_card_inputs,
    save_processor,
    staged_output,
    write_card,
    write_manifest,
)
from .sources import ExportError, find_processor_dir, inspect_source, load_model, load_processor

POOLING_DIR = "1_Pooling"
NORMALIZE_DIR = "2_Normalize"
_POOLING_MODES = (
    "pooling_mode_cls_token",
    "pooling_mode_mean_tokens",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)


def plain_backbone_for_generation(embedder):
    """The embedder's backbone inside a ``...ForConditionalGeneration`` whose LM head is tied to the input
    embeddings: vLLM and transformers load it as the stock architecture, and no made-up head weights are
    shipped (the head is never used for pooling; do not generate text with this checkpoint)."""
    from transformers import AutoModelForImageTextToText

    config = copy.deepcopy(embedder.config.backbone_config)
    config.tie_word_embeddings = True
    config.get_text_config().tie_word_embeddings = True
    config.architectures = None
    model = AutoModelForImageTextToText.from_config(config)
    missing, unexpected = model.model.load_state_dict(embedder.backbone.state_dict(), strict=False)
    if unexpected or missing:
        raise ExportError(f"The embedder's backbone does not map onto {type(model).__name__}: {missing or unexpected}")
    model.tie_weights()
    return model.eval()


def write_pooling_files(target: Path, hidden_size: int, normalize: bool) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": POOLING_DIR, "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": NORMALIZE_DIR, "type": "sentence_transformers.models.Normalize"})
        (target / NORMALIZE_DIR).mkdir()
    pooling = {
        "word_embedding_dimension": hidden_size,
        **{mode: mode == "pooling_mode_lasttoken" for mode in _POOLING_MODES},
    }
    pooling["include_prompt"] = True
    (target / POOLING_DIR).mkdir()
    (target / POOLING_DIR / "config.json").write_text(json.dumps(pooling, indent=2) + "\n")
    (target / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (target / "sentence_bert_config.json").write_text(json.dumps({"do_lower_case": False}, indent=2) + "\n")
    st_config = {"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"}
    (target / "config_sentence_transformers.json").write_text(json.dumps(st_config, indent=2) + "\n")


def export_vllm(
    source: str | Path,
    output_dir: str | Path,
    *,
    processor: str | Path | None = None,
    adapter_base: str | None = None,
    card: CardInfo | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a vLLM-servable copy of a TTE embedder (LoRA merged): plain Qwen2-VL weights, processor,
    pooling files (LAST, normalise) and a card with the ``vllm serve --runner pooling`` snippet."""
    info = card or CardInfo()
    output_dir = Path(output_dir)
    src = inspect_source(source, "embedder" if adapter_base else None, adapter_base)
    if src.kind != "embedder":
        raise ExportError(
            f"--vllm exports a TTE embedder; {src.path} is a {src.kind} checkpoint. "
            + (
                "A unified model's custom head cannot run in vLLM's pooling runner."
                if src.kind == "unified"
                else "A reasoner is served for generation by vLLM as it is."
            )
        )
    truncate_dim = src.config.get("truncate_dim")
    if truncate_dim:
        raise ExportError(
            f"{src.path} truncates embeddings to {truncate_dim} dims (Matryoshka), which vLLM's LAST pooler does "
            "not do; export without --vllm, or truncate the vectors vLLM returns and re-normalise them yourself."
        )
    processor_dir = find_processor_dir(src, processor)
    prevalidate_card_inputs(info)
    check_output(output_dir, overwrite)
    if info.base_model is None:
        info = replace(info, base_model=hub_id(src.adapter_base))
    embedder = load_model(src, merge_lora=True)
    processor_obj = load_processor(processor_dir)
    normalize = bool(embedder.config.normalize)
    model = plain_backbone_for_generation(embedder)
    with staged_output(output_dir, overwrite) as staging:
        model.save_pretrained(str(staging))
        save_processor(processor_obj, staging)
        write_pooling_files(staging, embedder.config.hidden_size, normalize)
        write_card(
            staging,
            VLLM_TEMPLATE,
            source=src,
            model=embedder,
            reasoner=None,
            info=info,
            library_name="transformers",
            pipeline_tag="feature-extraction",
            tags=card_tags("embedder", info, "vllm"),
            extra={"normalize": normalize, "architecture": type(model).__name__},
        )
        write_manifest(staging, src, None, vllm=True, normalize=normalize)
    return output_dir
