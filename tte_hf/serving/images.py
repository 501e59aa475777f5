"""Decoding request images under a memory bound: allowed formats only, the declared type checked
against the bytes, and every image shrunk to what the processor keeps *while* it is decoded.

Formats: PNG, JPEG, WEBP, GIF (first frame), BMP. Pillow is told to try only those (``formats=``),
so EPS (Ghostscript), TIFF, PSD, ... never reach a decoder. A data URL's ``image/<type>`` (or a
fetched URL's ``Content-Type``, when it names an image type) must match what Pillow finds.

Size: the header is read first (Pillow opens lazily): an image over ``max_image_pixels`` is refused
undecoded. JPEG is decoded at a reduced scale directly (``Image.draft``); other formats are decoded
at full size under a server-wide semaphore (``max_concurrent_decodes`` at once: the peak is bounded
by that many full-size images), then reduced with ``Image.reduce`` and resized to ``target_pixels``
*before* ``convert("RGB")`` (a 1-bit 4096x4096 PNG is 17 MB decoded, 50 MB as RGB). Images within
``target_pixels`` are left exactly as sent, so their vectors equal an in-process encode of the same
image; a larger image gives the vector of its downscaled copy (the processor would resize it anyway).
"""

from __future__ import annotations

import io
import math
import threading

from .schemas import RequestError

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


class ImageDecoder:
    """Turns image bytes into RGB PIL images within the limits; errors are `RequestError` naming ``where``."""

    def __init__(self, *, max_image_pixels: int, target_pixels: int | None, max_concurrent_decodes: int = 2):
        self.max_image_pixels, self.target_pixels = max_image_pixels, target_pixels
        self._decoding = threading.BoundedSemaphore(max_concurrent_decodes)

    def decoded_pixels(self, size: tuple[int, int]) -> int:
        """Pixels an image of ``size`` holds once decoded here (what the budgets reserve)."""
        width, height = self._target_size(size)
        return width * height

    def open(self, data: bytes, where: str, declared: str | None):
        """``data`` opened lazily (its header read, nothing decoded) and checked: an accepted format,
        the ``declared`` MIME type (``None``: none claimed), at most ``max_image_pixels``."""
        from PIL import Image, UnidentifiedImageError

        try:
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        except UnidentifiedImageError:
            raise RequestError(
                f"{where} is not an image in an accepted format ({', '.join(ALLOWED_FORMATS)}).", param=where
            ) from None
        except (Image.DecompressionBombError, OSError, ValueError, SyntaxError) as err:
            raise RequestError(f"{where} could not be read as an image ({type(err).__name__}).", param=where) from err
        expected = MIME_FORMATS.get((declared or "").split(";")[0].strip().lower())
        if declared is not None and declared.lower().startswith("image/") and expected != image.format:
            raise RequestError(f"{where} is declared {declared!r} but its bytes are {image.format}.", param=where)
        width, height = image.size
        if width * height > self.max_image_pixels:
            raise RequestError(
                f"{where}: image of {width}x{height} pixels exceeds max_image_pixels={self.max_image_pixels}.",
                param=where,
            )
        return image

    def load(self, image, where: str):
        """An opened image decoded (``max_concurrent_decodes`` at a time, server-wide), downscaled, RGB."""
        with self._decoding:
            try:
                small = self._load_small(image)
            except Exception as err:  # noqa: BLE001 - Pillow plugins raise many types on bad data
                image.close()
                raise RequestError(f"{where} could not be decoded ({type(err).__name__}).", param=where) from err
            if small is not image:
                image.close()  # frees the full-size pixels now, inside the semaphore, whoever holds `image`
            return small

    def _target_size(self, size: tuple[int, int]) -> tuple[int, int]:
        width, height = size
        if self.target_pixels is None or width * height <= self.target_pixels:
            return width, height
        scale = math.sqrt(self.target_pixels / (width * height))
        return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))

    def _load_small(self, image):
        from PIL import Image

        target = self._target_size(image.size)
        if target != image.size and image.format == "JPEG":
            image.draft("RGB", target)  # DCT scaling: decodes at 1/2, 1/4 or 1/8 of the size, never below target
        image.load()
        if target != image.size:
            factor = min(image.size[0] // target[0], image.size[1] // target[1])
            if factor >= 2 and image.mode not in ("1", "P", "I;16"):  # those: resize alone (Pillow uses NEAREST)
                image = image.reduce(factor)
            image = image.resize(target, Image.Resampling.BICUBIC)
        return image if image.mode == "RGB" else image.convert("RGB")
