"""Decoding image bytes under a memory bound: allowed formats only, the declared type checked against
the bytes, and every image shrunk to a pixel target *while* it is decoded. `inputs.load_image` (an
in-process encode of a path, bytes or URL) and ``tte-hf serve`` both decode through here.

Formats: PNG, JPEG, WEBP, GIF (first frame), BMP. Pillow is told to try only those (``formats=``),
so EPS (Ghostscript), TIFF, PSD, ... never reach a decoder. A declared ``image/<type>`` (a data URL's,
or a fetched URL's ``Content-Type``) must match what Pillow finds.

Size: the header is read first (Pillow opens lazily): an image over ``max_image_pixels`` is refused
undecoded. JPEG is decoded at a reduced scale directly (``Image.draft``); other formats are decoded at
full size, then reduced with ``Image.reduce`` and resized to ``target_pixels`` *before*
``convert("RGB")`` (a 1-bit 4096x4096 PNG is 17 MB decoded, 50 MB as RGB). Images within
``target_pixels`` are left exactly as they are. Errors are ``ValueError`` naming ``where``.
"""

from __future__ import annotations

import io
import math
import os

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
MIME_FORMATS = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/jpg": "JPEG",
    "image/pjpeg": "JPEG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
    "image/bmp": "BMP",
    "image/x-ms-bmp": "BMP",
}


def open_image(
    source: bytes | bytearray | str | os.PathLike,
    where: str,
    *,
    max_image_pixels: int,
    declared: str | None = None,
):
    """``source`` (bytes or a file path) opened lazily (its header read, nothing decoded) and checked:
    an accepted format, the ``declared`` MIME type (``None`` or not ``image/...``: nothing to check),
    at most ``max_image_pixels``."""
    from PIL import Image, UnidentifiedImageError

    file = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else os.fspath(source)
    try:
        image = Image.open(file, formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise ValueError(
            f"{where} is not a readable image in an accepted format ({', '.join(ALLOWED_FORMATS)})."
        ) from None
    except Image.DecompressionBombError as err:  # PIL's own limit (Image.MAX_IMAGE_PIXELS), checked in open
        raise ValueError(
            f"{where} was refused as a possible decompression bomb by PIL ({err}); raise PIL.Image.MAX_IMAGE_PIXELS "
            "together with max_image_pixels only for trusted files."
        ) from err
    except (OSError, ValueError, SyntaxError) as err:
        raise ValueError(f"{where} could not be read as an image ({type(err).__name__}: {err}).") from err
    try:
        expected = MIME_FORMATS.get((declared or "").split(";")[0].strip().lower())
        if declared is not None and declared.lower().startswith("image/") and expected != image.format:
            raise ValueError(f"{where} is declared {declared!r} but its bytes are {image.format}.")
        check_pixels(image.size, max_image_pixels, where)
    except ValueError:
        image.close()
        raise
    return image


def check_pixels(size: tuple[int, int], max_image_pixels: int, where: str) -> None:
    """Refuse an image whose header announces more than ``max_image_pixels`` (a decompression bomb)."""
    width, height = size
    if width * height > max_image_pixels:
        raise ValueError(
            f"{where}: image of {width}x{height} pixels exceeds max_image_pixels={max_image_pixels} "
            "(possible decompression bomb)."
        )


def decode_image(image, where: str, target_pixels: int | None):
    """An `open_image` result decoded, shrunk to at most ``target_pixels`` (``None``: kept) and RGB.
    The full-size image is closed once a smaller copy exists, so its pixels are freed at once."""
    try:
        small = _decode_small(image, target_pixels)
    except Exception as err:  # noqa: BLE001 - Pillow plugins raise OSError, SyntaxError, struct.error, ... on bad data
        image.close()
        raise ValueError(f"{where} could not be decoded ({type(err).__name__}: {err}).") from err
    if small is not image:
        image.close()
    return small


def target_size(size: tuple[int, int], target_pixels: int | None) -> tuple[int, int]:
    """The size `decode_image` gives an image of ``size``: aspect ratio kept, at most ``target_pixels``."""
    width, height = size
    if target_pixels is None or width * height <= target_pixels:
        return width, height
    scale = math.sqrt(target_pixels / (width * height))
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def _decode_small(image, target_pixels: int | None):
    from PIL import Image

    target = target_size(image.size, target_pixels)
    if target != image.size and image.format == "JPEG":
        image.draft("RGB", target)  # DCT scaling: decodes at 1/2, 1/4 or 1/8 of the size, never below target
    image.load()
    if target != image.size:
        factor = min(image.size[0] // target[0], image.size[1] // target[1])
        if factor >= 2 and image.mode not in ("1", "P", "I;16"):  # those: resize alone (Pillow uses NEAREST)
            image = image.reduce(factor)
        image = image.resize(target, Image.Resampling.BICUBIC)
    return image if image.mode == "RGB" else image.convert("RGB")
