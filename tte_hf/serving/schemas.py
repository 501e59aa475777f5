"""The ``/v1/embeddings`` request: validation into model inputs, and the OpenAI-style response body.

Pure functions (no web framework): every problem raises `RequestError` with the HTTP status and the
parameter path that names the offending item, e.g. ``input[3].image``. Images are checked here but
not decoded: they stay `ImageRef`s until the server reads them within its budgets (`images`, `limits`).

Request fields (OpenAI's, plus two extensions):
    model: the served model name (optional here; checked when given).
    input: a string, or a list of items; an item is a string, ``{"text", "image" | "images",
        "reasoning"}`` (images as ``data:image/...;base64,`` URLs, or ``http(s)`` URLs when the server
        allows them), or a list of OpenAI content parts (``{"type": "text", "text"}``,
        ``{"type": "image_url", "image_url": {"url"}}``).
    dimensions: Matryoshka truncation (the vectors are re-normalised).
    encoding_format: ``"float"`` (default) or ``"base64"`` (little-endian float32).
    think: ``true`` / ``false`` / ``"auto"`` / ``null`` (the model's setting for the side).
    input_type: ``"query"`` or ``"document"`` (the server's default when absent).
    user: accepted and ignored.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

INPUT_TYPES = ("query", "document")
ENCODING_FORMATS = ("float", "base64")
FIELDS = ("model", "input", "dimensions", "encoding_format", "think", "input_type", "user")
ITEM_KEYS = ("text", "image", "images", "reasoning")


class RequestError(Exception):
    """A client error: ``status`` (4xx), a message, and ``param``, the path of the offending field."""

    def __init__(self, message: str, *, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.message, self.param, self.status = message, param, status


@dataclass(frozen=True)
class Limits:
    """Request limits the server enforces before any model work."""

    max_items: int = 256
    max_text_chars: int = 32_768
    max_images_per_item: int = 8
    max_image_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    allow_image_urls: bool = False
    url_timeout: float = 10.0  #: one deadline for each whole fetch (connect, headers, body)
    max_image_urls: int = 16  #: http(s) images per request
    image_url_allow_hosts: tuple[str, ...] = ()  #: hosts / IPs / CIDRs fetched even if not global
    max_input_tokens: int | None = None  #: text + reasoning + image tokens per item (None: no limit)


@dataclass(frozen=True)
class EmbeddingRequest:
    """A validated request: the model inputs (strings or dicts with PIL images) and the options."""

    inputs: list[Any]
    side: str
    think: Any
    dimensions: int | None
    encoding_format: str
    model: str | None


def parse_request(
    body: Any, limits: Limits, *, default_input_type: str = "query", max_dimensions: int
) -> EmbeddingRequest:
    """Validate a decoded JSON body and load its images. Raises `RequestError` naming the bad field."""
    if not isinstance(body, Mapping):
        raise RequestError(f"the request body must be a JSON object, got {type(body).__name__}.")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise RequestError(f"unknown field(s) {unknown}; allowed fields are {list(FIELDS)}.", param=unknown[0])
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError("'model' must be a string.", param="model")
    think = body.get("think")
    if not (think is None or isinstance(think, bool) or think == "auto"):
        raise RequestError(f"'think' must be true, false, \"auto\" or null, got {think!r}.", param="think")
    side = body.get("input_type", default_input_type) or default_input_type
    if side not in INPUT_TYPES:
        raise RequestError(f"'input_type' must be one of {list(INPUT_TYPES)}, got {side!r}.", param="input_type")
    encoding_format = body.get("encoding_format") or "float"
    if encoding_format not in ENCODING_FORMATS:
        raise RequestError(
            f"'encoding_format' must be one of {list(ENCODING_FORMATS)}, got {encoding_format!r}.",
            param="encoding_format",
        )
    dimensions = body.get("dimensions")
    if dimensions is not None:
        if isinstance(dimensions, bool) or not isinstance(dimensions, int):
            raise RequestError(f"'dimensions' must be an integer, got {dimensions!r}.", param="dimensions")
        if not 1 <= dimensions <= max_dimensions:
            raise RequestError(f"'dimensions' must lie in [1, {max_dimensions}], got {dimensions}.", param="dimensions")
    if "input" not in body:
        raise RequestError("'input' is required.", param="input")
    raw = body["input"]
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list):
        raise RequestError(f"'input' must be a string or a list, got {type(raw).__name__}.", param="input")
    if not items:
        raise RequestError("'input' is empty.", param="input")
    if len(items) > limits.max_items:
        raise RequestError(f"'input' has {len(items)} items; at most {limits.max_items} per request.", param="input")
    inputs = [parse_item(item, f"input[{i}]", limits) for i, item in enumerate(items)]
    urls = [ref for ref in image_refs(inputs) if ref.url is not None]
    if len(urls) > limits.max_image_urls:
        where = urls[limits.max_image_urls].where
        raise RequestError(f"{where}: at most {limits.max_image_urls} image URLs per request.", param=where)
    return EmbeddingRequest(inputs, side, think, dimensions, encoding_format, model)


def parse_item(item: Any, where: str, limits: Limits) -> Any:
    """One input item as the sentence-transformers model takes it: a string or a dict of loaded images."""
    if isinstance(item, str):
        return _text(item, where, limits)
    if isinstance(item, list):
        return _parse_parts(item, where, limits)
    if not isinstance(item, Mapping):
        raise RequestError(
            f"{where} must be a string, an object with 'text'/'image'/'images', or a list of content parts; "
            f"got {type(item).__name__}.",
            param=where,
        )
    unknown = sorted(set(item) - set(ITEM_KEYS))
    if unknown:
        raise RequestError(f"{where} has unknown key(s) {unknown}; allowed are {list(ITEM_KEYS)}.", param=where)
    if "image" in item and "images" in item:
        raise RequestError(f"{where}: give either 'image' or 'images', not both.", param=where)
    out: dict[str, Any] = {}
    if item.get("text") is not None:
        out["text"] = _text(item["text"], f"{where}.text", limits)
    sources = item.get("images") if "images" in item else ([item["image"]] if item.get("image") is not None else [])
    if not isinstance(sources, list):
        raise RequestError(f"{where}.images must be a list of image URLs.", param=f"{where}.images")
    key = "images" if "images" in item else "image"
    out["images"] = _images(sources, f"{where}.{key}", limits, single=key == "image")
    if item.get("reasoning") is not None:
        out["reasoning"] = _text(item["reasoning"], f"{where}.reasoning", limits)
    if "text" not in out and not out["images"]:
        raise RequestError(f"{where} has no text and no image.", param=where)
    return out


def _parse_parts(parts: list, where: str, limits: Limits) -> dict[str, Any]:
    texts, sources = [], []
    for j, part in enumerate(parts):
        path = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text":
            texts.append(_text(part.get("text"), f"{path}.text", limits))
        elif kind == "image_url":
            url = part.get("image_url")
            sources.append(url.get("url") if isinstance(url, Mapping) else url)
        else:
            raise RequestError(
                f"{path} must be a content part of type 'text' or 'image_url', got {part!r:.80}.", param=path
            )
    out: dict[str, Any] = {"images": _images(sources, f"{where}.image_url", limits)}
    if texts:
        out["text"] = _text(" ".join(texts), where, limits)
    if "text" not in out and not out["images"]:
        raise RequestError(f"{where} has no text and no image.", param=where)
    return out


def _text(value: Any, where: str, limits: Limits) -> str:
    if not isinstance(value, str):
        raise RequestError(f"{where} must be a string, got {type(value).__name__}.", param=where)
    if not value.strip():
        raise RequestError(f"{where} is an empty string.", param=where)
    if len(value) > limits.max_text_chars:
        raise RequestError(f"{where} has {len(value)} characters; at most {limits.max_text_chars}.", param=where)
    return value


def _images(sources: list, where: str, limits: Limits, single: bool = False) -> list[ImageRef]:
    if len(sources) > limits.max_images_per_item:
        raise RequestError(f"{where} has {len(sources)} images; at most {limits.max_images_per_item}.", param=where)
    return [image_ref(s, where if single else f"{where}[{k}]", limits) for k, s in enumerate(sources)]


@dataclass
class ImageRef:
    """An image named by the request, not yet read: ``url`` to fetch, or ``data`` (base64 text of a data
    URL) with the MIME type it declares. The server decodes it later, within its budgets."""

    where: str
    url: str | None = None
    data: str | bytes | None = None
    declared: str | None = None


def image_ref(source: Any, where: str, limits: Limits) -> ImageRef:
    """Check a data URL (header, base64 size) or an ``http(s)`` URL (allowed?) without decoding it."""
    if not isinstance(source, str):
        raise RequestError(f"{where} must be a data URL or http(s) URL string.", param=where)
    if source.startswith("data:"):
        header, sep, payload = source.partition(",")
        if not sep or not header.endswith(";base64") or not header[5:].startswith("image/"):
            raise RequestError(f"{where} must be a 'data:image/<format>;base64,<data>' URL.", param=where)
        if len(payload) > math.ceil(limits.max_image_bytes / 3) * 4 + 4:
            raise RequestError(f"{where} is larger than max_image_bytes={limits.max_image_bytes}.", param=where)
        return ImageRef(where, data=payload, declared=header[5 : -len(";base64")])
    if source.startswith(("http://", "https://")):
        if not limits.allow_image_urls:
            raise RequestError(
                f"{where}: image URLs are off on this server; send the image as a base64 data URL.", param=where
            )
        return ImageRef(where, url=source)
    raise RequestError(f"{where} must be a data URL ('data:image/png;base64,...') or an http(s) URL.", param=where)


def decode_base64(ref: ImageRef, limits: Limits) -> bytes:
    """The bytes of a data URL image (`RequestError` naming it when not base64 or too large)."""
    try:
        data = base64.b64decode(ref.data, validate=True)
    except (binascii.Error, ValueError) as err:
        raise RequestError(f"{ref.where} is not valid base64: {err}.", param=ref.where) from err
    if len(data) > limits.max_image_bytes:
        raise RequestError(f"{ref.where} is larger than max_image_bytes={limits.max_image_bytes}.", param=ref.where)
    return data


def image_refs(inputs: list[Any]) -> list[ImageRef]:
    """Every `ImageRef` of parsed inputs, in order."""
    return [ref for item in inputs if isinstance(item, dict) for ref in item.get("images", ())]


def embedding_response(
    vectors: np.ndarray, model: str, encoding_format: str, usage: dict[str, int] | None = None
) -> dict[str, Any]:
    """The OpenAI ``list`` of ``embedding`` objects (float lists or base64 little-endian float32).
    ``usage``: ``prompt_tokens`` (and ``total_tokens``) plus the extension ``reasoning_tokens``."""
    data = []
    for index, vector in enumerate(np.asarray(vectors, dtype="<f4")):
        embedding: Any = (
            base64.b64encode(vector.tobytes()).decode("ascii") if encoding_format == "base64" else vector.tolist()
        )
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    usage = dict(usage or {"prompt_tokens": 0})
    usage.setdefault("total_tokens", usage["prompt_tokens"] + usage.get("reasoning_tokens", 0))
    return {"object": "list", "data": data, "model": model, "usage": usage}


def error_body(message: str, *, param: str | None = None, kind: str = "invalid_request_error") -> dict[str, Any]:
    """OpenAI's error shape, which the official client reads into its exception message."""
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}
