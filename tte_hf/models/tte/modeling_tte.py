"""Think-Then-Embed models: the TTE embedder and the unified reasoner + embedding head.

Self-contained (torch + transformers, plus the sibling configuration/heads files): shipped next to
the weights for ``trust_remote_code``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoModelForImageTextToText, PreTrainedModel
from transformers.dynamic_module_utils import custom_object_save
from transformers.utils import ModelOutput

from .configuration_tte import TTEEmbedderConfig, TTEUnifiedConfig, resolve_reference
from .generation_tte import decoding_settings, trace_controls
from .heads import build_head, last_token_pool

HEAD_WEIGHTS_NAME = "head.safetensors"
_REPO_KEYS = ("revision", "subfolder")
_SHARED_HUB_KEYS = ("token", "cache_dir", "local_files_only", "force_download", "proxies")
_HEAD_CONFIG_KEYS = (
    "head_num_layers",
    "head_num_queries",
    "head_num_heads",
    "embedding_dim",
    "normalize",
    "truncate_dim",
    "max_new_tokens",
)


def finalize_embeddings(embeddings: torch.Tensor, truncate_dim: int | None, normalize: bool) -> torch.Tensor:
    """Matryoshka truncation, then optional L2 normalisation."""
    if truncate_dim is not None:
        embeddings = embeddings[..., :truncate_dim]
    return F.normalize(embeddings, p=2, dim=-1) if normalize else embeddings


@dataclass
class TTEEmbedderOutput(ModelOutput):
    embeddings: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None


@dataclass
class TTEUnifiedOutput(ModelOutput):
    """``last_hidden_state``: the states the head read (layer ``head.reads_layer``); ``position_ids``:
    the backbone's RoPE positions of those states, ``(3, batch, seq)``."""

    embeddings: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    position_ids: torch.LongTensor | None = None


@dataclass
class TTEGenerateOutput(ModelOutput):
    """``sequences``: prompt + generated ids; ``trace_ids``: each row's trace (no end token);
    ``embeddings``: computed from the hidden states captured while generating."""

    sequences: torch.LongTensor | None = None
    trace_ids: list[torch.LongTensor] | None = None
    embeddings: torch.FloatTensor | None = None


class TTEPreTrainedModel(PreTrainedModel):
    base_model_prefix = "tte"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _no_split_modules = []

    def _init_weights(self, module):
        # The backbone arrives initialised (random or pretrained); only fresh head layers need this.
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def _load_kwargs(kwargs: dict) -> dict:
    # `AutoModel.from_pretrained` tags its call of our `from_pretrained` with `_from_auto`; the backbone
    # load is an Auto call of its own that sets the tag again (transformers 5.25 refuses it twice).
    kwargs = {k: v for k, v in kwargs.items() if k != "_from_auto"}
    attn = kwargs.get("attn_implementation")
    if attn == "flash_attention_2":
        try:
            import flash_attn  # noqa: F401
        except ImportError as err:
            raise ImportError(
                "attn_implementation='flash_attention_2' needs flash-attn: `pip install 'tte-hf[flash]'` "
                "(CUDA only), or use attn_implementation='sdpa'."
            ) from err
    return {"attn_implementation": "sdpa", **kwargs}


class TTEEmbedderModel(TTEPreTrainedModel):
    """A VLM backbone whose last-token final hidden state is the embedding (VLM2Vec ``pooling='last'``).

    ``forward(**processor_outputs)`` returns `TTEEmbedderOutput` with ``.embeddings``.
    """

    config_class = TTEEmbedderConfig

    def __init__(self, config: TTEEmbedderConfig, backbone: nn.Module | None = None):
        super().__init__(config)
        if config.backbone_config is None:
            raise ValueError("TTEEmbedderConfig.backbone_config is required to build a TTEEmbedderModel.")
        self.backbone = backbone if backbone is not None else AutoModel.from_config(config.backbone_config)
        self.post_init()

    @classmethod
    def from_backbone(
        cls,
        name_or_path: str | os.PathLike,
        *,
        pooling: str = "last",
        normalize: bool = True,
        truncate_dim: int | None = None,
        **from_pretrained_kwargs,
    ) -> TTEEmbedderModel:
        """Start from a plain Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoint (local path or repo id)."""
        backbone = AutoModel.from_pretrained(name_or_path, **_load_kwargs(from_pretrained_kwargs))
        config = TTEEmbedderConfig(
            backbone_config=backbone.config, pooling=pooling, normalize=normalize, truncate_dim=truncate_dim
        )
        return cls(config, backbone=backbone)

    def get_input_embeddings(self):
        return self.backbone.get_input_embeddings()

    def forward(
        self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None, **backbone_inputs
    ) -> TTEEmbedderOutput:
        if attention_mask is None:
            raise ValueError("TTEEmbedderModel.forward needs the attention_mask the processor returns (for pooling).")
        backbone_inputs.pop("labels", None)
        outputs = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **backbone_inputs)
        hidden = outputs.last_hidden_state
        pooled = last_token_pool(hidden, attention_mask)
        embeddings = finalize_embeddings(pooled, self.config.truncate_dim, self.config.normalize)
        return TTEEmbedderOutput(embeddings=embeddings, last_hidden_state=hidden)


class _HeadInputsRead(Exception):
    """Ends an embedding pass of `TTEUnifiedModel.forward` at the layer whose input the head reads."""


class TTEUnifiedModel(TTEPreTrainedModel):
    """One backbone that reasons and embeds: a frozen reasoner VLM plus a trainable embedding head.

    `generate_and_embed` writes the reasoning trace and embeds from the hidden states captured during
    generation — no second backbone pass. `forward` embeds a given prompt + trace sequence.
    """

    config_class = TTEUnifiedConfig

    def __init__(self, config: TTEUnifiedConfig, backbone: nn.Module | None = None):
        super().__init__(config)
        if config.backbone_config is None:
            raise ValueError("TTEUnifiedConfig.backbone_config is required to build a TTEUnifiedModel.")
        self.backbone = (
            backbone if backbone is not None else AutoModelForImageTextToText.from_config(config.backbone_config)
        )
        head_hidden = self.backbone.config.get_text_config().hidden_size
        if head_hidden != config.hidden_size:
            raise ValueError(
                f"TTEUnifiedConfig.backbone_config has hidden_size={config.hidden_size} but the backbone has "
                f"{head_hidden}; build the config from the backbone's own config."
            )
        self.head = build_head(config)
        self.post_init()
        self.backbone.requires_grad_(False)

    @classmethod
    def from_backbone(
        cls, name_or_path: str | os.PathLike, *, head_type: str = "mhsa", head_kwargs: dict | None = None, **kwargs
    ) -> TTEUnifiedModel:
        """Attach a fresh head of ``head_type`` to a reasoner checkpoint (local path or repo id).

        ``head_kwargs`` go to `TTEUnifiedConfig` (``head_num_layers``, ``embedding_dim``, ...); the
        MHSA head starts as a copy of the backbone's last ``head_num_layers`` layers.
        """
        backbone = AutoModelForImageTextToText.from_pretrained(name_or_path, **_load_kwargs(kwargs))
        config = TTEUnifiedConfig(
            backbone_config=backbone.config,
            # a local folder by its absolute path: a later change of working directory does not move it
            backbone_name_or_path=resolve_reference(os.fspath(name_or_path), None),
            head_type=head_type,
            **(head_kwargs or {}),
        )
        config._attn_implementation = backbone.config._attn_implementation
        model = cls(config, backbone=backbone)
        if head_type == "mhsa":
            model.head.init_from_backbone(model.language_model)
        return model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Loads a full checkpoint, or a head-only one (``head.safetensors``) plus its referenced backbone."""
        folder = os.path.join(os.fspath(pretrained_model_name_or_path), kwargs.get("subfolder") or "")
        head_file = _resolve_file(pretrained_model_name_or_path, HEAD_WEIGHTS_NAME, kwargs)
        if head_file is None:
            loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
            model = loaded[0] if isinstance(loaded, tuple) else loaded  # (model, info) with output_loading_info
            model.config.backbone_name_or_path = resolve_reference(model.config.backbone_name_or_path, folder)
            return loaded
        from safetensors.torch import load_file

        # `revision`/`subfolder` locate this (head) repo only; token, cache and offline settings reach
        # the backbone repo too.
        hub = {k: kwargs.pop(k) for k in (*_REPO_KEYS, *_SHARED_HUB_KEYS) if k in kwargs}
        kwargs.pop("trust_remote_code", None)
        config = kwargs.pop("config", None) or cls.config_class.from_pretrained(pretrained_model_name_or_path, **hub)
        if not config.backbone_name_or_path:
            raise ValueError(f"{pretrained_model_name_or_path} holds only a head but its config names no backbone.")
        config.backbone_name_or_path = _head_backbone(config.backbone_name_or_path, folder)
        shared = {k: v for k, v in hub.items() if k in _SHARED_HUB_KEYS}
        model = cls.from_backbone(
            config.backbone_name_or_path,
            head_type=config.head_type,
            head_kwargs={k: getattr(config, k) for k in _HEAD_CONFIG_KEYS},
            **shared,
            **kwargs,
        )
        model.head.load_state_dict(load_file(head_file))
        model.loaded_head_only = True  # `save_head` then writes the same small repo back
        return model.eval()

    def save_head(self, save_directory: str | os.PathLike) -> None:
        """Save only the head (small) with a reference to the backbone in the config."""
        from safetensors.torch import save_file

        if not self.config.backbone_name_or_path:
            raise ValueError("config.backbone_name_or_path must name the backbone before saving the head alone.")
        os.makedirs(save_directory, exist_ok=True)
        if self._auto_class is not None:  # code files + auto_map, as save_pretrained writes them
            custom_object_save(self, save_directory, config=self.config)
        self.config.save_pretrained(save_directory)
        state = {k: v.detach().contiguous() for k, v in self.head.state_dict().items()}
        save_file(state, os.path.join(save_directory, HEAD_WEIGHTS_NAME))

    @property
    def language_model(self) -> nn.Module:
        return self.backbone.model.language_model

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # frozen: no dropout, whatever the head does
        return self

    def _capture_head_inputs(self, stop: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor], list]:
        """Hooks that collect, per backbone pass, the hidden states the head reads and the RoPE
        positions the backbone's layers ran with. Remove the returned handles when done. ``stop``: end
        the pass there (raise `_HeadInputsRead`): the layers above are the head's copies' originals,
        whose outputs an embedding pass does not use."""
        hidden: list[torch.Tensor] = []
        positions: list[torch.Tensor] = []
        layer = self.head.reads_layer
        if layer == len(self.language_model.layers):
            hook = self.language_model.norm.register_forward_hook(lambda module, args, output: hidden.append(output))
        else:
            # The input of layer k, not the output of layer k - 1: Qwen3-VL adds its deepstack visual
            # features to the early layers' outputs in between.
            def read_input(module, args, kwargs):
                hidden.append(args[0] if args else kwargs["hidden_states"])
                if stop:
                    raise _HeadInputsRead

            hook = self.language_model.layers[layer].register_forward_pre_hook(read_input, with_kwargs=True)

        def read_positions(module, args, kwargs):
            ids = args[1] if len(args) > 1 else kwargs["position_ids"]
            positions.append(ids.expand(3, *ids.shape[-2:]) if ids.ndim == 2 else ids)

        rotary = self.language_model.rotary_emb.register_forward_pre_hook(read_positions, with_kwargs=True)
        return hidden, positions, [hook, rotary]

    def embed_hidden_states(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Head + Matryoshka truncation + normalisation over the captured layer's hidden states.
        ``position_ids``: the backbone's RoPE positions ``(3, batch, seq)`` of those states (the MHSA
        head needs them on image and video rows)."""
        head_dtype = next(self.head.parameters()).dtype
        pooled = self.head(hidden_states.to(head_dtype), attention_mask, position_ids)
        return finalize_embeddings(pooled, self.config.truncate_dim, self.config.normalize)

    def forward(
        self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None, **backbone_inputs
    ) -> TTEUnifiedOutput:
        """Embed complete sequences (prompt + trace + end token) with one backbone pass, which ends at the
        layer whose input the head reads."""
        if attention_mask is None:
            raise ValueError("TTEUnifiedModel.forward needs the attention_mask the processor returns.")
        backbone_inputs.pop("labels", None)
        hidden, positions, handles = self._capture_head_inputs(stop=True)
        try:
            with torch.no_grad():
                self.backbone.model(
                    input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **backbone_inputs
                )
        except _HeadInputsRead:
            pass
        finally:
            for handle in handles:
                handle.remove()
        embeddings = self.embed_hidden_states(hidden[0], attention_mask, positions[0])
        return TTEUnifiedOutput(embeddings=embeddings, last_hidden_state=hidden[0], position_ids=positions[0])

    @torch.no_grad()
    def generate_and_embed(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor,
        max_new_tokens: int | None = None,
        generation_settings: dict | None = None,
        **generate_kwargs,
    ) -> TTEGenerateOutput:
        """Generate each row's reasoning trace (left-padded prompts), then embed prompt + trace + end
        token from the hidden states the backbone computed while generating.

        Decoding is greedy whatever the checkpoint's ``generation_config`` says, unless
        ``generation_settings`` ask otherwise (see `generation_tte.decoding_settings`). A trace is capped at
        ``max_new_tokens`` tokens, then the end token is forced; a ``min_new_tokens`` (or ``min_length``)
        in the settings keeps it back until the trace is that long (`generation_tte.trace_controls`). Rows
        that end early keep decoding until the slowest row's end token is fed; their extra tokens are masked.
        """
        if attention_mask[:, -1].min() == 0:
            raise ValueError("generate_and_embed needs left-padded prompts (processor padding_side='left').")
        cap = max_new_tokens or self.config.max_new_tokens
        end_id = self.backbone.generation_config.eos_token_id
        end_id = end_id[0] if isinstance(end_id, (list, tuple)) else end_id
        if end_id is None:
            raise ValueError(
                "generate_and_embed needs the end-of-turn token: set backbone.generation_config.eos_token_id "
                "(the backbone config's text_config.eos_token_id is missing)."
            )
        prompt_len = input_ids.shape[1]
        settings = {**decoding_settings(**(generation_settings or {})), **generate_kwargs}
        logits_processor, stopping_criteria = trace_controls(settings, prompt_len, cap, end_id)
        captured, captured_positions, handles = self._capture_head_inputs()
        try:
            sequences = self.backbone.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=cap + 2,
                eos_token_id=None,  # rows keep decoding after their end token; `TraceEndFed` stops
                logits_processor=logits_processor,
                stopping_criteria=stopping_criteria,
                **settings,
            )
        finally:
            for handle in handles:
                handle.remove()
        hidden = torch.cat(captured, dim=1)  # prompt + every generated token that was fed back
        # The generated tokens' positions follow the prompt's rope deltas, as generate computed them.
        position_ids = torch.cat(captured_positions, dim=-1)
        generated = sequences[:, prompt_len:]
        end_pos = (generated == end_id).to(torch.long).argmax(-1)
        positions = torch.arange(generated.shape[1], device=generated.device)
        trace_mask = (positions[None, :] <= end_pos[:, None]).to(attention_mask.dtype)
        mask = torch.cat([attention_mask, trace_mask], dim=1)[:, : hidden.shape[1]]
        embeddings = self.embed_hidden_states(hidden, mask, position_ids)
        traces = [generated[i, : end_pos[i]] for i in range(generated.shape[0])]
        return TTEGenerateOutput(sequences=sequences, trace_ids=traces, embeddings=embeddings)


def _head_backbone(reference: str, folder: str) -> str:
    """The backbone a head-only checkpoint in ``folder`` names, resolved (`resolve_reference`); a local
    path that is not there is an error naming it, not a failed Hub lookup of a path-shaped repo id."""
    resolved = resolve_reference(reference, folder)
    if os.path.isdir(resolved):
        return resolved
    try:
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        validate_repo_id(resolved)
    except HFValidationError:
        raise FileNotFoundError(
            f"{folder} holds only a head; its backbone_name_or_path={reference!r} is no folder there (nor in the "
            "working directory) and no Hub repo id. Keep the head folder next to its backbone as saved, or "
            "save the model with its backbone (save_pretrained, or save_full_model in train-head)."
        ) from None
    return resolved


def _resolve_file(name_or_path, filename: str, kwargs: dict) -> str | None:
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, kwargs.get("subfolder") or "", filename)
        return path if os.path.isfile(path) else None
    from transformers.utils import cached_file

    return cached_file(
        name_or_path,
        filename,
        revision=kwargs.get("revision"),
        subfolder=kwargs.get("subfolder") or "",
        cache_dir=kwargs.get("cache_dir"),
        token=kwargs.get("token"),
        local_files_only=bool(kwargs.get("local_files_only")),
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )


TTEEmbedderConfig.register_for_auto_class()
TTEUnifiedConfig.register_for_auto_class()
TTEEmbedderModel.register_for_auto_class("AutoModel")
TTEUnifiedModel.register_for_auto_class("AutoModel")
