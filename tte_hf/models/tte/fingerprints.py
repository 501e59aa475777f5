"""Content fingerprints: of an image's pixels, and of a reasoning request (the ECR cache key).

One scheme for every trace cache: the SQLite `tte_hf.reasoning.ECRCache` of ``generate-ecr`` and the
sentence-transformers module's in-memory ECR cache key alike with `ecr_cache_key`. Self-contained
(standard library and sibling files): shipped next to the weights for ``trust_remote_code``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .ecr import PROMPT_VERSION, task_prompt


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
