"""Image and video loading in tte_hf.models.tte.inputs: every accepted form, pixel budgets, and the refusals."""

from __future__ import annotations

import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from PIL import Image

from tte_hf.models.tte.inputs import fit_pixels, load_image, load_video

PIXELS = (np.arange(12 * 20 * 3) % 251).astype(np.uint8).reshape(12, 20, 3)


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_every_source_form_loads_the_same_pixels(tmp_path):
    reference = Image.fromarray(PIXELS)
    path = tmp_path / "a.png"
    reference.save(path)
    chw_float = torch.from_numpy(PIXELS).permute(2, 0, 1).float() / 255
    sources = [reference, reference.convert("RGBA"), path, str(path), _png_bytes(reference), PIXELS, chw_float]
    for source in sources:
        loaded = load_image(source)
        assert loaded.mode == "RGB" and loaded.size == (20, 12)
        np.testing.assert_array_equal(np.asarray(loaded), PIXELS)
    gray = load_image(PIXELS[..., 0])
    np.testing.assert_array_equal(np.asarray(gray)[..., 0], PIXELS[..., 0])


@pytest.mark.parametrize(
    ("source", "error", "match"),
    [
        (b"no image here", ValueError, "not a readable image"),
        ("/no/such/file.png", ValueError, "does not exist"),
        (np.zeros((4, 4, 2), dtype=np.uint8), ValueError, "is not HxW"),
        (np.zeros((4, 4, 3), dtype=np.int64), ValueError, "dtype int64"),
        (np.full((4, 4, 3), np.nan), ValueError, "NaN"),
        (["a list"], TypeError, "unsupported image type list"),
        ("https://example.invalid/a.png", ValueError, "URL loading is off"),
    ],
)
def test_refusals_say_why(source, error, match):
    with pytest.raises(error, match=match):
        load_image(source)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (400, 300)).save(path)
    with pytest.raises(ValueError, match=r"400x300 pixels exceeds max_image_pixels=100000"):
        load_image(path, max_image_pixels=100_000)
    assert load_image(path, max_image_pixels=120_000).size == (400, 300)


def test_pixel_budget_keeps_the_aspect_ratio():
    image = Image.new("RGB", (400, 100))
    small = fit_pixels(image, max_pixels=10_000)
    assert small.size == (200, 50)
    large = fit_pixels(Image.new("RGB", (40, 10)), min_pixels=1_600)
    assert large.size == (80, 20)
    assert fit_pixels(image, min_pixels=100, max_pixels=10**6) is image
    assert load_image(image, max_pixels=10_000).size == (200, 50)


def test_video_frames_and_errors():
    frames = load_video([PIXELS, Image.fromarray(PIXELS)])
    assert len(frames) == 2 and all(f.size == (20, 12) for f in frames)
    with pytest.raises(ValueError, match="non-empty list of frames"):
        load_video([])
    with pytest.raises(TypeError, match="video frame 1: unsupported image type int"):
        load_video([PIXELS, 7])


class _Images(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def test_url_fetch_only_when_enabled_and_within_the_size_limit():
    _Images.body = _png_bytes(Image.fromarray(PIXELS))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/a.png"
    try:
        with pytest.raises(ValueError, match="URL loading is off"):
            load_image(url)
        np.testing.assert_array_equal(np.asarray(load_image(url, allow_urls=True)), PIXELS)
        with pytest.raises(ValueError, match="larger than max_url_bytes=100"):
            load_image(url, allow_urls=True, max_url_bytes=100)
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ValueError, match="could not be fetched"):
        load_image(url, allow_urls=True, url_timeout=2)
