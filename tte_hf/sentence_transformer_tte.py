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
flat next to the weights for ``trust_remote_code``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import InputModule, Transformer

from .ecr import parse_ecr, task_prompt
from .inputs import (
    END_OF_TURN,
    build_messages,
    check_image_source,
    embedder_system_prompt,
    embedder_text,
    load_image,
    load_video,
    render_prompt,
)

REASONING_SOURCES = ("off", "transformers", "openai")
_HUB_KEYS = ("token", "cache_dir", "revision", "subfolder", "local_files_only")
INPUT_KEYS = ("text", "image", "images", "video", "reasoning", "task")


@dataclass(frozen=True)
class ReasoningRequest:
    """Same fields as ``tte_hf.reasoning.ReasoningRequest`` (remote code cannot import ``tte_hf``);
    backends read these attributes, so either class works with any `ReasoningBackend`."""

    text: str | None = None
    images: tuple[Any, ...] = ()
    video: tuple[Any, ...] | None = None
    instruction: str | None = None
    task: str = "generic"
    item_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


class ParsedInput(dict):
    """An input validated and loaded (PIL images): ``text``, ``images``, ``video``, ``reasoning``,
    ``task``, ``system``. A dict, so ST's length sort still sees its size; `preprocess` takes it as is."""

    def __init__(
        self, text=None, images=(), video=None, reasoning=None, task=None, system=None, index=None, loaded=True
    ):
        super().__init__(
            text=text,
            images=list(images),
            video=video,
            reasoning=reasoning,
            task=task,
            system=system,
            index=index,
            loaded=loaded,
        )

    text = property(lambda self: self["text"])
    images = property(lambda self: self["images"])
    video = property(lambda self: self["video"])
    reasoning = property(lambda self: self["reasoning"])
    task = property(lambda self: self["task"])
    system = property(lambda self: self["system"])
    #: position in the caller's list, so that errors raised after ST's length sort still name it
    index = property(lambda self: self["index"])
    #: False while ``images``/``video`` still hold the caller's sources (paths, arrays, ...), unread
    loaded = property(lambda self: self["loaded"])


class TransformersReasoner:
    """Minimal reasoner: a VLM checkpoint run with transformers ``generate``, batched, greedy whatever
    the checkpoint's ``generation_config`` says (every decoding setting is passed explicitly).

    The full-featured backends (vLLM, sharding, SQLite cache) live in ``tte_hf.reasoning``; this one
    is kept here so that a Hub repo loaded with ``trust_remote_code`` can reason without ``tte_hf``.
    """

    def __init__(
        self,
        name_or_path: str,
        *,
        max_new_tokens: int = 256,
        device: str | None = None,
        model_kwargs: dict | None = None,
        hub_kwargs: dict | None = None,
    ):
        """``hub_kwargs`` (``revision``, ``token``, ``cache_dir``, ``local_files_only``) locate the checkpoint."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        hub = {k: v for k, v in (hub_kwargs or {}).items() if v is not None}
        revision = hub.get("revision")
        self.name = f"transformers:{name_or_path}" + (f"@{revision}" if revision else "")
        self.max_new_tokens = max_new_tokens
        self.processor = AutoProcessor.from_pretrained(name_or_path, **hub)
        self.processor.tokenizer.padding_side = "left"  # generation appends on the right
        self.model = AutoModelForImageTextToText.from_pretrained(name_or_path, **hub, **(model_kwargs or {})).eval()
        if device is not None:
            self.model.to(device)

    def describe(self) -> dict[str, Any]:
        from .modeling_tte import decoding_settings

        return {
            "name": self.name,
            "max_new_tokens": self.max_new_tokens,
            "do_sample": False,
            "generation": decoding_settings(),
            "eos_token_id": self.model.generation_config.eos_token_id,
        }

    @torch.no_grad()
    def generate(self, requests: Sequence[ReasoningRequest]) -> list[str]:
        from .modeling_tte import decoding_settings

        prompts = [
            render_prompt(
                self.processor,
                build_messages(r.text, len(r.images), bool(r.video), r.instruction, task_prompt(r.task)),
            )
            for r in requests
        ]
        images = [image for r in requests for image in r.images]
        videos = [list(r.video) for r in requests if r.video]
        batch = self.processor(
            text=prompts, images=images or None, videos=videos or None, padding=True, return_tensors="pt"
        ).to(self.model.device)
        sequences = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, **decoding_settings())
        generated = sequences[:, batch["input_ids"].shape[1] :]
        return self.processor.batch_decode(generated, skip_special_tokens=True)


class OpenAIReasoner:
    """Reasoner behind an OpenAI-compatible ``/chat/completions`` endpoint (vLLM serve, TGI, ...).

    Stdlib HTTP so that remote code needs no extra client. Images travel as PNG data URLs; a video as
    its frames. A separate ``reasoning_content`` field (vLLM reasoning parsers) is put back inside
    ``<think>`` tags. The API key is read from the environment variable ``api_key_env``, never saved.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        max_tokens: int = 256,
        timeout: float = 120.0,
        api_key_env: str = "OPENAI_API_KEY",
    ):
        self.base_url, self.model_name = base_url.rstrip("/"), model
        self.max_tokens, self.timeout, self.api_key_env = max_tokens, timeout, api_key_env
        self.name = f"openai:{self.base_url}:{model}"

    thread_safe = True  # stateless HTTP calls: concurrent encodes need not wait for each other

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "max_tokens": self.max_tokens, "temperature": 0}

    def _payload(self, request: ReasoningRequest) -> dict[str, Any]:
        content: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": _png_data_url(image)}}
            for image in [*request.images, *(request.video or ())]
        ]
        words = " ".join(p.strip() for p in (request.instruction, request.text) if p and p.strip())
        if words:
            content.append({"type": "text", "text": words})
        messages = [{"role": "system", "content": task_prompt(request.task)}, {"role": "user", "content": content}]
        return {"model": self.model_name, "messages": messages, "max_tokens": self.max_tokens, "temperature": 0}

    def generate(self, requests: Sequence[ReasoningRequest]) -> list[str]:
        import urllib.error
        import urllib.request

        headers = {"Content-Type": "application/json"}
        if os.environ.get(self.api_key_env):
            headers["Authorization"] = f"Bearer {os.environ[self.api_key_env]}"
        texts = []
        for index, request in enumerate(requests):
            body = json.dumps(self._payload(request)).encode()
            http_request = urllib.request.Request(f"{self.base_url}/chat/completions", body, headers)
            try:
                with urllib.request.urlopen(http_request, timeout=self.timeout) as response:
                    message = json.load(response)["choices"][0]["message"]
            except (urllib.error.URLError, OSError, KeyError, IndexError, ValueError) as err:
                raise RuntimeError(f"reasoner endpoint {self.base_url} failed on request {index}: {err}") from err
            thought, final = message.get("reasoning_content"), message.get("content") or ""
            texts.append(f"<think>{thought}</think>{final}" if thought else final)
        return texts


def _png_data_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _image_digest(image) -> str:
    return hashlib.sha256(f"{image.mode}{image.size}".encode() + image.tobytes()).hexdigest()


class LRUCache(MutableMapping):
    """A thread-safe mapping that keeps at most ``max_entries`` items (``None``: no bound), dropping
    the least recently used; ``evictions`` counts the drops. Used for the embedding cache
    (``embedding_cache_size``) and the unified model's trace token ids."""

    def __init__(self, max_entries: int | None = None):
        if max_entries is not None and max_entries < 1:
            raise ValueError(f"max_entries must be a positive int or None, got {max_entries}.")
        self.max_entries, self.evictions = max_entries, 0
        self._data: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __getitem__(self, key: str) -> Any:
        with self._lock:
            value = self._data[key]
            self._data.move_to_end(key)
            return value

    def __setitem__(self, key: str, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while self.max_entries is not None and len(self._data) > self.max_entries:
                self._data.popitem(last=False)
                self.evictions += 1

    def __delitem__(self, key: str) -> None:
        with self._lock:
            del self._data[key]

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._data

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._data))

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __reduce__(self):  # a lock cannot be copied: deepcopy/pickle give an empty cache of the same size
        return (type(self), (self.max_entries,))


class _PerThread(threading.local):
    """Per-call results that ST's API gives no return path for (`preprocess` hands features to
    `forward`; ``encode`` returns vectors only): each thread sees its own last call."""

    def __init__(self):
        self.last_reasoning: list[str | None] = []
        self.prompt_by_task: dict[str | None, str | None] = {}

    def __reduce__(self):  # copies of a module start with fresh per-thread state
        return (type(self), ())


class _ModelLock:
    """One generation at a time per module: transformers VLMs keep per-generation state on the
    model (Qwen2-VL's ``rope_deltas``), so concurrent ``generate`` calls, or a forward pass during
    one, would read another call's state."""

    def __init__(self):
        self.lock = threading.RLock()

    def __enter__(self):
        self.lock.acquire()

    def __exit__(self, *exc):
        self.lock.release()

    def __reduce__(self):
        return (type(self), ())


class TTEInputsMixin:
    """Input parsing and loading, the reasoning step and its ECR cache, shared by `TTETransformer`
    and `TTEUnifiedTransformer`. Subclasses provide ``reasoner`` and the image settings."""

    def _per_thread(self) -> _PerThread:
        state = self.__dict__.get("_thread_state")
        if state is None:
            state = self.__dict__.setdefault("_thread_state", _PerThread())
        return state

    def _model_lock(self) -> _ModelLock:
        lock = self.__dict__.get("_generation_lock")
        if lock is None:
            lock = self.__dict__.setdefault("_generation_lock", _ModelLock())
        return lock

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

    def _reasoner_id(self) -> str:
        backend = self.reasoner
        describe = getattr(backend, "describe", None)
        info = describe() if callable(describe) else {"name": getattr(backend, "name", type(backend).__name__)}
        return json.dumps(info, sort_keys=True, default=str)

    # --- inputs ---------------------------------------------------------------------------------

    def _load_options(self) -> dict[str, Any]:
        return {
            "allow_urls": self.allow_image_urls,
            "url_timeout": self.url_timeout,
            "max_url_bytes": self.max_url_bytes,
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

    # --- reasoning ------------------------------------------------------------------------------

    def _wants_reasoning(self, task: str | None, think: bool | None) -> bool:
        """``think`` if given; else the side's setting, when a reasoner exists (source ``"off"`` and
        no runtime backend means no reasoning; an explicit ``think=True`` then raises)."""
        if think is not None:
            return bool(think)
        wanted = self.query_reasoning if task == "query" else self.document_reasoning
        return wanted and self.reasoner is not None

    def _request(self, item: ParsedInput, instruction: str | None) -> ReasoningRequest:
        return ReasoningRequest(
            text=item.text,
            images=tuple(item.images),
            video=tuple(item.video) if item.video is not None else None,
            instruction=instruction,
            task=item.task or self.reasoning_task,
        )

    def _cache_key(self, reasoner_id: str, request: ReasoningRequest) -> str:
        blob = json.dumps(
            [
                reasoner_id,
                request.task,
                request.instruction,
                request.text,
                [_image_digest(i) for i in request.images],
                None if request.video is None else [_image_digest(f) for f in request.video],
            ]
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def _traces(
        self, items: list[ParsedInput], instruction: str | None, enabled: bool, call: dict[str, Any] | None = None
    ) -> list[str | None]:
        """Each item's trace: its own ``"reasoning"``, else the (cached) reasoner output, else ``None``.

        ``call`` (this call's own dict, never module state, so concurrent calls cannot mix rows)
        receives ``"keys"`` (row -> ECR cache key) and whatever `_generate` hands back besides texts."""
        traces: list[str | None] = [item.reasoning for item in items]
        call = {} if call is None else call
        call["keys"] = {}
        todo = [i for i, item in enumerate(items) if item.reasoning is None] if enabled else []
        if not todo:
            return traces
        if self.reasoner is None:
            raise ValueError(
                "reasoning is on for these inputs but no reasoner is configured: set reasoning_source, call "
                "set_reasoner(backend), pass think=False, or give each input a 'reasoning' trace."
            )
        reasoner_id = self._reasoner_id()
        requests = {i: self._request(items[i], instruction) for i in todo}
        keys = {i: self._cache_key(reasoner_id, requests[i]) for i in todo}
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
        think: bool | None = None,
    ) -> list[str | None]:
        """The traces the embedder reads for ``inputs`` (``None`` where it reads none), in input order.

        Served from the ECR cache after an ``encode_query``/``encode_document`` call (the reasoner
        runs only for inputs it has not seen). ``prompt`` defaults to the one this thread last used
        for ``task``.
        """
        if not isinstance(inputs, list) or (inputs and isinstance(inputs[0], Mapping) and "role" in inputs[0]):
            inputs = [inputs]
        if prompt is ...:
            prompt = self._per_thread().prompt_by_task.get(task)
        items = self.parse_inputs(inputs)
        return self._traces(items, prompt, self._wants_reasoning(task, think))

    @property
    def modalities(self) -> list:
        return ["text", "image", "video", "message"]

    def on_model_ready(self, model) -> None:
        # ST sorts inputs by length before `preprocess` sees them, so an error raised there could only
        # name a position in a sorted batch; TTESentenceTransformer.encode validates in caller order.
        if type(model) is SentenceTransformer:
            model.__class__ = TTESentenceTransformer


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
            (plain ``encode`` follows ``document_reasoning``); ``think=`` overrides per call.
        reasoning_task: task prompt name for the reasoner (an input's ``"task"`` key overrides it).
        trace_mode: ``"full"`` (thought + final) or ``"final"``, see ``ecr.parse_ecr``.
        max_new_tokens: cap on the trace length of the built-in reasoners.
        system_prompt: system message of the embedder sequence (``None``: none).
        min_pixels / max_pixels: image pixel budget; max_image_pixels: decompression-bomb limit.
        allow_image_urls: fetch ``http(s)`` image URLs (off by default) with ``url_timeout`` and
            ``max_url_bytes`` limits.
        embedding_cache_size: turn on the model's embedding cache with this many entries (LRU);
            ``None``: off (see `TTESentenceTransformer`).
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
        "min_pixels",
        "max_pixels",
        "max_image_pixels",
        "allow_image_urls",
        "url_timeout",
        "max_url_bytes",
        "embedding_cache_size",
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
        query_reasoning: bool = True,
        document_reasoning: bool = False,
        reasoning_task: str = "generic",
        trace_mode: str = "full",
        max_new_tokens: int = 256,
        system_prompt: str | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        max_image_pixels: int = 178_956_970,
        allow_image_urls: bool = False,
        url_timeout: float = 10.0,
        max_url_bytes: int = 20 * 1024 * 1024,
        embedding_cache_size: int | None = None,
        **transformer_kwargs,
    ):
        if reasoning_source not in REASONING_SOURCES:
            raise ValueError(f"reasoning_source={reasoning_source!r} is not one of {REASONING_SOURCES}.")
        if reasoning_source == "transformers" and not reasoner_name_or_path:
            raise ValueError("reasoning_source='transformers' needs reasoner_name_or_path (a VLM checkpoint).")
        if reasoning_source == "openai" and not (reasoner_endpoint and reasoner_model):
            raise ValueError("reasoning_source='openai' needs reasoner_endpoint and reasoner_model.")
        parse_ecr("").for_embedder(trace_mode)  # validates the mode early
        # Qwen2-VL cannot take unpadded (flattened) batches; the pooled token must stay last.
        transformer_kwargs.setdefault("unpad_inputs", False)
        # Where this model was loaded from (ST's `load` passes them in model_kwargs): the bundled reasoner is
        # read from the same repo, revision and cache, and a reasoner repo gets the same token and cache.
        model_kwargs = transformer_kwargs.get("model_kwargs") or {}
        self._hub_kwargs = {k: model_kwargs[k] for k in _HUB_KEYS if model_kwargs.get(k) not in (None, "")}
        super().__init__(model_name_or_path, **transformer_kwargs)
        self.model_name_or_path = model_name_or_path
        self.reasoning_source = reasoning_source
        self.reasoner_name_or_path = reasoner_name_or_path
        self.reasoner_revision = reasoner_revision
        self.reasoner_endpoint = reasoner_endpoint
        self.reasoner_model = reasoner_model
        self.query_reasoning = query_reasoning
        self.document_reasoning = document_reasoning
        self.reasoning_task = reasoning_task
        self.trace_mode = trace_mode
        self.max_new_tokens = max_new_tokens
        self.system_prompt = system_prompt
        self.min_pixels, self.max_pixels, self.max_image_pixels = min_pixels, max_pixels, max_image_pixels
        self.allow_image_urls, self.url_timeout, self.max_url_bytes = allow_image_urls, url_timeout, max_url_bytes
        self._reasoner = None
        self.embedding_cache_size = embedding_cache_size
        #: raw reasoner outputs by input fingerprint; any MutableMapping[str, str] can replace it
        self.ecr_cache: MutableMapping[str, str] = {}

    # --- reasoner -------------------------------------------------------------------------------

    @property
    def reasoner(self):
        """The reasoning backend: the one given to `set_reasoner`, else built from the config on first use."""
        if self._reasoner is None and self.reasoning_source == "transformers":
            device = self.model.device if self.model.device.type != "meta" else None
            path = self._resolve_reasoner_path()
            hub = {k: self._hub_kwargs[k] for k in ("token", "cache_dir", "local_files_only") if k in self._hub_kwargs}
            if not os.path.isdir(path) and self.reasoner_revision:
                hub["revision"] = self.reasoner_revision
            self._reasoner = TransformersReasoner(
                path, max_new_tokens=self.max_new_tokens, device=device, hub_kwargs=hub
            )
        elif self._reasoner is None and self.reasoning_source == "openai":
            self._reasoner = OpenAIReasoner(self.reasoner_endpoint, self.reasoner_model, max_tokens=self.max_new_tokens)
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
        items = self.parse_inputs(inputs)
        self._per_thread().prompt_by_task[task] = prompt
        traces = self._traces(items, prompt, self._wants_reasoning(task, think))
        self.last_reasoning = traces
        texts = self.embedder_texts(items, traces, prompt)
        images = [image for item in items for image in item.images]
        videos = [item.video for item in items if item.video is not None]
        # No truncation: it would cut the end token whose hidden state is the embedding.
        features = dict(
            self.processor(text=texts, images=images or None, videos=videos or None, padding=True, return_tensors="pt")
        )
        features["modality"] = "message"
        return features

    def forward(self, features: dict[str, Any], think: bool | None = None, **kwargs) -> dict[str, Any]:
        return super().forward(features, **kwargs)


class _UnifiedBackboneReasoner:
    """The unified model's own backbone as the reasoner: ``generate`` runs `generate_and_embed` and
    hands each row's embedding (from the hidden states computed while generating) to the module."""

    def __init__(self, module: TTEUnifiedTransformer):
        self.module = module
        self.name = f"unified:{module.model_name_or_path}"

    def describe(self) -> dict[str, Any]:
        from .modeling_tte import decoding_settings

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
        reasoner_id = module._reasoner_id()
        embeddings = {}
        for request, embedding, ids in zip(requests, out.embeddings, out.trace_ids):
            key = module._cache_key(reasoner_id, request)
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
    """

    config_file_name = "tte_unified_config.json"
    config_keys: list[str] = [
        "query_reasoning",
        "document_reasoning",
        "reasoning_task",
        "max_new_tokens",
        "generation_settings",
        "min_pixels",
        "max_pixels",
        "max_image_pixels",
        "allow_image_urls",
        "url_timeout",
        "max_url_bytes",
        "embedding_cache_size",
    ]
    save_in_root = True
    forward_kwargs = {"think"}
    TRACE_TOKEN_CACHE_SIZE = 10_000

    def __init__(
        self,
        model_name_or_path: str,
        *,
        query_reasoning: bool = True,
        document_reasoning: bool = False,
        reasoning_task: str = "generic",
        max_new_tokens: int | None = None,
        generation_settings: dict | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        max_image_pixels: int = 178_956_970,
        allow_image_urls: bool = False,
        url_timeout: float = 10.0,
        max_url_bytes: int = 20 * 1024 * 1024,
        embedding_cache_size: int | None = None,
        model_kwargs: dict | None = None,
        processor_kwargs: dict | None = None,
    ):
        super().__init__()
        from transformers import AutoProcessor

        from .modeling_tte import TTEUnifiedModel, decoding_settings

        self.model = TTEUnifiedModel.from_pretrained(model_name_or_path, **(model_kwargs or {})).eval()
        self.processor = AutoProcessor.from_pretrained(model_name_or_path, **(processor_kwargs or {}))
        self.processor.tokenizer.padding_side = "left"  # generate_and_embed needs left-padded prompts
        self.model_name_or_path = model_name_or_path
        self.query_reasoning, self.document_reasoning = query_reasoning, document_reasoning
        self.reasoning_task = reasoning_task
        self.max_new_tokens = max_new_tokens or self.model.config.max_new_tokens
        #: decoding of the traces: greedy unless this asks otherwise (`modeling_tte.decoding_settings`)
        self.generation_settings = generation_settings
        decoding_settings(**(generation_settings or {}))  # unknown keys fail at load, not at the first query
        self.min_pixels, self.max_pixels, self.max_image_pixels = min_pixels, max_pixels, max_image_pixels
        self.allow_image_urls, self.url_timeout, self.max_url_bytes = allow_image_urls, url_timeout, max_url_bytes
        self.embedding_cache_size = embedding_cache_size
        self._reasoner = _UnifiedBackboneReasoner(self)
        self.ecr_cache: MutableMapping[str, str] = {}
        #: generated trace token ids by cache key: a repeated input re-reads exactly the tokens that were
        #: generated (decoded text need not re-tokenize to them). Bounded (LRU, ``TRACE_TOKEN_CACHE_SIZE``):
        #: an evicted or text-only entry falls back to re-tokenising the trace text.
        self.trace_token_ids: MutableMapping[str, list[int]] = LRUCache(self.TRACE_TOKEN_CACHE_SIZE)

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
            batch = _append_suffixes(batch, suffixes, self.processor.tokenizer.pad_token_id)
        return {k: v.to(self.model.device) for k, v in batch.items()}

    def preprocess(self, inputs, prompt: str | None = None, task: str | None = None, think=None, **kwargs):
        """Reason (generating and embedding at once) where needed; tokenise the rest for `forward`."""
        if not inputs:
            return {}
        items = self.parse_inputs(inputs)
        self._per_thread().prompt_by_task[task] = prompt
        call: dict[str, Any] = {}  # this call's keys and generated embeddings: no module state, no mixing
        traces = self._traces(items, prompt, self._wants_reasoning(task, think), call)
        self.last_reasoning = traces
        generated = call.get("embeddings", {})
        fresh = {i: generated[key] for i, key in call["keys"].items() if key in generated}
        rows = [i for i in range(len(items)) if i not in fresh]
        features: dict[str, Any] = {"batch_size": torch.tensor(len(items))}
        if fresh:
            features["generated_rows"] = torch.tensor(list(fresh))
            features["generated_embeddings"] = torch.stack(list(fresh.values()))
        if rows:
            end_id = self.processor.tokenizer.convert_tokens_to_ids(END_OF_TURN)
            suffixes = []
            for i in rows:
                key = call["keys"].get(i)
                token_ids = self.trace_token_ids.get(key) if key is not None else None
                if token_ids is not None:
                    suffixes.append([*token_ids, end_id])
                else:
                    suffixes.append(
                        self.processor.tokenizer(embedder_text("", traces[i]), add_special_tokens=False).input_ids
                    )
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
            features |= self.process(prompts, [items[i].images for i in rows], [items[i].video for i in rows], suffixes)
            features["forward_rows"] = torch.tensor(rows)
        return features

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
        if getattr(self.model, "loaded_head_only", False):  # a head-only repo stays one (backbone referenced)
            self.model.save_head(output_path)
        else:
            self.model.save_pretrained(output_path, safe_serialization=safe_serialization)
        self.processor.save_pretrained(output_path)
        self.save_config(output_path)

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


class TTESentenceTransformer(SentenceTransformer):
    """The class a `SentenceTransformer` holding a `TTETransformer` gets (set by its ``on_model_ready``).

    ``encode`` (and so ``encode_query``/``encode_document``) validates and loads every input in the
    caller's order first, so a bad input is named by its index in the call, then runs ST's own encode
    on the loaded inputs. `get_reasoning` returns the traces the embedder reads.

    ``embedding_cache`` memoises finished sentence embeddings: a repeated input then costs neither
    reasoning nor the embedder's forward pass. The ECR cache alone removes the reasoner; this removes
    the rest, for query-serving workloads. Off by default; the module's ``embedding_cache_size``
    config value turns it on as an `LRUCache` of that many entries (``model.embedding_cache.clear()``
    empties it, ``.evictions`` counts drops); any mutable mapping can be assigned instead.
    """

    @property
    def embedding_cache(self) -> MutableMapping[str, torch.Tensor] | None:
        """Finished embeddings by fingerprint, or ``None`` (off). The fingerprint covers the input's
        content (image pixels, not paths), prompt, task, ``think``, truncation, normalisation, the
        modules' configs, the reasoner, every parameter's and buffer's storage, version counter and
        float32 norm (so an optimizer step, ``param.data.copy_``, ``load_state_dict`` or ``.to()``
        never serves a stale vector) and the state of PEFT adapter layers (active adapters,
        disabled, merged, scaling). ``encode`` always runs in eval mode (as ST's own), so
        ``.train()``/``.eval()`` do not change a vector. A ``.data`` write that keeps a tensor's
        norm (a permutation, a change below float32 resolution) is not detected: call ``clear()``
        after such surgery. Reading the norms costs one pass over the weights per ``encode`` call."""
        if "_embedding_cache" not in self.__dict__:
            size = getattr(self[0], "embedding_cache_size", None)
            self.__dict__["_embedding_cache"] = LRUCache(size) if size else None
        return self.__dict__["_embedding_cache"]

    @embedding_cache.setter
    def embedding_cache(self, cache: MutableMapping[str, torch.Tensor] | None) -> None:
        self.__dict__["_embedding_cache"] = cache

    def _inference(self, inputs, **kwargs):
        cache = self.embedding_cache
        if cache is None or kwargs.get("output_value") != "sentence_embedding":
            return super()._inference(inputs, **kwargs)
        self.eval()  # as ST's `_inference`: the key is taken in the mode the vectors are computed in
        shared = self._embedding_key_context(kwargs)
        # Each input's images are decoded for its key and dropped; misses are decoded again in
        # `preprocess`, batch by batch, so a large call never holds all its images at once.
        keys = [self._embedding_key(self[0].parse_inputs([item])[0], shared) for item in inputs]
        missing: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in cache:
                missing.setdefault(key, i)
        if missing:
            vectors = super()._inference([inputs[i] for i in missing.values()], **kwargs)
            for key, vector in zip(missing, vectors):
                cache[key] = vector.detach().cpu()
        target = "cpu" if kwargs.get("save_to_cpu") else self._resolve_inference_device(kwargs.get("device"))
        return torch.stack([cache[key] for key in keys]).to(target)

    def _embedding_key_context(self, kwargs: dict[str, Any]) -> str:
        """The part of every key that does not depend on the input: model state, config, call options."""
        module = self[0]
        task, think = kwargs.get("task"), kwargs.get("think")
        reasoner = module._reasoner_id() if module._wants_reasoning(task, think) else None
        options = [kwargs.get(name) for name in ("prompt", "task", "think", "normalize_embeddings", "truncate_dim")]
        configs = [m.get_config_dict() if hasattr(m, "get_config_dict") else type(m).__name__ for m in self]
        config = json.dumps(configs, sort_keys=True, default=str)
        return json.dumps([self._weights_fingerprint(), config, reasoner, options], default=str)

    @torch.no_grad()
    def _weights_fingerprint(self) -> str:
        """Storage, version counter and float32 L2 norm of every parameter and buffer, plus the state
        of adapter layers. The values are read because ``.data`` writes (PEFT merges,
        ``param.data.copy_``) bypass the version counter; one fused norm per device and dtype."""
        digest = hashlib.sha256()
        groups: dict[tuple[str, torch.dtype], list[torch.Tensor]] = {}
        for name, tensor in [*self.named_parameters(), *self.named_buffers()]:
            digest.update(f"{name}:{tensor.data_ptr()}:{tensor._version}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            if tensor.is_floating_point() and tensor.numel():
                groups.setdefault((str(tensor.device), tensor.dtype), []).append(tensor.detach())
        for key in sorted(groups, key=str):
            norms = torch._foreach_norm(groups[key], 2, dtype=torch.float32)  # what clip_grad_norm_ uses
            digest.update(torch.stack(norms).cpu().numpy().tobytes())
        for name, layer in self.named_modules():
            if hasattr(layer, "merged_adapters") and not callable(getattr(layer, "active_adapters", len)):  # PEFT
                state = [
                    list(layer.active_adapters),
                    bool(getattr(layer, "disable_adapters", False)),
                    list(layer.merged_adapters),
                    sorted(getattr(layer, "scaling", {}).items()),
                ]
                digest.update(f"{name}:{json.dumps(state, default=str)};".encode())
        return digest.hexdigest()

    @staticmethod
    def _embedding_key(item: ParsedInput, context: str) -> str:
        content = [
            item.text,
            [_image_digest(image) for image in item.images],
            None if item.video is None else [_image_digest(frame) for frame in item.video],
            item.reasoning,
            item.task,
            item.system,
        ]
        return hashlib.sha256(json.dumps([context, content], default=str).encode()).hexdigest()

    def encode(self, inputs=None, *args, **kwargs):
        if inputs is None and "sentences" in kwargs:
            inputs = kwargs.pop("sentences")
        module = self[0]
        if self.is_singular_input(inputs):
            return super().encode(module.parse_inputs([inputs], load=False)[0], *args, **kwargs)
        # Images are read batch by batch later (in `preprocess`); errors there still name the index.
        return super().encode(module.parse_inputs(list(inputs), load=False), *args, **kwargs)

    def get_reasoning(
        self,
        inputs,
        prompt_name: str | None = None,
        prompt: str | None = None,
        task: str | None = "query",
        think: bool | None = None,
    ) -> list[str | None]:
        """The traces the embedder reads for ``inputs`` with ``task``'s prompt (as ``encode_query``
        uses it), in input order; ``None`` where it reads none. Cached inputs are not regenerated."""
        if prompt_name is None and prompt is None and task in self.prompts:
            prompt_name = task
        prompt = self._resolve_prompt(prompt, prompt_name)
        return self[0].get_reasoning(inputs, task=task, prompt=prompt, think=think)


def _append_suffixes(batch: dict, suffixes: list[list[int]], pad_id: int) -> dict:
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


def _config_model_type(name_or_path: str, hub_kwargs: dict[str, Any]) -> str | None:
    """``model_type`` of the checkpoint's ``config.json`` (local folder or Hub repo), or None."""
    from transformers import PretrainedConfig

    try:
        config, _ = PretrainedConfig.get_config_dict(name_or_path, **hub_kwargs)
    except OSError:
        return None
    return config.get("model_type")


def _is_image_like(value: Any) -> bool:
    module = type(value).__module__.split(".")[0]
    return module in ("PIL", "numpy", "torch") and (hasattr(value, "size") or hasattr(value, "shape"))


def _joined_text(content: Any) -> str:
    if content is None:
        return ""
    return " ".join(part.get("text", "") for part in content if isinstance(part, Mapping))
