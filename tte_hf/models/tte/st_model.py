"""The `SentenceTransformer` subclass a model holding a TTE module becomes: caller-order input checks,
the embedding cache, and saving with the module code next to the weights.

Self-contained (stdlib, torch, transformers, sentence_transformers and sibling files): shipped next to
the weights for ``trust_remote_code``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import truncate_embeddings

from .fingerprints import image_digest, weights_state_key
from .gate_tte import AUTO, JOINT_FEATURES, TEXT_EMBEDDINGS
from .st_state import LRUCache

if TYPE_CHECKING:
    from .st_input_types import ParsedInput

#: The file ``modules.json`` names for a TTE module (``sentence_transformer_tte.TTETransformer``): a
#: stable entry point that re-exports the module classes, shipped with every sibling it imports.
ENTRY_FILE = "sentence_transformer_tte.py"


class TTESentenceTransformer(SentenceTransformer):
    """The class of a `SentenceTransformer` holding a TTE module: `build_sentence_transformer` builds
    one, and a saved model loaded with ``SentenceTransformer(path)`` becomes one (`use_tte_model_class`,
    from the TTE module's ``on_model_ready``).

    ``encode`` (and so ``encode_query``/``encode_document``) validates and loads every input in the
    caller's order first, so a bad input is named by its index in the call, then runs ST's own encode
    on the loaded inputs. `get_reasoning` returns the traces the embedder reads. ``think="auto"`` is run
    here, over a whole call (`_gated_inference`): the gate decides for every input, and the inputs it
    sends to the reasoner are encoded together.

    ``embedding_cache`` memoises finished sentence embeddings: a repeated input then costs neither
    reasoning nor the embedder's forward pass. The ECR cache alone removes the reasoner; this removes
    the rest, for query-serving workloads. Off by default; the module's ``embedding_cache_size``
    config value turns it on as an `LRUCache` of that many entries (``model.embedding_cache.clear()``
    empties it, ``.evictions`` counts drops); any mutable mapping can be assigned instead.

    ``save`` writes the TTE modules' class paths as ``sentence_transformer_tte.<Class>`` and copies that
    file with every sibling it imports next to them, so the folder loads with ``trust_remote_code``
    where ``tte_hf`` is not installed, whether the classes came from ``tte_hf`` or from a repo's code.
    """

    def save(self, path: str, *args, **kwargs) -> None:
        super().save(path, *args, **kwargs)
        ship_module_code(self, path)

    @property
    def embedding_cache(self) -> MutableMapping[str, torch.Tensor] | None:
        """Finished embeddings by fingerprint, or ``None`` (off). The fingerprint covers the input's
        content (image pixels, not paths), prompt, task, ``think``, truncation, normalisation, the
        modules' configs, the reasoner, and the weights' state (`fingerprints.weights_state_key`):
        every parameter's and buffer's storage, version counter, dtype, shape and device (so an
        optimizer step, an in-place write under ``no_grad``, ``load_state_dict`` or ``.to()`` never
        serves a stale vector), the state of PEFT adapter layers (active adapters, disabled, merged,
        scaling) and a sample of the values, every ``PROBE_STRIDE``-th (1024th) element of each
        tensor, for writes through ``.data`` (``param.data.copy_``), which bypass the version counter.
        Such a write is seen when it changes a sampled element, as any changed run of 1024 consecutive
        elements does (a whole tensor, an embedding row of a model 1024 or more wide); after smaller
        ``.data`` surgery call ``clear()``. So the key reads one weight in 1024 per ``encode`` call,
        not all of them. ``encode`` always runs in eval mode (as ST's own), so ``.train()`` and
        ``.eval()`` do not change a vector. Keys hold storage addresses: they hit within one process."""
        if "_embedding_cache" not in self.__dict__:
            size = getattr(self[0], "embedding_cache_size", None)
            self.__dict__["_embedding_cache"] = LRUCache(size) if size else None
        return self.__dict__["_embedding_cache"]

    @embedding_cache.setter
    def embedding_cache(self, cache: MutableMapping[str, torch.Tensor] | None) -> None:
        self.__dict__["_embedding_cache"] = cache

    def _inference(self, inputs, **kwargs):
        module = self[0]
        module.attach_model(self)  # a pickled or copied model's module may have lost it
        gated = module._wants_reasoning(kwargs.get("task"), kwargs.get("think")) == AUTO
        if gated and inputs and kwargs.get("output_value") == "sentence_embedding":
            return self._gated_inference(inputs, kwargs)
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

    def _gated_inference(self, inputs: list, kwargs: dict[str, Any]) -> torch.Tensor:
        """``think="auto"`` over a whole call: the gate decides for every input first, then the inputs it
        sends to the reasoner are encoded together with ``think=True``. Batched decoding costs per step
        as well as per row, so packing the reasoned inputs into full batches is what turns skipped inputs
        into saved time. Each input's vector is the one its mode gives on its own.

        A gate on the no-trace embedding reads the vectors of one ``think=False`` pass over the call (at
        full width: ``truncate_dim`` and ``normalize_embeddings`` are applied after it), and a skipped
        input returns its vector from that pass: it costs what ``think=False`` costs, a reasoned one one
        pass more than ``think=True``. A gate on the text feature reads no pass of the model, and its
        skipped inputs are then encoded with ``think=False``."""
        step = self[0].gate_step
        gate = step.require_gate()
        no_trace = text = None
        if gate.feature in (TEXT_EMBEDDINGS, JOINT_FEATURES):
            text = self._batched_gate_features(inputs, kwargs.get("prompt"), kwargs.get("batch_size") or 32, TEXT_EMBEDDINGS)  # fmt: skip
        if step.reads_embeddings:
            plain = {**kwargs, "think": False, "truncate_dim": None, "normalize_embeddings": False}
            no_trace = self._inference(inputs, **plain)
        think, scores = gate.decide(text if no_trace is None else step.with_embeddings(no_trace, text))
        vectors: dict[int, torch.Tensor] = {}
        for mode in (True, False):
            rows = [i for i, reasons in enumerate(think) if reasons == mode]
            if not rows:
                continue
            if mode or no_trace is None:
                vectors.update(zip(rows, self._inference([inputs[i] for i in rows], **{**kwargs, "think": mode})))
            else:  # as ST's `_inference` finishes a think=False vector
                skipped = truncate_embeddings(no_trace[rows], kwargs.get("truncate_dim"))
                if kwargs.get("normalize_embeddings"):
                    skipped = torch.nn.functional.normalize(skipped, p=2, dim=1)
                vectors.update(zip(rows, skipped))
        step.remember(think, scores)
        return torch.stack([vectors[i] for i in range(len(inputs))])

    def _batched_gate_features(self, inputs: list, prompt: str | None, batch_size: int, feature: str | None) -> torch.Tensor:  # fmt: skip
        """The gate ``feature`` of ``inputs`` with ``prompt`` as given, ``batch_size`` inputs parsed at a time."""
        chunks = [inputs[start : start + batch_size] for start in range(0, len(inputs), batch_size)]
        return torch.cat([self[0].gate_features(chunk, prompt, feature) for chunk in chunks])

    def _embedding_key_context(self, kwargs: dict[str, Any]) -> str:
        """The part of every key that does not depend on the input: model state, config, call options."""
        module = self[0]
        task, think = kwargs.get("task"), kwargs.get("think")
        reasoner = module._reasoner_id() if module._wants_reasoning(task, think) else None
        options = [kwargs.get(name) for name in ("prompt", "task", "think", "normalize_embeddings", "truncate_dim")]
        configs = [m.get_config_dict() if hasattr(m, "get_config_dict") else type(m).__name__ for m in self]
        config = json.dumps(configs, sort_keys=True, default=str)
        return json.dumps([weights_state_key(self), config, reasoner, options], default=str)

    @staticmethod
    def _embedding_key(item: ParsedInput, context: str) -> str:
        content = [
            item.text,
            [image_digest(image) for image in item.images],
            None if item.video is None else [image_digest(frame) for frame in item.video],
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

    def _task_prompt(self, prompt_name: str | None, prompt: str | None, task: str | None) -> str | None:
        """The prompt ``encode_query``/``encode_document`` would use: explicit, named, else the task's own."""
        if prompt_name is None and prompt is None and task in self.prompts:
            prompt_name = task
        return self._resolve_prompt(prompt, prompt_name)

    def get_reasoning(
        self,
        inputs,
        prompt_name: str | None = None,
        prompt: str | None = None,
        task: str | None = "query",
        think: bool | str | None = None,
    ) -> list[str | None]:
        """The traces the embedder reads for ``inputs`` with ``task``'s prompt (as ``encode_query``
        uses it), in input order; ``None`` where it reads none (``think="auto"``: where the gate skips). Cached inputs are not regenerated."""
        prompt = self._task_prompt(prompt_name, prompt, task)
        self[0].attach_model(self)
        return self[0].get_reasoning(inputs, task=task, prompt=prompt, think=think)

    def gate_features(
        self,
        inputs,
        prompt_name: str | None = None,
        prompt: str | None = None,
        task: str | None = "query",
        batch_size: int = 32,
        feature: str | None = None,
    ) -> torch.Tensor:
        """The reasoning gate's (n, d) ``feature`` (a `gate_tte.GATE_FEATURES` value; default: the gate's,
        else `gate_tte.GATE_FEATURE`) for ``inputs`` with ``task``'s prompt, in input order: what the gate
        reads in ``encode_query(inputs, think="auto")``."""
        prompt = self._task_prompt(prompt_name, prompt, task)
        self[0].attach_model(self)
        return self._batched_gate_features(list(inputs), prompt, batch_size, feature)

    def gate_decisions(
        self,
        inputs,
        prompt_name: str | None = None,
        prompt: str | None = None,
        task: str | None = "query",
        batch_size: int = 32,
    ) -> tuple[list[bool], list[float]]:
        """The reasoning gate's decisions (True: reason) and scores for ``inputs`` with ``task``'s prompt,
        in input order: what ``encode_query(inputs, think="auto")`` does with each (also kept, for the
        last such call of this thread, in ``model[0].last_gate_decisions`` / ``last_gate_scores``).
        Needs a gate (``tte-hf train-gate``)."""
        prompt = self._task_prompt(prompt_name, prompt, task)
        module = self[0]
        module.attach_model(self)
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) and not self.is_singular_input(inputs) else [inputs]
        think: list[bool] = []
        scores: list[float] = []
        for start in range(0, len(inputs), batch_size):
            decided = module.gate_decisions(inputs[start : start + batch_size], prompt=prompt, task=task)
            think += decided[0]
            scores += decided[1]
        module.gate_step.remember(think, scores)  # the whole call's, not its last batch's
        return think, scores


def use_tte_model_class(model: SentenceTransformer) -> None:
    """Make a plain `SentenceTransformer` holding a TTE module a `TTESentenceTransformer`: ST sorts inputs
    by length before the module's ``preprocess`` sees them, so an error raised there could only name a
    position in a sorted batch; `TTESentenceTransformer.encode` validates in caller order first.

    A saved model is loaded by ST's own class, which builds the modules and then calls each one's
    ``on_model_ready`` hook, the only place a loaded model can be adopted: the TTE modules call this
    there. A subclass of `SentenceTransformer` (the caller's own) is left as it is."""
    if type(model) is SentenceTransformer:
        model.__class__ = TTESentenceTransformer


def ship_module_code(model: SentenceTransformer, path: str) -> None:
    """Point ``modules.json`` at ``sentence_transformer_tte.<Class>`` for every module whose class is
    defined next to that file (in ``tte_hf`` or in a repo's code) and copy the file and its relative
    imports into that module's folder."""
    from transformers.dynamic_module_utils import get_relative_import_files

    modules_file = os.path.join(path, "modules.json")
    with open(modules_file, encoding="utf8") as handle:
        entries = json.load(handle)
    changed = False
    for entry, module in zip(entries, model):
        cls = type(module)
        folder = os.path.dirname(os.path.abspath(getattr(sys.modules.get(cls.__module__), "__file__", None) or ""))
        entry_file = os.path.join(folder, ENTRY_FILE)
        if not os.path.isfile(entry_file):
            continue
        target = os.path.join(path, entry["path"])
        for source in [entry_file, *get_relative_import_files(entry_file)]:
            destination = os.path.join(target, os.path.basename(source))
            if not (os.path.exists(destination) and os.path.samefile(source, destination)):
                shutil.copyfile(source, destination)
        entry["type"] = f"{ENTRY_FILE[: -len('.py')]}.{cls.__name__}"
        changed = True
    if changed:
        with open(modules_file, "w", encoding="utf8") as handle:
            json.dump(entries, handle, indent=2)
