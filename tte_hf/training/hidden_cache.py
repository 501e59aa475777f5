"""On-disk cache of a frozen backbone's hidden states, one safetensors file per input.

The unified model's backbone is frozen, so the hidden states its head reads never change: computing
them once and reading them back in later epochs skips the backbone entirely.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


class HiddenStateCache:
    """``get(key)`` -> ``(seq, hidden)`` tensor or ``None``; ``put(key, tensor)`` stores an unpadded row."""

    def __init__(self, directory: str | os.PathLike, namespace: str):
        self.directory = Path(directory) / namespace
        self.directory.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = 0

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.safetensors"

    def __contains__(self, key: str) -> bool:
        return self._path(key).is_file()

    def get(self, key: str) -> torch.Tensor | None:
        from safetensors.torch import load_file

        path = self._path(key)
        if not path.is_file():
            self.misses += 1
            return None
        self.hits += 1
        return load_file(path)["hidden"]

    def put(self, key: str, hidden: torch.Tensor) -> None:
        from safetensors.torch import save_file

        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        save_file({"hidden": hidden.detach().cpu().contiguous()}, tmp)
        os.replace(tmp, path)  # atomic: a killed run never leaves a half-written entry
