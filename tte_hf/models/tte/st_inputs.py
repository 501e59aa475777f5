"""What both sentence-transformers TTE modules share: parsing and loading the caller's inputs, the
reasoning step with its ECR cache, and the module API of the ``think="auto"`` gate (which the module's
`st_gate.GateStep` runs).

Self-contained (stdlib, torch, sentence_transformers, PIL and sibling files): shipped next to the
weights for ``trust_remote_code``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .ecr import parse_ecr
from .fingerprints import ecr_cache_key
from .gate_tte import AUTO, GATE_FEATURE, JOINT_FEATURES, NO_TRACE_EMBEDDING, TEXT_EMBEDDINGS, check_mode
from .inputs import (
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_URL_BYTES,
    DEFAULT_URL_TIMEOUT,
    check_image_source,
    load_image,
    load_video,
)
from .reasoner_base import ReasoningRequest
from .st_gate import GateStep
from .st_input_types import INPUT_KEYS, ParsedInput
from .st_state import ModelLock, ModelRef, PerThreadState

if TYPE_CHECKING:
    import torch

    from .gate_tte import ReasoningGate

__all__ = ["INPUT_KEYS", "INPUT_SETTINGS", "ParsedInput", "TTEInputsMixin"]

#: Settings both TTE modules take as keyword arguments and save in their configs, with their defaults:
#: ``min_pixels`` / ``max_pixels`` (image pixel budget), ``max_image_pixels`` (decompression-bomb
#: limit), ``allow_image_urls`` (fetch ``http(s)`` images from global addresses, within ``url_timeout``
#: and ``max_url_bytes``), ``image_url_allow_hosts`` (hosts, ``host:port``, IPs or CIDRs fetched even if
#: not global: an intranet image store) and ``embedding_cache_size`` (entries of the model's embedding
#: cache, LRU; ``None``: off).
INPUT_SETTINGS: dict[str, Any] = {
    "min_pixels": None,
    "max_pixels": None,
    "max_image_pixels": DEFAULT_MAX_IMAGE_PIXELS,
    "allow_image_urls": False,
    "url_timeout": DEFAULT_URL_TIMEOUT,
    "max_url_bytes": DEFAULT_MAX_URL_BYTES,
    "image_url_allow_hosts": (),
    "embedding_cache_size": None,
}


class TTEInputsMixin:
    """Input parsing and loading, the reasoning step and its ECR cache, shared by `TTETransformer`
    and `TTEUnifiedTransformer`. A subclass provides ``reasoner``, ``ecr_cache``, the reasoning settings
    (``query_reasoning``, ``document_reasoning``, ``reasoning_task``), calls `_set_input_settings`, sets
    ``gate_step``: the `GateStep` built with its own gate features (`no_trace_embeddings`,
    `text_gate_features`), provides `input_embeddings` (the backbone's, for the text feature's width),
    and calls `attach_model` from its ``on_model_ready``."""

    gate_step: GateStep

    def _per_thread(self) -> PerThreadState:
        state = self.__dict__.get("_thread_state")
        if state is None:
            state = self.__dict__.setdefault("_thread_state", PerThreadState())
        return state

    def _model_lock(self) -> ModelLock:
        lock = self.__dict__.get("_generation_lock")
        if lock is None:
            lock = self.__dict__.setdefault("_generation_lock", ModelLock())
        return lock

    def attach_model(self, model) -> None:
        """Remember (weakly) the `SentenceTransformer` holding this module: the embedder's no-trace
        embedding runs the modules after it too."""
        self._model_ref = ModelRef(model)

    def sentence_transformer(self):
        """The `SentenceTransformer` holding this module (`attach_model`); raises outside one."""
        model = getattr(self, "_model_ref", ModelRef())()
        if model is None:
            raise ValueError(
                f"this {type(self).__name__} is not inside a SentenceTransformer, whose modules make the "
                "no-trace embedding the gate reads; use it through its model (SentenceTransformer(path))."
            )
        return model

    @property
    def last_reasoning(self) -> list[str | None]:
        """Traces of the last batch this thread preprocessed, in that batch's order (``None`` = no
        trace). Per thread: concurrent ``encode`` calls from other threads do not change it."""
        return self._per_thread().last_reasoning

    @last_reasoning.setter
    def last_reasoning(self, traces: list[str | None]) -> None:
        self._per_thread().last_reasoning = traces

    def set_reasoner(self, backend) -> None:
        """Use ``backend`` (an object with ``generate(requests) -> list[str]``) to write the traces."""
        if backend is not None and not callable(getattr(backend, "generate", None)):
            raise TypeError(f"reasoner {type(backend).__name__} has no generate(requests) method.")
        self._reasoner = backend

    def _reasoner_description(self) -> dict[str, Any]:
        """The reasoner's ``describe()`` (or its name): what its traces depend on, in every cache key."""
        backend = self.reasoner
        describe = getattr(backend, "describe", None)
        return describe() if callable(describe) else {"name": getattr(backend, "name", type(backend).__name__)}

    def _reasoner_id(self) -> str:
        return json.dumps(self._reasoner_description(), sort_keys=True, default=str)

    # --- inputs ---------------------------------------------------------------------------------

    def _set_input_settings(self, settings: Mapping[str, Any]) -> None:
        """Set every `INPUT_SETTINGS` attribute from ``settings`` (defaults for those left out)."""
        unknown = sorted(set(settings) - set(INPUT_SETTINGS))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown argument(s) {unknown}.")
        for name, default in INPUT_SETTINGS.items():
            setattr(self, name, settings.get(name, default))

    def _load_options(self) -> dict[str, Any]:
        return {
            "allow_urls": self.allow_image_urls,
            "url_timeout": self.url_timeout,
            "max_url_bytes": self.max_url_bytes,
            "url_allow_hosts": self.image_url_allow_hosts,
            "max_image_pixels": self.max_image_pixels,
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
        }

    def _image(self, source, load: bool = True):
        if not load:
            check_image_source(source, allow_urls=self.allow_image_urls)
            return source
        return load_image(source, **self._load_options())

    def _video(self, frames, load: bool = True):
        if not load:
            if isinstance(frames, (str, bytes)) or not isinstance(frames, Sequence) or not frames:
                raise ValueError("a video must be a non-empty list of frames (PIL images, paths or arrays).")
            for index, frame in enumerate(frames):
                try:
                    check_image_source(frame, allow_urls=self.allow_image_urls)
                except (TypeError, ValueError) as err:
                    raise type(err)(f"video frame {index}: {err}") from err
            return frames
        return load_video(frames, **self._load_options())

    def _parse_input(self, value: Any, load: bool = True) -> ParsedInput:
        if value is None:
            raise TypeError("input is None; pass text, an image or a dict with 'text'/'image'.")
        if isinstance(value, str):
            if not value.strip():
                raise ValueError("input is an empty string.")
            return ParsedInput(text=value, images=[], video=None, reasoning=None, task=None)
        if isinstance(value, os.PathLike) or _is_image_like(value):
            image = self._image(value, load)
            return ParsedInput(text=None, images=[image], video=None, reasoning=None, task=None, loaded=load)
        if isinstance(value, Mapping):
            return self._parse_dict(value, load)
        if isinstance(value, (list, tuple)) and value and all(isinstance(m, Mapping) and "role" in m for m in value):
            return self._parse_conversation(value, load)
        raise TypeError(
            f"unsupported input type {type(value).__name__}; pass text, an image, a dict with "
            f"keys from {INPUT_KEYS} or a chat conversation."
        )

    def _parse_dict(self, value: Mapping, load: bool = True) -> ParsedInput:
        unknown = sorted(set(value) - set(INPUT_KEYS))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}; allowed keys are {INPUT_KEYS}.")
        text = value.get("text")
        if text is not None and not isinstance(text, str):
            raise TypeError(f"'text' must be a string, got {type(text).__name__}.")
        if "image" in value and "images" in value:
            raise ValueError("give either 'image' or 'images', not both.")
        raw_images = value.get("images", value.get("image"))
        if raw_images is None:
            raw_images = []
        elif not isinstance(raw_images, (list, tuple)):
            raw_images = [raw_images]
        images = []
        for index, source in enumerate(raw_images):
            try:
                images.append(self._image(source, load))
            except (TypeError, ValueError) as err:
                raise type(err)(f"image {index}: {err}") from err
        video = self._video(value["video"], load) if value.get("video") is not None else None
        if not (text and text.strip()) and not images and video is None:
            raise ValueError("dict input has no text, image or video.")
        reasoning = value.get("reasoning")
        if reasoning is not None and not isinstance(reasoning, str):
            raise TypeError(f"'reasoning' must be a string, got {type(reasoning).__name__}.")
        task = value.get("task")
        return ParsedInput(text=text, images=images, video=video, reasoning=reasoning, task=task, loaded=load)

    def _parse_conversation(self, messages: Sequence[Mapping], load: bool = True) -> ParsedInput:
        system, user, assistant = None, None, None
        for message in messages:
            role, content = message["role"], message.get("content")
            if role == "system":
                system = content if isinstance(content, str) else _joined_text(content)
            elif role == "user" and user is None:
                user = content
            elif role == "assistant" and assistant is None:
                assistant = content if isinstance(content, str) else _joined_text(content)
            else:
                raise ValueError(f"conversation has an unsupported or repeated {role!r} turn; use one user turn.")
        if user is None:
            raise ValueError("conversation has no user turn.")
        parts = [{"type": "text", "text": user}] if isinstance(user, str) else list(user)
        fields: dict[str, Any] = {"images": []}
        texts = []
        for part in parts:
            kind = part.get("type")
            if kind == "text":
                texts.append(part.get("text") or "")
            elif kind == "image":
                fields["images"].append(part.get("image", part.get("url", part.get("path"))))
            elif kind == "video":
                fields["video"] = part.get("video")
            else:
                raise ValueError(f"conversation content part of type {kind!r} is not supported.")
        if texts:
            fields["text"] = " ".join(t.strip() for t in texts if t.strip())
        if assistant:
            fields["reasoning"] = assistant
        item = self._parse_dict(fields, load)
        item["system"] = system
        return item

    def parse_inputs(self, inputs: Sequence[Any], load: bool = True) -> list[ParsedInput]:
        """Validate every input and (with ``load``) read its images; errors name the input's index
        and the reason. ``load=False`` checks types, keys and files but decodes nothing."""
        items = []
        for index, value in enumerate(inputs):
            try:
                if isinstance(value, ParsedInput):
                    item = value if value.loaded or not load else self._load(value)
                else:
                    item = self._parse_input(value, load)
                    item["index"] = index
            except (TypeError, ValueError) as err:
                where = value.index if isinstance(value, ParsedInput) else index
                raise type(err)(f"Input {where}: {err}") from err
            items.append(item)
        return items

    def _load(self, item: ParsedInput) -> ParsedInput:
        images = []
        for index, source in enumerate(item.images):
            try:
                images.append(self._image(source))
            except (TypeError, ValueError) as err:
                raise type(err)(f"image {index}: {err}") from err
        loaded = ParsedInput(**{**item, "images": images, "loaded": True})
        if item.video is not None:
            loaded["video"] = self._video(item.video)
        return loaded

    # --- the think="auto" gate (run by ``gate_step``) --------------------------------------------

    def gate_feature_dim(self, feature: str = GATE_FEATURE) -> int:
        """Width of the gate's ``feature``: the module's output for the no-trace embedding, the backbone's
        input embeddings (`input_embeddings`) for the text feature, both together for the joint one."""
        if feature == JOINT_FEATURES:
            return self.gate_feature_dim(NO_TRACE_EMBEDDING) + self.gate_feature_dim(TEXT_EMBEDDINGS)
        if feature == TEXT_EMBEDDINGS:
            return self.input_embeddings().embedding_dim
        return self.get_embedding_dimension()

    def _gate_feature_functions(self) -> dict[str, Any]:
        """What `GateStep` computes each feature with: the module's `no_trace_embeddings` and `text_gate_features`."""
        return {NO_TRACE_EMBEDDING: self.no_trace_embeddings, TEXT_EMBEDDINGS: self.text_gate_features}

    @property
    def gate(self) -> ReasoningGate | None:
        """The reasoning gate of ``think="auto"`` (`gate_tte.ReasoningGate`), or ``None``."""
        return self.gate_step.gate

    def set_gate(self, gate: ReasoningGate | None) -> None:
        """Use ``gate`` for ``think="auto"`` (saved with the module: ``gate_config.json`` + ``gate.safetensors``)."""
        self.gate_step.set(gate)

    @property
    def last_gate_decisions(self) -> list[bool] | None:
        """Per row of the last batch this thread preprocessed (that batch's order): did the gate send it
        to the reasoner? ``None`` when the batch ran without the gate (``think`` True or False)."""
        return self.gate_step.last_decisions

    @property
    def last_gate_scores(self) -> list[float] | None:
        """The gate's scores for the rows of `last_gate_decisions` (``None`` without the gate)."""
        return self.gate_step.last_scores

    def gate_features(
        self, inputs: Sequence[Any], prompt: str | None = None, feature: str | None = None
    ) -> torch.Tensor:
        """The gate's (n, d) ``feature`` (a `gate_tte.GATE_FEATURES` value; default: the gate's, else
        `gate_tte.GATE_FEATURE`) for ``inputs`` with instruction ``prompt``: what it reads at run time."""
        return self.gate_step.input_features(self.parse_inputs(list(inputs)), prompt, feature)

    def gate_decisions(
        self, inputs: Sequence[Any] | Any, prompt: str | None = ..., task: str | None = "query"
    ) -> tuple[list[bool], list[float]]:
        """The gate's (think, score) for each input, in input order; ``prompt`` defaults to the one this
        thread last used for ``task``. Raises when the model has no gate."""
        inputs = _as_input_list(inputs)
        if prompt is ...:
            prompt = self._per_thread().prompt_by_task.get(task)
        self.gate_step.rows(self.parse_inputs(inputs), prompt, AUTO)
        return self.gate_step.last_decisions, self.gate_step.last_scores

    # --- reasoning ------------------------------------------------------------------------------

    def _wants_reasoning(self, task: str | None, think: bool | str | None) -> bool | str:
        """True, False or ``"auto"`` (the gate decides per input): ``think`` if given; else the side's
        setting, when a reasoner exists (source ``"off"`` and no runtime backend means no reasoning; an
        explicit ``think=True``, or a row the gate sends to reasoning, then raises)."""
        if think is not None:
            check_mode("think", think)
            return think
        wanted = self.query_reasoning if task == "query" else self.document_reasoning
        return wanted if self.reasoner is not None else False

    def _request(self, item: ParsedInput, instruction: str | None) -> ReasoningRequest:
        return ReasoningRequest(
            text=item.text,
            images=tuple(item.images),
            video=tuple(item.video) if item.video is not None else None,
            instruction=instruction,
            task=item.task or self.reasoning_task,
        )

    def _cache_key(self, reasoner: dict[str, Any], request: ReasoningRequest) -> str:
        return ecr_cache_key(reasoner, request)  # the same scheme as ``tte_hf.reasoning.ECRCache``

    def _traces(
        self,
        items: list[ParsedInput],
        instruction: str | None,
        enabled: bool | list[bool],
        call: dict[str, Any] | None = None,
    ) -> list[str | None]:
        """Each item's trace: its own ``"reasoning"``, else the (cached) reasoner output where ``enabled``
        (for all rows, or per row), else ``None``.

        ``call`` (this call's own dict, never module state, so concurrent calls cannot mix rows)
        receives ``"keys"`` (row -> ECR cache key) and whatever `_generate` hands back besides texts."""
        traces: list[str | None] = [item.reasoning for item in items]
        call = {} if call is None else call
        call["keys"] = {}
        enabled = enabled if isinstance(enabled, list) else [bool(enabled)] * len(items)
        todo = [i for i, item in enumerate(items) if item.reasoning is None and enabled[i]]
        if not todo:
            return traces
        if self.reasoner is None:
            raise ValueError(
                "reasoning is on for these inputs but no reasoner is configured: set reasoning_source, call "
                "set_reasoner(backend), pass think=False, or give each input a 'reasoning' trace."
            )
        reasoner = self._reasoner_description()
        requests = {i: self._request(items[i], instruction) for i in todo}
        keys = {i: self._cache_key(reasoner, requests[i]) for i in todo}
        missing: dict[str, int] = {}
        for i in todo:
            if keys[i] not in self.ecr_cache:
                missing.setdefault(keys[i], i)
        if missing:
            outputs = self._generate([requests[i] for i in missing.values()], call)
            if not isinstance(outputs, (list, tuple)) or len(outputs) != len(missing):
                got = len(outputs) if isinstance(outputs, (list, tuple)) else type(outputs).__name__
                raise ValueError(f"the reasoner returned {got} outputs for {len(missing)} inputs.")
            for i, output in zip(missing.values(), outputs):
                if not isinstance(output, str) or not output.strip():
                    raise ValueError(f"Input {items[i].index}: the reasoner returned no trace ({output!r}).")
            for key, output in zip(missing, outputs):
                self.ecr_cache[key] = output
        for i in todo:
            trace = self._trace_from_output(self.ecr_cache[keys[i]])
            if not trace.strip():
                raise ValueError(f"Input {items[i].index}: the reasoner's output has an empty trace after parsing.")
            traces[i] = trace
        call["keys"] = keys
        return traces

    def _generate(self, requests: list[ReasoningRequest], call: dict[str, Any]) -> list[str]:
        if getattr(self.reasoner, "thread_safe", False):  # e.g. an HTTP client: calls may overlap
            return self.reasoner.generate(requests)
        with self._model_lock():
            return self.reasoner.generate(requests)

    def _trace_from_output(self, raw: str) -> str:
        return parse_ecr(raw).for_embedder(self.trace_mode)

    def get_reasoning(
        self,
        inputs: Sequence[Any] | Any,
        task: str | None = "query",
        prompt: str | None = ...,
        think: bool | str | None = None,
    ) -> list[str | None]:
        """The traces the embedder reads for ``inputs`` (``None`` where it reads none, e.g. where the
        gate skips reasoning under ``think="auto"``), in input order.

        Served from the ECR cache after an ``encode_query``/``encode_document`` call (the reasoner
        runs only for inputs it has not seen). ``prompt`` defaults to the one this thread last used
        for ``task``.
        """
        inputs = _as_input_list(inputs)
        if prompt is ...:
            prompt = self._per_thread().prompt_by_task.get(task)
        items = self.parse_inputs(inputs)
        return self._traces(items, prompt, self.gate_step.rows(items, prompt, self._wants_reasoning(task, think)))

    @property
    def modalities(self) -> list:
        return ["text", "image", "video", "message"]


def _as_input_list(inputs: Any) -> list:
    """``inputs`` as a list of inputs: one input (a chat conversation is a list too) becomes ``[input]``."""
    if not isinstance(inputs, list) or (inputs and isinstance(inputs[0], Mapping) and "role" in inputs[0]):
        return [inputs]
    return inputs


def _is_image_like(value: Any) -> bool:
    module = type(value).__module__.split(".")[0]
    return module in ("PIL", "numpy", "torch") and (hasattr(value, "size") or hasattr(value, "shape"))


def _joined_text(content: Any) -> str:
    if content is None:
        return ""
    return " ".join(part.get("text", "") for part in content if isinstance(part, Mapping))
