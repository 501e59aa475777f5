"""On-disk cache of a frozen backbone's hidden states, one safetensors file per input.

The unified model's backbone is frozen, so the hidden states its head reads never change: computing
them once and reading them back in later epochs skips the backbone entirely. They do change with the
backbone's weights, its dtype and attention kernel, the layer read, the tokenizer and image processor,
and the inputs' content: `cache_fingerprint` names all of these, and each fingerprint gets its own
folder, so runs that share ``hidden_cache_dir`` never read each other's states. Entry keys hash the
input's text and its images' bytes (`tte_hf.training.head_module.input_key`), not their paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from ..models.tte.fingerprints import files_digest, weights_digest

# 2: entries hold the backbone's RoPE positions beside the hidden states.
CACHE_FORMAT = 2
FINGERPRINT_FILE = "fingerprint.json"


def backbone_fingerprint(name_or_path: str | os.PathLike, revision: str | None = None) -> dict[str, str]:
    """What identifies a checkpoint's content: a Hub repo id + the commit its files come from, or, for a
    local folder, a digest of every file in it (weights, configs, tokenizer, processor)."""
    path = Path(name_or_path)
    if not path.is_dir():
        from transformers.utils import cached_file

        path = Path(cached_file(str(name_or_path), "config.json", revision=revision)).parent
        if re.fullmatch(r"[0-9a-f]{40}", path.name):  # the Hub cache's snapshots/<commit>/ folder
            return {"repo_id": str(name_or_path), "commit": path.name}
    return {"files_sha256": files_digest(p for p in path.iterdir() if p.is_file())}


def processor_fingerprint(processor) -> str:
    """Digest of the processor's settings (image/video processors) and its tokenizer."""
    digest = hashlib.sha256(processor.to_json_string().encode())
    tokenizer = getattr(processor, "tokenizer", None)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    elif tokenizer is not None:
        digest.update(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode())
    return digest.hexdigest()


def cache_fingerprint(unified, processor, name_or_path: str | os.PathLike) -> dict[str, Any]:
    """Everything besides the input that determines the hidden states a `TTEUnifiedModel`'s head reads.

    ``backbone`` names the checkpoint (its config included); ``weights`` is the backbone as held in
    memory, which is what computes the states even where it no longer matches ``name_or_path``."""
    backbone = unified.backbone
    return {
        "format": CACHE_FORMAT,
        "backbone": backbone_fingerprint(name_or_path),
        "weights": weights_digest(backbone),
        "dtype": str(backbone.dtype),
        "attn_implementation": backbone.config._attn_implementation,
        "layer": unified.head.reads_layer,
        "processor": processor_fingerprint(processor),
    }


class HiddenStateCache:
    """``get(key)`` -> ``(hidden, position_ids)`` of one unpadded row, ``(seq, hidden)`` and ``(3, seq)``,
    or ``None``; ``put(key, hidden, position_ids)`` stores them (the positions are the backbone's
    multimodal RoPE positions, which the MHSA head runs its layers with).

    ``fingerprint`` (see `cache_fingerprint`) picks the folder under ``directory``: a different
    backbone, dtype, layer or processor is a different folder. It is written there as JSON, for people.
    """

    def __init__(self, directory: str | os.PathLike, fingerprint: dict[str, Any]):
        text = json.dumps(fingerprint, sort_keys=True)
        self.directory = Path(directory) / hashlib.sha256(text.encode()).hexdigest()[:24]
        self.directory.mkdir(parents=True, exist_ok=True)
        manifest = self.directory / FINGERPRINT_FILE
        if not manifest.is_file():
            tmp = manifest.with_name(f"{manifest.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(fingerprint, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, manifest)
        self.hits = self.misses = 0

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.safetensors"

    def __contains__(self, key: str) -> bool:
        return self._path(key).is_file()

    def get(self, key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        from safetensors.torch import load_file

        path = self._path(key)
        if not path.is_file():
            self.misses += 1
            return None
        self.hits += 1
        entry = load_file(path)
        return entry["hidden"], entry["position_ids"]

    def put(self, key: str, hidden: torch.Tensor, position_ids: torch.Tensor) -> None:
        from safetensors.torch import save_file

        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        entry = {"hidden": hidden, "position_ids": position_ids}
        save_file({name: t.detach().cpu().contiguous() for name, t in entry.items()}, tmp)
        os.replace(tmp, path)  # atomic: a killed run never leaves a half-written entry
