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

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from .fingerprints import image_digest, weights_state_key
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
    on the loaded inputs. `get_reasoning` returns the traces the embedder reads.

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
        items = module.parse_inputs(list(inputs), load=False)
        if not args and len(items) > 1 and module._wants_reasoning(kwargs.get("task"), kwargs.get("think")) == "auto":
            return self._encode_gated(items, kwargs)
        return super().encode(items, *args, **kwargs)

    def _encode_gated(self, items: list, kwargs: dict[str, Any]):
        """``think="auto"`` over a whole call: the gate decides for every input first (from its prompt's
        tokens: no processor, vision tower or decoder), then the inputs it sends to the reasoner are
        encoded together and the others without a trace. Batched decoding costs per step as well as per
        row, so packing the reasoned inputs into full batches is what turns skipped inputs into saved
        time. Each input's vector is the one its mode gives on its own."""
        task = kwargs.get("task")
        prompt_name, prompt = kwargs.get("prompt_name"), kwargs.get("prompt")
        think, scores = self.gate_decisions(items, prompt_name, prompt, task, kwargs.get("batch_size") or 32)
        groups = {True: [i for i, t in enumerate(think) if t], False: [i for i, t in enumerate(think) if not t]}
        parts = {}
        for mode, rows in groups.items():
            if rows:
                parts[mode] = super().encode([items[i] for i in rows], **{**kwargs, "think": mode})
        self[0].gate_step.remember(think, scores)
        order = [(mode, position) for mode in (True, False) for position in range(len(groups[mode]))]
        by_input = [None] * len(items)
        for (mode, position), index in zip(order, groups[True] + groups[False]):
            by_input[index] = (mode, position)
        first = next(iter(parts.values()))
        if isinstance(first, torch.Tensor):
            return torch.stack([parts[mode][position] for mode, position in by_input])
        if isinstance(first, np.ndarray):
            return np.stack([parts[mode][position] for mode, position in by_input])
        return [parts[mode][position] for mode, position in by_input]

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
        return self[0].get_reasoning(inputs, task=task, prompt=prompt, think=think)

    def gate_features(
        self,
        inputs,
        prompt_name: str | None = None,
        prompt: str | None = None,
        task: str | None = "query",
        batch_size: int = 32,
    ) -> torch.Tensor:
        """The reasoning gate's (n, d) features for ``inputs`` with ``task``'s prompt, in input order: what
        the gate reads in ``encode_query(inputs, think="auto")`` and what ``tte-hf train-gate`` fits it on."""
        prompt = self._task_prompt(prompt_name, prompt, task)
        inputs = list(inputs)
        return torch.cat([self[0].gate_features(inputs[i : i + batch_size], prompt) for i in range(0, len(inputs), batch_size)])  # fmt: skip

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
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) and not self.is_singular_input(inputs) else [inputs]
        think: list[bool] = []
        scores: list[float] = []
        for start in range(0, len(inputs), batch_size):
            decided = module.gate_decisions(inputs[start : start + batch_size], prompt=prompt, task=task)
            think += decided[0]
            scores += decided[1]
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
