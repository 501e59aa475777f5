"""Sentence-transformers input module for the unified TTE model: its own backbone reasons, and the
embedding head reads the hidden states of that same generation (no second backbone pass).

Self-contained (stdlib, torch, transformers, sentence_transformers and sibling files): shipped next to
the weights for ``trust_remote_code``.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping, Sequence
from typing import Any

import torch
from sentence_transformers.base.modules import InputModule

from .gate_tte import AUTO, check_mode
from .generation_tte import decoding_settings
from .inputs import END_OF_TURN, build_messages, embedder_system_prompt, embedder_text, render_prompt
from .reasoner_base import ReasoningRequest
from .st_gate import GateStep, mean_text_embeddings, vision_placeholder_ids
from .st_inputs import INPUT_SETTINGS, TTEInputsMixin
from .st_model import use_tte_model_class
from .st_state import LRUCache


class _UnifiedBackboneReasoner:
    """The unified model's own backbone as the reasoner: ``generate`` runs `generate_and_embed` and
    hands each row's embedding (from the hidden states computed while generating) to the module."""

    def __init__(self, module: TTEUnifiedTransformer):
        self.module = module
        self.name = f"unified:{module.model_name_or_path}"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "max_new_tokens": self.module.max_new_tokens,
            "generation": decoding_settings(**(self.module.generation_settings or {})),
        }

    def generate(self, requests: Sequence[ReasoningRequest]) -> list[str]:
        return self.generate_and_embed(requests)[0]

    @torch.no_grad()
    def generate_and_embed(self, requests: Sequence[ReasoningRequest]) -> tuple[list[str], dict[str, torch.Tensor]]:
        """The traces, and each request's embedding by ECR cache key (returned, not stored on the
        module, so that concurrent calls keep their own); the trace token ids go to the module's cache."""
        module = self.module
        prompts = [module.prompt_text(r.text, len(r.images), bool(r.video), r.instruction, r.task) for r in requests]
        batch = module.process(prompts, [list(r.images) for r in requests], [r.video for r in requests])
        out = module.model.generate_and_embed(
            **batch, max_new_tokens=module.max_new_tokens, generation_settings=module.generation_settings
        )
        texts = module.processor.batch_decode([ids.tolist() for ids in out.trace_ids], skip_special_tokens=True)
        reasoner = module._reasoner_description()
        embeddings = {}
        for request, embedding, ids in zip(requests, out.embeddings, out.trace_ids):
            key = module._cache_key(reasoner, request)
            embeddings[key] = embedding
            module.trace_token_ids[key] = ids.tolist()
        return texts, embeddings


class TTEUnifiedTransformer(TTEInputsMixin, InputModule):
    """ST input module for the unified TTE model (`TTEUnifiedModel`: frozen reasoner + embedding head).

    Inputs that need a trace are reasoned about by the model's own backbone and embedded from the
    hidden states of that same generation (no second pass); inputs with a trace (given or cached)
    and inputs without reasoning take one forward pass over prompt + trace + end token. The module
    outputs ``sentence_embedding`` (the head pools and normalises), so it stands alone in the model.
    The sequence is the reasoner's own: system = the task prompt, the ST prompt = the instruction.
    Besides its own arguments it takes the `st_inputs.INPUT_SETTINGS` (pixel budget, URLs, cache size).
    ``query_reasoning`` / ``document_reasoning`` may be ``"auto"``: the module's reasoning gate reads
    each input's no-trace embedding (its ``think=False`` pass: one prefill, stopping at the layer the
    head reads, then the head; with the default joint feature also its words' mean input embedding),
    which a skipped input returns as its vector; a reasoned one then generates as under ``think=True``.
    (A gate fitted on the text feature reads the text tokens of the no-trace sequence instead, no pass
    of the model, and a skipped input takes the ``think=False`` pass.)
    """

    config_file_name = "tte_unified_config.json"
    config_keys: list[str] = [
        "query_reasoning",
        "document_reasoning",
        "reasoning_task",
        "max_new_tokens",
        "generation_settings",
        *INPUT_SETTINGS,
    ]
    save_in_root = True
    forward_kwargs = {"think"}
    TRACE_TOKEN_CACHE_SIZE = 10_000

    def __init__(
        self,
        model_name_or_path: str,
        *,
        query_reasoning: bool | str = True,
        document_reasoning: bool | str = False,
        reasoning_task: str = "generic",
        max_new_tokens: int | None = None,
        generation_settings: dict | None = None,
        model_kwargs: dict | None = None,
        processor_kwargs: dict | None = None,
        **input_settings,
    ):
        super().__init__()
        self._set_input_settings(input_settings)  # before the weights load: a misspelt setting fails fast
        check_mode("query_reasoning", query_reasoning)
        check_mode("document_reasoning", document_reasoning)
        from transformers import AutoProcessor

        from .modeling_tte import TTEUnifiedModel

        self.model = TTEUnifiedModel.from_pretrained(model_name_or_path, **(model_kwargs or {})).eval()
        self.processor = AutoProcessor.from_pretrained(model_name_or_path, **(processor_kwargs or {}))
        self.processor.tokenizer.padding_side = "left"  # generate_and_embed needs left-padded prompts
        self.model_name_or_path = model_name_or_path
        self.query_reasoning, self.document_reasoning = query_reasoning, document_reasoning
        self.reasoning_task = reasoning_task
        self.max_new_tokens = max_new_tokens or self.model.config.max_new_tokens
        #: decoding of the traces: greedy unless this asks otherwise (`generation_tte.decoding_settings`)
        self.generation_settings = generation_settings
        decoding_settings(**(generation_settings or {}))  # unknown keys fail at load, not at the first query
        self._reasoner = _UnifiedBackboneReasoner(self)
        self.ecr_cache: MutableMapping[str, str] = {}
        #: generated trace token ids by cache key: a repeated input re-reads exactly the tokens that were
        #: generated (decoded text need not re-tokenize to them). Bounded (LRU, ``TRACE_TOKEN_CACHE_SIZE``):
        #: an evicted or text-only entry falls back to re-tokenising the trace text.
        self.trace_token_ids: MutableMapping[str, list[int]] = LRUCache(self.TRACE_TOKEN_CACHE_SIZE)
        hub = {
            key: (model_kwargs or {}).get(name)
            for key, name in (("token", "token"), ("cache_folder", "cache_dir"), ("revision", "revision"))
        }
        hub["local_files_only"] = bool((model_kwargs or {}).get("local_files_only"))
        hub["subfolder"] = (model_kwargs or {}).get("subfolder") or ""
        self.gate_step = GateStep(self._gate_feature_functions(), self.gate_feature_dim)
        # `gate_config.json` next to the weights, if trained
        self.gate_step.load(model_name_or_path, hub, next(self.parameters()).device)

    @property
    def reasoner(self):
        return self._reasoner

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def get_embedding_dimension(self) -> int:
        return self.model.config.truncate_dim or self.model.config.output_dim

    def _trace_from_output(self, raw: str) -> str:
        return raw  # the generated text as is: the embedding read exactly these tokens

    def _generate(self, requests: list[ReasoningRequest], call: dict[str, Any]) -> list[str]:
        if not isinstance(self.reasoner, _UnifiedBackboneReasoner):
            return super()._generate(requests, call)
        with self._model_lock():  # the backbone both generates and embeds: one call at a time
            texts, embeddings = self.reasoner.generate_and_embed(requests)
        call.setdefault("embeddings", {}).update(embeddings)  # this generation's own embeddings
        return texts

    def prompt_text(self, text, num_images, has_video, instruction, task, has_trace: bool = True) -> str:
        system = embedder_system_prompt(task or self.reasoning_task, has_trace)
        return render_prompt(self.processor, build_messages(text, num_images, has_video, instruction, system))

    def process(
        self, prompts: list[str], images: list[list], videos: list, suffixes: list[list[int]] | None = None
    ) -> dict[str, torch.Tensor]:
        """Processor outputs for ``prompts`` (left-padded), each row followed by its ``suffixes`` token ids."""
        flat_images = [image for row in images for image in row]
        flat_videos = [list(video) for video in videos if video]
        batch = dict(
            self.processor(
                text=prompts, images=flat_images or None, videos=flat_videos or None, padding=True, return_tensors="pt"
            )
        )
        if suffixes is not None:
            batch = append_suffixes(batch, suffixes, self.processor.tokenizer.pad_token_id)
        return {k: v.to(self.model.device) for k, v in batch.items()}

    def preprocess(self, inputs, prompt: str | None = None, task: str | None = None, think=None, **kwargs):
        """Reason (generating and embedding at once) where needed; tokenise the rest for `forward`."""
        if not inputs:
            return {}
        mode = self._wants_reasoning(task, think)
        items = self.parse_inputs(inputs)
        self._per_thread().prompt_by_task[task] = prompt
        call: dict[str, Any] = {}  # this call's keys and generated embeddings: no module state, no mixing
        # A gate on the no-trace embedding reads the vectors of this batch's no-trace pass, and a row it
        # skips returns its vector from that pass (handed to `forward` with the generated ones): a skipped
        # row costs one prefill, as under think=False, a reasoned one that prefill more than under
        # think=True. (`TTESentenceTransformer` runs think="auto" itself, the same way; this serves a
        # caller driving the module directly.)
        no_trace = self.no_trace_embeddings(items, prompt) if mode == AUTO and self.gate_step.reads_embeddings else None
        think_rows = self.gate_step.rows(items, prompt, mode, no_trace)
        traces = self._traces(items, prompt, think_rows, call)
        self.last_reasoning = traces
        generated = call.get("embeddings", {})
        fresh = {i: generated[key] for i, key in call["keys"].items() if key in generated}
        if no_trace is not None:
            fresh |= {i: no_trace[i] for i, think in enumerate(think_rows) if not think}
        rows = [i for i in range(len(items)) if i not in fresh]
        features: dict[str, Any] = {"batch_size": torch.tensor(len(items))}
        if fresh:
            features["generated_rows"] = torch.tensor(list(fresh))
            features["generated_embeddings"] = torch.stack(list(fresh.values()))
        if rows:
            features |= self._forward_features(items, rows, traces, call["keys"], prompt)
        return features

    def _forward_features(
        self, items: list, rows: list[int], traces: list[str | None], keys: dict[int, str], prompt: str | None
    ) -> dict[str, Any]:
        """Processor outputs for embedding ``rows`` in one forward pass: prompt + trace (its generated
        token ids where cached) + end token."""
        end_id = self.processor.tokenizer.convert_tokens_to_ids(END_OF_TURN)
        suffixes: list[list[int] | None] = []
        for i in rows:
            key = keys.get(i)
            token_ids = self.trace_token_ids.get(key) if key is not None else None
            suffixes.append(None if token_ids is None else [*token_ids, end_id])
        to_tokenize = [n for n, suffix in enumerate(suffixes) if suffix is None]
        if to_tokenize:  # one batched call: a call per row was about a tenth of a no-trace pass (cProfile)
            texts = [embedder_text("", traces[rows[n]]) for n in to_tokenize]
            for n, ids in zip(to_tokenize, self.processor.tokenizer(texts, add_special_tokens=False).input_ids):
                suffixes[n] = ids
        prompts = [
            self.prompt_text(
                items[i].text,
                len(items[i].images),
                items[i].video is not None,
                prompt,
                items[i].task,
                has_trace=traces[i] is not None,
            )
            for i in rows
        ]
        features = self.process(prompts, [items[i].images for i in rows], [items[i].video for i in rows], suffixes)
        features["forward_rows"] = torch.tensor(rows)
        return features

    def input_embeddings(self) -> torch.nn.Embedding:
        """The backbone's input embeddings (the gate's text feature averages them)."""
        return self.model.backbone.get_input_embeddings()

    @torch.no_grad()
    def no_trace_embeddings(self, items: list, instruction: str | None) -> torch.Tensor:
        """The (n, d) vectors ``think=False`` returns for ``items`` (an input's own trace read as then): the
        gate's default feature. The same pass as `forward`'s: prompt (+ own trace) + end token, read up to
        the layer the head reads, then the head."""
        rows = list(range(len(items)))
        batch = self._forward_features(items, rows, [item.reasoning for item in items], {}, instruction)
        batch.pop("forward_rows")
        with self._model_lock():  # not while another thread generates with the same backbone
            return self.model(**batch).embeddings

    @torch.no_grad()
    def text_gate_features(self, items: list, instruction: str | None) -> torch.Tensor:
        """The gate's text feature (`gate_tte.TEXT_EMBEDDINGS`): `st_gate.mean_text_embeddings` of ``items``'
        no-trace sequences (what ``think=False`` embeds)."""
        texts = [
            embedder_text(
                self.prompt_text(item.text, len(item.images), item.video is not None, instruction, item.task, False),
                None,
            )
            for item in items
        ]
        return mean_text_embeddings(
            self.input_embeddings(), self.processor.tokenizer, texts, vision_placeholder_ids(self.processor)
        )

    def forward(self, features: dict[str, Any], think=None, **kwargs) -> dict[str, Any]:
        size = int(features["batch_size"])
        embeddings = torch.zeros(size, self.get_embedding_dimension(), device=self.model.device)
        if "forward_rows" in features:
            inputs = {
                k: v
                for k, v in features.items()
                if k not in ("batch_size", "forward_rows", "generated_rows", "generated_embeddings")
            }
            with self._model_lock():  # not while another thread generates with the same backbone
                computed = self.model(**inputs).embeddings
            embeddings = embeddings.to(computed.dtype)
            embeddings[features["forward_rows"]] = computed
        if "generated_rows" in features:
            generated = features["generated_embeddings"]
            embeddings = embeddings.to(generated.dtype)
            embeddings[features["generated_rows"]] = generated
        features["sentence_embedding"] = embeddings
        return features

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        # A head on a Hub backbone stays head-only (the repo references the backbone). A head on a local
        # backbone is saved with the backbone's weights: the folder is then complete, loading from any
        # working directory and wherever it is moved, as a reference to another folder could not.
        from .modeling_tte import HEAD_WEIGHTS_NAME

        backbone = self.model.config.backbone_name_or_path
        if getattr(self.model, "loaded_head_only", False) and not os.path.isdir(backbone or ""):
            self.model.save_head(output_path)
        else:
            self.model.save_pretrained(output_path, safe_serialization=safe_serialization)
            stale_head = os.path.join(output_path, HEAD_WEIGHTS_NAME)  # else it would load as a head-only repo
            if os.path.isfile(stale_head):
                os.remove(stale_head)
        self.processor.save_pretrained(output_path)
        self.save_config(output_path)
        self.gate_step.save(output_path)

    def on_model_ready(self, model) -> None:
        self.attach_model(model)
        use_tte_model_class(model)

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        trust_remote_code: bool = False,
        model_kwargs: dict | None = None,
        processor_kwargs: dict | None = None,
        **kwargs,
    ) -> TTEUnifiedTransformer:
        config = cls.load_config(
            model_name_or_path,
            subfolder=subfolder,
            token=token,
            cache_folder=cache_folder,
            revision=revision,
            local_files_only=local_files_only,
        )
        hub = {"token": token, "cache_dir": cache_folder, "revision": revision, "local_files_only": local_files_only}
        # The saved config.json maps to this repo's modeling code: the processor loader asks for consent.
        hub["trust_remote_code"] = trust_remote_code
        if subfolder:
            hub["subfolder"] = subfolder
        return cls(
            model_name_or_path,
            model_kwargs={**hub, **(model_kwargs or {})},
            processor_kwargs={**hub, **(processor_kwargs or {})},
            **config,
        )


def append_suffixes(batch: dict, suffixes: list[list[int]], pad_id: int) -> dict:
    """Append token ids to each row of a left-padded batch and re-pad on the left. Per-token tensors
    other than the ids (e.g. ``mm_token_type_ids``) get 0 for the appended tokens."""
    mask = batch["attention_mask"].bool()
    per_token = [k for k, v in batch.items() if k != "input_ids" and v.shape[:2] == mask.shape]
    rows = [batch["input_ids"][r][mask[r]].tolist() + suffix for r, suffix in enumerate(suffixes)]
    width = max(len(row) for row in rows)
    out = dict(batch)
    out["input_ids"] = torch.tensor([[pad_id] * (width - len(row)) + row for row in rows])
    for key in per_token:
        fill = 1 if key == "attention_mask" else 0
        out[key] = torch.stack(
            [
                torch.cat(
                    [
                        torch.zeros(width - len(rows[r]), dtype=batch[key].dtype),
                        batch[key][r][mask[r]],
                        torch.full((len(suffix),), fill, dtype=batch[key].dtype),
                    ]
                )
                for r, suffix in enumerate(suffixes)
            ]
        )
    return out
