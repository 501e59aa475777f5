"""Content digests of files, shared by the caches and resume records that key on what is on disk."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def files_digest(paths: Iterable[str | os.PathLike]) -> str:
    """sha256 over files' names and contents, in name order (a checkpoint folder's content)."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(f"{path.name}\0{file_digest(path)}\0".encode())
    return digest.hexdigest()
