"""Request images decoded with `tte_hf.models.tte.images` (format allow-list, declared type checked
against the bytes, pixel check from the header, shrunk while decoding: the decoder an in-process encode
uses too), under a server-wide bound, with failures as 400s naming the item.

The bound: formats other than JPEG are decoded at full size before they are shrunk, so at most
``max_concurrent_decodes`` decode at once, server-wide (the peak is that many full-size images). The
server shrinks to the model's ``max_pixels`` (or its processor's): images within it are left exactly
as sent, so their vectors equal an in-process encode of the same image; a larger image gives the
vector of its downscaled copy (the processor would resize it anyway).
"""

from __future__ import annotations

import threading

from ..models.tte.images import decode_image, open_image, target_size
from .schemas import RequestError


class ImageDecoder:
    """Turns image bytes into RGB PIL images within the limits; errors are `RequestError` naming ``where``."""

    def __init__(self, *, max_image_pixels: int, target_pixels: int | None, max_concurrent_decodes: int = 2):
        self.max_image_pixels, self.target_pixels = max_image_pixels, target_pixels
        self._decoding = threading.BoundedSemaphore(max_concurrent_decodes)

    def decoded_pixels(self, size: tuple[int, int]) -> int:
        """Pixels an image of ``size`` holds once decoded here (what the budgets reserve)."""
        width, height = target_size(size, self.target_pixels)
        return width * height

    def open(self, data: bytes, where: str, declared: str | None):
        """``data`` opened lazily (its header read, nothing decoded) and checked (`open_image`)."""
        try:
            return open_image(data, where, max_image_pixels=self.max_image_pixels, declared=declared)
        except ValueError as err:
            raise RequestError(str(err), param=where) from err

    def load(self, image, where: str):
        """An opened image decoded (``max_concurrent_decodes`` at a time, server-wide), downscaled, RGB."""
        with self._decoding:
            try:
                return decode_image(image, where, self.target_pixels)
            except ValueError as err:
                raise RequestError(str(err), param=where) from err
