"""Sentence-transformers input module that reasons, then embeds (Think-Then-Embed).

`TTETransformer` is ST's own `Transformer` with one step added in `preprocess`: each input gets an
embedding-centric reasoning trace (ECR) from a reasoner, and the backbone reads the reasoner's
generation sequence (prompt + trace as the assistant turn + end token). The embedding itself is
ST's native ``Pooling(pooling_mode="lasttoken")`` + ``Normalize`` after this module.

Why a `Transformer` subclass rather than a wrapper: loading, saving, device handling, training and
the forward pass are exactly ST's; only the text the backbone reads differs. ST renders chat inputs
its own way (prompt as a system message, no assistant turn), which is not the TTE sequence, so
`preprocess` builds the text with ``inputs.render_prompt``/``embedder_text`` instead.

Self-contained (stdlib, torch, transformers, sentence_transformers, PIL and sibling files): shipped
next to the weights for ``trust_remote_code``.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping, Sequence
from typing import Any

import torch
from sentence_transformers.base.modules import Transformer

from .configuration_tte import portable_reference, resolve_reference
from .ecr import parse_ecr
from .gate_tte import check_mode
from .inputs import build_messages, embedder_system_prompt, embedder_text, render_prompt
from .reasoner_openai import OpenAIReasoner
from .reasoner_transformers import TransformersReasoner
from .st_gate import GateStep, mean_text_embeddings, vision_placeholder_ids
from .st_input_types import ParsedInput
from .st_inputs import INPUT_SETTINGS, TTEInputsMixin
from .st_model import use_tte_model_class

REASONING_SOURCES = ("off", "transformers", "openai")
_HUB_KEYS = ("token", "cache_dir", "revision", "subfolder", "local_files_only")


class TTETransformer(TTEInputsMixin, Transformer):
    """ST input module for Think-Then-Embed: reason about each input, then run the embedder backbone
    on prompt + trace. Follow it with ``Pooling(pooling_mode="lasttoken")`` and ``Normalize``.

    Inputs: text, PIL image, `pathlib.Path`, numpy/tensor image, ``{"text", "image" | "images",
    "video", "reasoning", "task"}`` dicts (a ``"reasoning"`` trace is used as is), or a chat
    conversation (system / one user turn / optional assistant turn = the trace).

    Args (saved in ``sentence_bert_config.json``, besides ST's own):
        reasoning_source: ``"off"``, ``"transformers"`` (``reasoner_name_or_path``, a VLM checkpoint)
            or ``"openai"`` (``reasoner_endpoint`` + ``reasoner_model``). A backend object set with
            `set_reasoner` at runtime (vLLM, ``tte_hf.reasoning.load_reasoner``, ...) wins over it.
        query_reasoning / document_reasoning: reason in ``encode_query`` / ``encode_document``
            (plain ``encode`` follows ``document_reasoning``): True, False or ``"auto"`` (the module's
            reasoning gate, `gate_tte.ReasoningGate`, decides per input); ``think=`` overrides per call.
        reasoning_task: task prompt name for the reasoner (an input's ``"task"`` key overrides it).
        trace_mode: ``"full"`` (thought + final) or ``"final"``, see ``ecr.parse_ecr``.
        max_new_tokens: cap on the trace length of the built-in reasoners.
        system_prompt: system message of the embedder sequence (``None``: none).
        min_pixels, max_pixels, max_image_pixels, allow_image_urls, url_timeout, max_url_bytes,
            image_url_allow_hosts, embedding_cache_size: see `st_inputs.INPUT_SETTINGS` (the embedding cache is
            `TTESentenceTransformer`'s).
        Other keyword arguments go to ST's `Transformer`.
    """

    config_keys: list[str] = [
        *Transformer.config_keys,
        "reasoning_source",
        "reasoner_name_or_path",
        "reasoner_revision",
        "reasoner_endpoint",
        "reasoner_model",
        "query_reasoning",
        "document_reasoning",
        "reasoning_task",
        "trace_mode",
        "max_new_tokens",
        "system_prompt",
        *INPUT_SETTINGS,
    ]
    forward_kwargs = {"think"}

    def __init__(
        self,
        model_name_or_path: str,
        *,
        reasoning_source: str = "off",
        reasoner_name_or_path: str | None = None,
        reasoner_revision: str | None = None,
        reasoner_endpoint: str | None = None,
        reasoner_model: str | None = None,
        query_reasoning: bool | str = True,
        document_reasoning: bool | str = False,
        reasoning_task: str = "generic",
        trace_mode: str = "full",
        max_new_tokens: int = 256,
        system_prompt: str | None = None,
        **transformer_kwargs,
    ):
        if reasoning_source not in REASONING_SOURCES:
            raise ValueError(f"reasoning_source={reasoning_source!r} is not one of {REASONING_SOURCES}.")
        if reasoning_source == "transformers" and not reasoner_name_or_path:
            raise ValueError("reasoning_source='transformers' needs reasoner_name_or_path (a VLM checkpoint).")
        if reasoning_source == "openai" and not (reasoner_endpoint and reasoner_model):
            raise ValueError("reasoning_source='openai' needs reasoner_endpoint and reasoner_model.")
        parse_ecr("").for_embedder(trace_mode)  # validates the mode early
        check_mode("query_reasoning", query_reasoning)
        check_mode("document_reasoning", document_reasoning)
        settings = {name: transformer_kwargs.pop(name) for name in INPUT_SETTINGS if name in transformer_kwargs}
        # Qwen2-VL cannot take unpadded (flattened) batches; the pooled token must stay last.
        transformer_kwargs.setdefault("unpad_inputs", False)
        # Where this model was loaded from (ST's `load` passes them in model_kwargs): the bundled reasoner is
        # read from the same repo, revision and cache, and a reasoner repo gets the same token and cache.
        model_kwargs = transformer_kwargs.get("model_kwargs") or {}
        self._hub_kwargs = {k: model_kwargs[k] for k in _HUB_KEYS if model_kwargs.get(k) not in (None, "")}
        super().__init__(model_name_or_path, **transformer_kwargs)
        self.model_name_or_path = model_name_or_path
        self.reasoning_source = reasoning_source
        #: where a saved config names a local reasoner from (`get_config_dict`): this model's own folder
        self._config_folder = os.path.join(model_name_or_path, self._hub_kwargs.get("subfolder", ""))
        # A local reasoner folder is kept by its absolute path: as saved, relative to this model's folder;
        # as given, relative to the working directory. Anything else (a Hub repo id) stays as it is.
        self.reasoner_name_or_path = resolve_reference(reasoner_name_or_path, self._config_folder)
        self.reasoner_revision = reasoner_revision
        self.reasoner_endpoint = reasoner_endpoint
        self.reasoner_model = reasoner_model
        self.query_reasoning = query_reasoning
        self.document_reasoning = document_reasoning
        self.reasoning_task = reasoning_task
        self.trace_mode = trace_mode
        self.max_new_tokens = max_new_tokens
        self.system_prompt = system_prompt
        self._set_input_settings(settings)
        self._reasoner = None
        #: raw reasoner outputs by input fingerprint; any MutableMapping[str, str] can replace it
        self.ecr_cache: MutableMapping[str, str] = {}
        hub = {k: v for k, v in self._hub_kwargs.items() if k != "cache_dir"}
        if "cache_dir" in self._hub_kwargs:
            hub["cache_folder"] = self._hub_kwargs["cache_dir"]
        self.gate_step = GateStep(self._gate_feature_functions(), self.gate_feature_dim)
        # `gate_config.json` next to the weights, if trained
        self.gate_step.load(model_name_or_path, hub, next(self.parameters()).device)

    # --- reasoner -------------------------------------------------------------------------------

    @property
    def reasoner(self):
        """The reasoning backend: the one given to `set_reasoner`, else built from the config on first use."""
        if self._reasoner is None and self.reasoning_source == "transformers":
            device = self.model.device if self.model.device.type != "meta" else None
            path = self._resolve_reasoner_path()
            hub = {k: self._hub_kwargs[k] for k in ("token", "cache_dir", "local_files_only") if k in self._hub_kwargs}
            revision = self.reasoner_revision if not os.path.isdir(path) else None
            self._reasoner = TransformersReasoner(
                path, revision=revision, max_new_tokens=self.max_new_tokens, device=device, hub_kwargs=hub
            )
        elif self._reasoner is None and self.reasoning_source == "openai":
            self._reasoner = OpenAIReasoner(
                self.reasoner_model, self.reasoner_endpoint, max_new_tokens=self.max_new_tokens
            )
        else:
            return self._reasoner
        # Built from the config, so the config describes it (evaluation fingerprints skip this one).
        self._config_reasoner = self._reasoner
        return self._reasoner

    def _resolve_reasoner_path(self) -> str:
        # A reasoner bundled inside the model repo is referenced by a relative folder name; it is read from
        # the revision, subfolder and cache the model itself came from.
        path = self.reasoner_name_or_path
        if os.path.isdir(path) or os.path.isabs(path):
            return path
        if "/" not in path:
            hub = self._hub_kwargs
            subfolder = "/".join(p for p in (hub.get("subfolder"), path) if p)
            local = os.path.join(self.model_name_or_path, subfolder)
            if os.path.isdir(self.model_name_or_path):
                return local if os.path.isdir(local) else path
            bundled = self.load_dir_path(
                self.model_name_or_path,
                subfolder=subfolder,
                token=hub.get("token"),
                cache_folder=hub.get("cache_dir"),
                revision=hub.get("revision"),
                local_files_only=bool(hub.get("local_files_only")),
            )
            if bundled and os.path.isdir(bundled) and os.listdir(bundled):
                return bundled
        return path

    # --- TTE checkpoints ------------------------------------------------------------------------
    # A `TTEEmbedderModel` checkpoint is loaded as itself (its forward also returns ``last_hidden_state``,
    # which ST's lasttoken Pooling + Normalize turn into the same vector as its own ``embeddings``) and
    # saved as itself. So one repo holds ONE copy of the weights under the TTE ``config.json`` (with
    # ``auto_map``): `AutoModel` and `SentenceTransformer` both read it, and no plain-backbone copy is made.

    def _load_config(self, model_name_or_path: str, backend: str, config_kwargs: dict[str, Any]):
        hub = {k: v for k, v in config_kwargs.items() if k != "trust_remote_code"}
        if _config_model_type(model_name_or_path, hub) == "tte_embedder":
            from .configuration_tte import TTEEmbedderConfig

            return TTEEmbedderConfig.from_pretrained(model_name_or_path, **hub), False
        return super()._load_config(model_name_or_path, backend, config_kwargs)

    def _load_model(self, model_name_or_path, transformer_task, config, backend, is_peft_model, **model_kwargs):
        if getattr(config, "model_type", None) == "tte_embedder":
            from .modeling_tte import TTEEmbedderModel

            model_kwargs.pop("trust_remote_code", None)  # the class is this repo's own sibling file
            return TTEEmbedderModel.from_pretrained(model_name_or_path, config=config, **model_kwargs)
        return super()._load_model(model_name_or_path, transformer_task, config, backend, is_peft_model, **model_kwargs)

    # --- ST interface ---------------------------------------------------------------------------

    def embedder_texts(self, items: list[ParsedInput], traces: list[str | None], instruction: str | None) -> list[str]:
        """The sequences the backbone reads: the TTE generation prompt + trace + end token."""
        texts = []
        for item, trace in zip(items, traces):
            system = item.system or embedder_system_prompt(
                item.task or self.reasoning_task, trace is not None, self.system_prompt
            )
            messages = build_messages(item.text, len(item.images), item.video is not None, instruction, system)
            texts.append(embedder_text(render_prompt(self.processor, messages), trace))
        return texts

    def preprocess(
        self,
        inputs: Sequence[Any],
        prompt: str | None = None,
        task: str | None = None,
        think: bool | None = None,
        **kwargs,
    ) -> dict[str, Any]:
        """Validate and load ``inputs``, get their traces (reasoner or cache), build the TTE sequences
        and run the processor. ``prompt`` (ST prompts) is the task instruction."""
        if not inputs:
            return {}
        mode = self._wants_reasoning(task, think)
        items = self.parse_inputs(inputs)
        self._per_thread().prompt_by_task[task] = prompt
        # `TTESentenceTransformer` runs think="auto" itself (its skipped rows return the no-trace vectors
        # the gate read); here it comes only from a caller driving this module directly, whose rows the
        # gate skips are embedded again below.
        think_rows = self.gate_step.rows(items, prompt, mode)
        traces = self._traces(items, prompt, think_rows)
        self.last_reasoning = traces
        return self._features(items, self.embedder_texts(items, traces, prompt))

    def _features(self, items: list[ParsedInput], texts: list[str]) -> dict[str, Any]:
        images = [image for item in items for image in item.images]
        videos = [item.video for item in items if item.video is not None]
        # No truncation: it would cut the end token whose hidden state is the embedding.
        features = dict(
            self.processor(text=texts, images=images or None, videos=videos or None, padding=True, return_tensors="pt")
        )
        features["modality"] = "message"
        return features

    def input_embeddings(self) -> torch.nn.Embedding:
        """The backbone's input embeddings (the gate's text feature averages them)."""
        return self.model.get_input_embeddings()

    @torch.no_grad()
    def no_trace_embeddings(self, items: list[ParsedInput], instruction: str | None) -> torch.Tensor:
        """The (n, d) vectors ``think=False`` returns for ``items`` (an input's own trace read as then): the
        gate's default feature. This module's no-trace pass and the model's modules after it, as ``encode``
        runs them (eval mode, full width: ``truncate_dim`` is the caller's, not the gate's)."""
        from sentence_transformers.util import batch_to_device

        model = self.sentence_transformer()
        model.eval()  # as `encode`: the vector think=False returns
        features = self._features(items, self.embedder_texts(items, [item.reasoning for item in items], instruction))
        return model(batch_to_device(features, self.model.device))["sentence_embedding"]

    @torch.no_grad()
    def text_gate_features(self, items: list[ParsedInput], instruction: str | None) -> torch.Tensor:
        """The gate's text feature (`gate_tte.TEXT_EMBEDDINGS`): `st_gate.mean_text_embeddings` of ``items``'
        no-trace sequences (what ``think=False`` embeds)."""
        texts = self.embedder_texts(items, [None] * len(items), instruction)
        return mean_text_embeddings(
            self.input_embeddings(), self.processor.tokenizer, texts, vision_placeholder_ids(self.processor)
        )

    def save(self, output_path: str, *args, **kwargs) -> None:
        super().save(output_path, *args, **kwargs)
        self.gate_step.save(output_path)

    def on_model_ready(self, model) -> None:
        self.attach_model(model)
        use_tte_model_class(model)

    def get_config_dict(self) -> dict[str, Any]:
        """ST's config, with a local reasoner folder named relative to the model's folder (`portable_reference`):
        the saved model loads from any working directory and after moving together with its reasoner, and
        the evaluation fingerprint, which reads this, changes with neither. (`save_sentence_transformer`
        bundles the reasoner instead: the folder then moves on its own.)"""
        config = super().get_config_dict()
        reference = config.get("reasoner_name_or_path")
        # a relative one is a Hub repo id, or relative already (`save_sentence_transformer`'s bundled copy)
        if reference and os.path.isabs(reference) and os.path.isdir(self._config_folder):
            config["reasoner_name_or_path"] = portable_reference(reference, self._config_folder)
        return config

    def save_config(self, output_path: str, filename: str | None = None) -> None:
        folder, self._config_folder = self._config_folder, output_path  # the saved config names it from there
        try:
            super().save_config(output_path, filename)
        finally:
            self._config_folder = folder


def _config_model_type(name_or_path: str, hub_kwargs: dict[str, Any]) -> str | None:
    """``model_type`` of the checkpoint's ``config.json`` (local folder or Hub repo), or None."""
    from transformers import PretrainedConfig

    try:
        config, _ = PretrainedConfig.get_config_dict(name_or_path, **hub_kwargs)
    except OSError:
        return None
    return config.get("model_type")
