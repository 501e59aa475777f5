"""Configurations of the Think-Then-Embed models.

Self-contained: this file is shipped next to the weights for ``trust_remote_code`` and imports
only ``transformers``.
"""

from __future__ import annotations

import os

from transformers import AutoConfig, PretrainedConfig

SUPPORTED_BACKBONES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
HEAD_TYPES = ("attention_pooler", "latent_attention", "qformer", "mhsa")
POOLING_MODES = ("last",)


def portable_reference(reference: str | None, save_directory: str | os.PathLike) -> str | None:
    """How a saved config names a local model folder (a backbone, a reasoner): relative to the folder the
    config is saved in, so it loads from any working directory and after the two folders move together
    (a path relative to the working directory, or an absolute one, breaks as soon as either changes). A
    Hub repo id, or anything that is not an existing folder, is written as it is."""
    if not reference or not os.path.isdir(reference):
        return reference
    try:
        return os.path.relpath(os.path.abspath(reference), os.path.abspath(save_directory))
    except ValueError:  # on another drive (Windows) no relative path exists
        return os.path.abspath(reference)


def resolve_reference(reference: str | None, model_folder: str | os.PathLike | None) -> str | None:
    """The reference a saved config holds (see `portable_reference`), as a path that works from here: a
    folder relative to ``model_folder`` (where the config was read from, when local) becomes absolute;
    failing that a folder relative to the working directory (configs written before references were
    relative to their model) becomes absolute; a Hub repo id or an absolute path stays as it is."""
    if not reference or os.path.isabs(reference):
        return reference
    if model_folder is not None and os.path.isdir(model_folder):
        beside = os.path.join(model_folder, reference)
        if os.path.isdir(beside):
            return os.path.abspath(beside)
    return os.path.abspath(reference) if os.path.isdir(reference) else reference


def _backbone_config(backbone_config, owner: str) -> PretrainedConfig | None:
    if backbone_config is None:
        return None
    if isinstance(backbone_config, dict):
        if "model_type" not in backbone_config:
            raise ValueError(f"{owner}.backbone_config needs a 'model_type' (one of {SUPPORTED_BACKBONES}).")
        backbone_config = AutoConfig.for_model(**backbone_config)
    if backbone_config.model_type not in SUPPORTED_BACKBONES:
        raise ValueError(
            f"{owner}.backbone_config.model_type={backbone_config.model_type!r} is not supported; "
            f"use a checkpoint of one of {SUPPORTED_BACKBONES}."
        )
    return backbone_config


def _check_truncate_dim(truncate_dim: int | None, owner: str) -> None:
    if truncate_dim is not None and (not isinstance(truncate_dim, int) or truncate_dim <= 0):
        raise ValueError(f"{owner}.truncate_dim must be a positive int or None, got {truncate_dim!r}.")


class TTEEmbedderConfig(PretrainedConfig):
    """Config of `TTEEmbedderModel`: a VLM backbone, last-token pooling, optional normalisation.

    Args:
        backbone_config: config of the Qwen2-VL / Qwen2.5-VL / Qwen3-VL backbone.
        pooling: ``"last"`` — hidden state of the last non-pad token after the final norm.
        normalize: L2-normalise the embedding.
        truncate_dim: keep only the first ``truncate_dim`` dimensions (Matryoshka), before normalising.
    """

    model_type = "tte_embedder"
    sub_configs = {"backbone_config": AutoConfig}

    def __init__(
        self,
        backbone_config: PretrainedConfig | dict | None = None,
        pooling: str = "last",
        normalize: bool = True,
        truncate_dim: int | None = None,
        **kwargs,
    ):
        if pooling not in POOLING_MODES:
            raise ValueError(f"TTEEmbedderConfig.pooling={pooling!r} is not supported; use one of {POOLING_MODES}.")
        _check_truncate_dim(truncate_dim, "TTEEmbedderConfig")
        self.pooling = pooling
        self.normalize = normalize
        self.truncate_dim = truncate_dim
        super().__init__(**kwargs)
        # Set after the base init: it would push its attention default onto a live backbone's config.
        self.backbone_config = _backbone_config(backbone_config, "TTEEmbedderConfig")

    @property
    def hidden_size(self) -> int:
        return self.backbone_config.get_text_config().hidden_size


class TTEUnifiedConfig(PretrainedConfig):
    """Config of `TTEUnifiedModel`: a frozen reasoner backbone plus a trainable embedding head.

    Args:
        backbone_config: config of the reasoner (a ``...ForConditionalGeneration`` checkpoint).
        backbone_name_or_path: where the backbone weights live when the head is saved on its own: a Hub
            repo id, or a local folder (saved relative to the model's own folder, `portable_reference`).
        head_type: ``"attention_pooler"`` (k learned queries), ``"latent_attention"`` (NV-Embed),
            ``"qformer"`` (cross-attention blocks) or ``"mhsa"`` (the backbone's last n layers, copied).
        head_num_layers: blocks of the QFormer head, or n, the copied layers of the MHSA head.
        head_num_queries: learned queries of the attention pooler / QFormer, latents of NV-Embed.
        head_num_heads: attention heads of the pooler, latent-attention and QFormer heads.
        embedding_dim: output size; ``None`` keeps the backbone's hidden size.
        normalize, truncate_dim: as in `TTEEmbedderConfig`.
        max_new_tokens: default cap on the reasoning trace length in `generate_and_embed`.
    """

    model_type = "tte_unified"
    sub_configs = {"backbone_config": AutoConfig}

    def __init__(
        self,
        backbone_config: PretrainedConfig | dict | None = None,
        backbone_name_or_path: str | None = None,
        head_type: str = "mhsa",
        head_num_layers: int = 8,
        head_num_queries: int = 16,
        head_num_heads: int = 8,
        embedding_dim: int | None = None,
        normalize: bool = True,
        truncate_dim: int | None = None,
        max_new_tokens: int = 256,
        **kwargs,
    ):
        if head_type not in HEAD_TYPES:
            raise ValueError(f"TTEUnifiedConfig.head_type={head_type!r} is not supported; use one of {HEAD_TYPES}.")
        for name, value in [
            ("head_num_layers", head_num_layers),
            ("head_num_queries", head_num_queries),
            ("head_num_heads", head_num_heads),
            ("max_new_tokens", max_new_tokens),
        ]:
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"TTEUnifiedConfig.{name} must be a positive int, got {value!r}.")
        if embedding_dim is not None and (not isinstance(embedding_dim, int) or embedding_dim <= 0):
            raise ValueError(f"TTEUnifiedConfig.embedding_dim must be a positive int or None, got {embedding_dim!r}.")
        _check_truncate_dim(truncate_dim, "TTEUnifiedConfig")
        self.backbone_name_or_path = backbone_name_or_path
        self.head_type = head_type
        self.head_num_layers = head_num_layers
        self.head_num_queries = head_num_queries
        self.head_num_heads = head_num_heads
        self.embedding_dim = embedding_dim
        self.normalize = normalize
        self.truncate_dim = truncate_dim
        self.max_new_tokens = max_new_tokens
        super().__init__(**kwargs)
        self.backbone_config = _backbone_config(backbone_config, "TTEUnifiedConfig")
        if self.backbone_config is not None:
            self._check_against_backbone()

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """As `PretrainedConfig.save_pretrained`, with a local backbone named relative to ``save_directory``
        (`portable_reference`); the config in memory keeps its own reference."""
        reference = self.backbone_name_or_path
        self.backbone_name_or_path = portable_reference(reference, save_directory)
        try:
            super().save_pretrained(save_directory, **kwargs)
        finally:
            self.backbone_name_or_path = reference

    def _check_against_backbone(self) -> None:
        text = self.backbone_config.get_text_config()
        if self.head_type == "mhsa" and self.head_num_layers >= text.num_hidden_layers:
            raise ValueError(
                f"TTEUnifiedConfig.head_num_layers={self.head_num_layers} must be smaller than the backbone's "
                f"num_hidden_layers={text.num_hidden_layers} for the MHSA head (it reads layer L - n)."
            )
        vision = getattr(self.backbone_config, "vision_config", None)
        deepstack = len(getattr(vision, "deepstack_visual_indexes", None) or ())
        if self.head_type == "mhsa" and text.num_hidden_layers - self.head_num_layers < deepstack:
            raise ValueError(
                f"TTEUnifiedConfig.head_num_layers={self.head_num_layers} is too large for this Qwen3-VL backbone: "
                f"its first {deepstack} layers receive deepstack visual features, which the MHSA head does not "
                f"add; use head_num_layers <= {text.num_hidden_layers - deepstack}."
            )
        if (
            self.head_type in ("attention_pooler", "latent_attention", "qformer")
            and text.hidden_size % self.head_num_heads
        ):
            raise ValueError(
                f"TTEUnifiedConfig.head_num_heads={self.head_num_heads} must divide the backbone's "
                f"hidden_size={text.hidden_size}."
            )

    @property
    def hidden_size(self) -> int:
        return self.backbone_config.get_text_config().hidden_size

    @property
    def output_dim(self) -> int:
        return self.embedding_dim or self.hidden_size
