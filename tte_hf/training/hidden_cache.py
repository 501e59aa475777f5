"""On-disk cache of a frozen backbone's hidden states, one safetensors file per input.

The unified model's backbone is frozen, so the hidden states its head reads never change: computing
them once and reading them back in later epochs skips the backbone entirely.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


class HiddenStateCache:
    """``get(key)`` -> ``(hidden, position_ids)`` of one unpadded row, ``(seq, hidden)`` and ``(3, seq)``,
    or ``None``; ``put(key, hidden, position_ids)`` stores them (the positions are the backbone's
    multimodal RoPE positions, which the MHSA head runs its layers with)."""

    def __init__(self, directory: str | os.PathLike, namespace: str):
        self.directory = Path(directory) / namespace
        self.directory.mkdir(parents=True, exist_ok=True)
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
