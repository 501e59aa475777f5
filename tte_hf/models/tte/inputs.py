"""From a user's input to the chat sequence the reasoner generates from and the embedder reads.

The one rule of TTE's data flow lives here: the embedder's input is the reasoner's own generation
sequence — the prompt with the generation cue, then the ECR trace as the assistant turn, then the end
token. The embedding is the hidden state of that end token. Without a trace the assistant turn is
empty. Reasoner, embedder and unified model all build their text with these functions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

END_OF_TURN = "<|im_end|>"
# MMEB (train and eval) marks where an image goes with Phi-3-V's tags such as <|image_1|>.
_PHI3_IMAGE_TAG = re.compile(r"<\|image_\d+\|>")


def strip_image_tags(text: str) -> str:
    """``text`` without Phi-3-V image tags (``<|image_1|>``, as MMEB writes them) and outer spaces: the
    chat messages place the images themselves (`build_messages`)."""
    return _PHI3_IMAGE_TAG.sub("", text).strip()


def build_messages(
    text: str | None = None,
    num_images: int = 0,
    has_video: bool = False,
    instruction: str | None = None,
    system: str | None = None,
) -> list[dict[str, Any]]:
    """Chat messages for one input: optional system prompt, then a user turn with the visual
    placeholders first and ``instruction`` + ``text`` after them (the VLM2Vec / GME order)."""
    content: list[dict[str, Any]] = [{"type": "image"} for _ in range(num_images)]
    if has_video:
        content.append({"type": "video"})
    words = " ".join(part.strip() for part in (instruction, text) if part and part.strip())
    if words:
        content.append({"type": "text", "text": words})
    if not content:
        raise ValueError("An input needs text, an image or a video; got none.")
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": content})
    return messages


def embedder_system_prompt(task: str | None, has_trace: bool, default: str | None = None) -> str | None:
    """System prompt of an embedder sequence. With a trace the sequence is the reasoner's own, so it
    carries the reasoner's task prompt; without one it is ``default`` (``None``: the template's)."""
    if has_trace:
        from .ecr import task_prompt

        return task_prompt(task or "generic")
    return default


def render_prompt(processor_or_tokenizer, messages: list[dict[str, Any]]) -> str:
    """The prompt the reasoner generates from: the chat template with the assistant cue."""
    return processor_or_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def embedder_text(prompt: str, trace: str | None, end_token: str = END_OF_TURN) -> str:
    """The embedder's input: ``prompt`` + trace as the assistant turn + end token (pooled)."""
    return f"{prompt}{trace or ''}{end_token}"


# --- Images and video: load, validate, fit to the pixel budget -------------------------------------

DEFAULT_MAX_IMAGE_PIXELS = 178_956_970  # PIL's own decompression-bomb error threshold (2x its warning limit)
DEFAULT_MAX_URL_BYTES = 20 * 1024 * 1024
DEFAULT_URL_TIMEOUT = 10.0


def load_image(
    source: Any,
    *,
    allow_urls: bool = False,
    url_timeout: float = DEFAULT_URL_TIMEOUT,
    max_url_bytes: int = DEFAULT_MAX_URL_BYTES,
    url_allow_hosts: Sequence[str] = (),
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
):
    """Load one image as an RGB ``PIL.Image`` from a PIL image, a path, raw bytes, an ``http(s)`` URL
    (only with ``allow_urls``), a numpy array (``HxW``, ``HxWxC``) or a torch tensor (``CxHxW``).

    Paths, bytes and URLs are decoded by `images` (the decoder ``tte-hf serve`` uses): PNG, JPEG,
    WEBP, GIF or BMP only, over ``max_image_pixels`` refused from the header, shrunk to ``max_pixels``
    while decoding. URLs are fetched by `fetch`: global addresses only (or those matching
    ``url_allow_hosts`` entries: host, ``host:port``, IP or CIDR), no redirects, one ``url_timeout``
    for the whole fetch. Refusals raise ``ValueError`` naming the image; unsupported types raise
    ``TypeError``. ``min_pixels``/``max_pixels`` rescale the image (keeping its aspect ratio) into
    that pixel budget.
    """
    import os

    from PIL import Image

    from .images import decode_image, open_image

    check_image_source(source, allow_urls=allow_urls)
    if isinstance(source, Image.Image):
        image = _decoded_rgb(source, max_image_pixels)
    elif _is_array(source):
        image = _array_to_image(source, Image).convert("RGB")
    else:
        if isinstance(source, (bytes, bytearray)):
            where, data, declared = "the given bytes", source, None
        elif isinstance(source, str) and source.startswith(("http://", "https://")):
            fetched = _fetch_url(source, url_timeout, max_url_bytes, url_allow_hosts)
            where, data, declared = f"image URL {source!r}", fetched.data, fetched.content_type
        else:
            where = data = os.fspath(source)
            declared = None
        opened = open_image(data, where, max_image_pixels=max_image_pixels, declared=declared)
        image = decode_image(opened, where, max_pixels)
    return fit_pixels(image, min_pixels, max_pixels)


def check_image_source(source: Any, *, allow_urls: bool = False) -> None:
    """The checks `load_image` makes before reading anything: a supported type, an existing file,
    URLs only when allowed. Cheap, so a whole input list can be checked before any image is decoded."""
    import os

    from PIL import Image

    if isinstance(source, (Image.Image, bytes, bytearray)) or _is_array(source):
        return
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        if not allow_urls:
            raise ValueError(
                f"image URL {source!r} was not fetched: URL loading is off; enable it with allow_image_urls=True "
                "or pass a local path / PIL image."
            )
        return
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(os.fspath(source)):
            raise ValueError(f"image file {os.fspath(source)!r} does not exist.")
        return
    raise TypeError(
        f"unsupported image type {type(source).__name__}; pass a PIL image, a path, bytes, a numpy array "
        "or a torch tensor."
    )


def load_video(frames: Any, **image_kwargs) -> list:
    """A video given as a non-empty list of frames (anything `load_image` takes), as RGB PIL frames."""
    if isinstance(frames, (str, bytes)) or not hasattr(frames, "__len__") or len(frames) == 0:
        raise ValueError("a video must be a non-empty list of frames (PIL images, paths or arrays).")
    loaded = []
    for index, frame in enumerate(frames):
        try:
            loaded.append(load_image(frame, **image_kwargs))
        except (TypeError, ValueError) as err:
            raise type(err)(f"video frame {index}: {err}") from err
    return loaded


def fit_pixels(image, min_pixels: int | None = None, max_pixels: int | None = None):
    """Rescale ``image`` (aspect ratio kept) so that width x height lies within ``[min_pixels, max_pixels]``."""
    import math

    from PIL import Image

    width, height = image.size
    area = width * height
    scale = 1.0
    if max_pixels is not None and area > max_pixels:
        scale = math.sqrt(max_pixels / area)
    elif min_pixels is not None and area < min_pixels:
        scale = math.sqrt(min_pixels / area)
    if scale == 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


def _decoded_rgb(image, max_image_pixels: int):
    """The caller's PIL image, decoded here (a lazily opened one, not later in the processor), as RGB."""
    from .images import check_pixels

    check_pixels(image.size, max_image_pixels, "the given image")
    try:
        image.load()
        return image if image.mode == "RGB" else image.convert("RGB")
    except Exception as err:  # noqa: BLE001 - decoders raise many types on bad data; callers need ValueError
        raise ValueError(f"the given image could not be decoded: {type(err).__name__}: {err}") from err


def _fetch_url(url: str, timeout: float, max_bytes: int, allow_hosts: Sequence[str]):
    from .fetch import FetchError, FetchRefused, shared_fetcher

    try:
        return shared_fetcher(timeout, max_bytes, tuple(allow_hosts)).fetch(url)
    except FetchRefused as err:
        raise ValueError(
            f"image URL {url!r} was refused before connecting: {err}. Only public http(s) hosts are fetched; "
            "list an intranet host in image_url_allow_hosts."
        ) from err
    except FetchError as err:
        raise ValueError(f"image URL {url!r} could not be fetched: {err}.") from err


def _is_array(value: Any) -> bool:
    return type(value).__module__.split(".")[0] in ("numpy", "torch") and hasattr(value, "shape")


def _array_to_image(array: Any, Image):
    import numpy as np

    if type(array).__module__.split(".")[0] == "torch":
        array = array.detach().cpu()
        if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
            array = array.permute(1, 2, 0)  # CxHxW (torchvision) -> HxWxC
        array = array.numpy()
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)) or 0 in array.shape:
        raise ValueError(f"image array of shape {tuple(array.shape)} is not HxW, HxWx3 or HxWx4 (or CxHxW tensor).")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError("image array contains NaN or infinite values.")
        array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ValueError(f"image array dtype {array.dtype} is not supported; use uint8 (0-255) or float (0-1).")
    return Image.fromarray(array)
