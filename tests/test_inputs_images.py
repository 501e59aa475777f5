"""Image and video loading in tte_hf.models.tte.inputs: every accepted form, pixel budgets, and the refusals
(forbidden formats, non-global URLs, redirects) of the in-process path, without a server."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import torch
from image_web import EPS, Web, image_bytes, small_image
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


def test_url_fetch_only_when_enabled_allowed_and_within_the_size_limit():
    with Web() as web:
        url = f"http://127.0.0.1:{web.allowed_port}/a.png"
        allowed = {"allow_urls": True, "url_allow_hosts": [f"127.0.0.1:{web.allowed_port}"]}
        with pytest.raises(ValueError, match="URL loading is off"):
            load_image(url)
        np.testing.assert_array_equal(np.asarray(load_image(url, **allowed)), np.asarray(small_image(3)))
        with pytest.raises(ValueError, match=r"could not be fetched: .*over 100 bytes"):
            load_image(url, max_url_bytes=100, **allowed)
    with pytest.raises(ValueError, match="could not be fetched"):  # the server is gone
        load_image(url, url_timeout=2, **allowed)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{target}/secret.png",
        "http://localhost:{target}/secret.png",
        "http://[::ffff:127.0.0.1]:{target}/secret.png",
        "http://127.0.0.1:{allowed}@127.0.0.1:{target}/x.png",
    ],
)
def test_a_loopback_url_is_refused_before_connecting(url):
    """Only global addresses are fetched; a host allowed on one port does not open the others."""
    with Web() as web:
        url = url.format(target=web.target_port, allowed=web.allowed_port)
        start = time.monotonic()
        with pytest.raises(ValueError, match="was refused before connecting") as info:
            load_image(url, allow_urls=True, url_allow_hosts=[f"127.0.0.1:{web.allowed_port}"])
        assert repr(url) in str(info.value) and time.monotonic() - start < 1.0
        time.sleep(0.3)
        assert web.target_connections == 0


def test_a_redirect_is_refused_not_followed():
    with Web() as web:
        url = f"http://127.0.0.1:{web.allowed_port}/redirect.png"
        with pytest.raises(ValueError, match=r"could not be fetched: .*redirect \(not followed\)"):
            load_image(url, allow_urls=True, url_allow_hosts=[f"127.0.0.1:{web.allowed_port}"])
        time.sleep(0.3)
        assert web.target_connections == 0  # the redirect's target never saw a connection


def test_eps_and_tiff_are_refused_from_bytes_files_and_urls(tmp_path):
    assert Image.open(io.BytesIO(EPS)).format == "EPS"  # what Pillow would open (with Ghostscript) if asked
    tiff = image_bytes(small_image(1), "TIFF")
    (tmp_path / "eps.png").write_bytes(EPS)
    (tmp_path / "a.tiff").write_bytes(tiff)
    files = {"/eps.png": ("image/png", EPS), "/a.tiff": ("image/tiff", tiff)}
    with Web(files) as web:
        base = f"http://127.0.0.1:{web.allowed_port}"
        options = {"allow_urls": True, "url_allow_hosts": [f"127.0.0.1:{web.allowed_port}"]}
        for source, named in [
            (EPS, "the given bytes"),
            (tiff, "the given bytes"),
            (tmp_path / "eps.png", str(tmp_path / "eps.png")),
            (str(tmp_path / "a.tiff"), str(tmp_path / "a.tiff")),
            (f"{base}/eps.png", f"image URL '{base}/eps.png'"),
            (f"{base}/a.tiff", f"image URL '{base}/a.tiff'"),
        ]:
            with pytest.raises(ValueError, match="not a readable image in an accepted format") as info:
                load_image(source, **options)
            assert str(info.value).startswith(named), info.value


def test_a_url_whose_content_type_contradicts_its_bytes_is_refused():
    with Web({"/photo.jpg": ("image/jpeg", image_bytes(small_image(2), "PNG"))}) as web:
        url = f"http://127.0.0.1:{web.allowed_port}/photo.jpg"
        with pytest.raises(ValueError, match="declared 'image/jpeg' but its bytes are PNG"):
            load_image(url, allow_urls=True, url_allow_hosts=[f"127.0.0.1:{web.allowed_port}"])


@pytest.mark.parametrize("mode", ["RGB", "1"])
def test_bytes_are_shrunk_while_decoding_exactly_as_the_server_does(mode):
    """One decoder: an in-process load of bytes equals the server's decode of the same bytes."""
    pytest.importorskip("fastapi")
    from tte_hf.serving.images import ImageDecoder

    image = Image.fromarray(np.tile(PIXELS, (40, 30, 1))).convert(mode)  # 600x480
    data = image_bytes(image, "PNG")
    loaded = load_image(data, max_pixels=20_000)
    assert loaded.mode == "RGB" and loaded.size == (158, 126)  # floor(600 * 0.2635), floor(480 * 0.2635)
    decoder = ImageDecoder(max_image_pixels=10**6, target_pixels=20_000)
    served = decoder.load(decoder.open(data, "input[0].image", "image/png"), "input[0].image")
    np.testing.assert_array_equal(np.asarray(loaded), np.asarray(served))
