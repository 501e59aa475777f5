"""Every content fingerprint of the project, in one place: of payloads, files, images, reasoning
requests and model weights.

Users: the ECR cache key (`ecr_cache_key`: ``generate-ecr``'s SQLite cache and the sentence-transformers
module's in-memory ECR cache), the embedding cache of `TTESentenceTransformer` (`weights_state_key`),
the hidden-state cache of unified head training and the resume record of ``tte-hf eval``
(`weights_digest`, `files_digest`, `json_digest`), the training collator's input keys (`file_digest`).
Self-contained (standard library, torch and sibling files; torch only imported by the weight functions):
shipped next to the weights for ``trust_remote_code``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .ecr import PROMPT_VERSION, task_prompt

if TYPE_CHECKING:
    import torch

#: `weights_state_key` reads every PROBE_STRIDE-th element of each tensor (and its last one).
PROBE_STRIDE = 1024


# --- payloads and files -------------------------------------------------------------------------


def json_digest(payload: Any, length: int = 16) -> str:
    """The first ``length`` hex digits of the sha256 of ``payload`` as canonical JSON (sorted keys;
    what JSON cannot write, as ``str``)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:length]


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


# --- images and reasoning requests --------------------------------------------------------------


def update_with_image(digest, image) -> None:
    """Feed a PIL image's mode, size and pixels to the hashlib object ``digest``."""
    digest.update(f"{image.mode}:{image.size}".encode())
    digest.update(image.tobytes())


def image_digest(image) -> str:
    """sha256 hex digest of a PIL image's mode, size and pixels (not of its file or path)."""
    digest = hashlib.sha256()
    update_with_image(digest, image)
    return digest.hexdigest()


def ecr_cache_key(reasoner: dict[str, Any], request) -> str:
    """The hex key of a `ReasoningRequest` answered by a reasoner described by ``reasoner`` (its
    ``describe()``): the description, the prompt version and the task's prompt text, the task, the
    instruction, the text, and the pixels of every image and video frame. ``item_id`` is not content."""
    digest = hashlib.sha256()
    head = {
        "reasoner": reasoner,
        "prompt_version": PROMPT_VERSION,
        "prompt": task_prompt(request.task),
        "task": request.task,
        "instruction": request.instruction,
        "text": request.text,
        "images": len(request.images),
        "video": None if request.video is None else len(request.video),
    }
    digest.update(json.dumps(head, sort_keys=True, default=str).encode())
    for image in (*request.images, *(request.video or ())):
        update_with_image(digest, image)
    return digest.hexdigest()


# --- model weights ------------------------------------------------------------------------------


def adapter_state(module: torch.nn.Module) -> list[list[Any]]:
    """Per PEFT adapter layer: its name, active adapters, whether adapters are disabled, the merged
    ones and their scaling. None of it is in the weights (a merge writes through ``.data``)."""
    state = []
    for name, layer in module.named_modules():
        if hasattr(layer, "merged_adapters") and not callable(getattr(layer, "active_adapters", len)):
            state.append(
                [
                    name,
                    list(layer.active_adapters),
                    bool(getattr(layer, "disable_adapters", False)),
                    list(layer.merged_adapters),
                    sorted(getattr(layer, "scaling", {}).items()),
                ]
            )
    return state


def weights_digest(module: torch.nn.Module) -> str:
    """16 hex digits of the sha256 of every tensor of ``module.state_dict()`` (name, dtype, shape,
    bytes), as the module holds them now, and of its PEFT adapter state (`adapter_state`), if any.

    Exact and stable across processes (the resume record of an evaluation, the hidden-state cache's
    folder), so it reads every weight once: a 7B model takes tens of seconds.
    """
    import torch

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            tensor = tensor.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)};".encode())
            digest.update(memoryview(tensor.view(torch.uint8).numpy()))
    adapters = adapter_state(module)
    if adapters:  # absent without PEFT: digests of plain models are what they have always been
        digest.update(json.dumps(adapters, default=str).encode())
    return digest.hexdigest()[:16]


def weights_state_key(module: torch.nn.Module) -> str:
    """A key that changes whenever the values of ``module``'s parameters and buffers may have changed,
    without reading them all: valid within this process only (it holds storage addresses).

    Per tensor: name, storage address, version counter, dtype, shape and device, which an optimizer
    step, an in-place write under ``no_grad``, ``load_state_dict``, ``.to()`` and ``param.data = x``
    all change; plus `adapter_state`. Writes through ``.data`` (``param.data.copy_``, PEFT merges)
    bypass the version counter, so every `PROBE_STRIDE`-th element of each tensor and its last one are
    read too: such a write is seen when it changes one of them, which any changed run of
    `PROBE_STRIDE` or more consecutive elements does. PyTorch has no cheaper signal of ``.data`` writes.
    """
    import torch

    digest = hashlib.sha256()
    probes: dict[tuple[str, str], list[torch.Tensor]] = {}
    with torch.no_grad():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            digest.update(f"{name}:{tensor.data_ptr()}:{tensor._version}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(f":{tensor.device};".encode())
            if tensor.numel() and tensor.device.type != "meta":
                # reshape is a view for the contiguous tensors modules hold (else one copy of this tensor)
                flat = tensor.detach().reshape(-1)
                probes.setdefault((str(tensor.device), str(tensor.dtype)), []).extend([flat[::PROBE_STRIDE], flat[-1:]])
        for key in sorted(probes):  # one gather and one transfer per device and dtype
            sample = torch.cat(probes[key]).cpu()
            digest.update(memoryview(sample.view(torch.uint8).numpy()))
    digest.update(json.dumps(adapter_state(module), default=str).encode())
    return digest.hexdigest()
