"""Image servers on 127.0.0.1 for the URL-fetching tests (in-process `load_image` and ``tte-hf serve``),
and the image bytes those tests send: forbidden formats next to a small PNG."""

from __future__ import annotations

import io
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

#: A real EPS file: Pillow opens it as "EPS" when not told which formats to try (and reaches for Ghostscript to decode it).
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n"


def small_image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((40, 48, 3)) * 255).astype("uint8"))


def image_bytes(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


class Web:
    """``allowed`` (the one host a fetcher may be allowed: ``files`` by path, a redirect to ``target``
    at ``/redirect.png``, a drip of one byte every 0.5 s at ``/drip.png``, a small PNG anywhere else)
    and ``target`` (a raw socket that counts the connections it is offered: none may ever arrive)."""

    def __init__(self, files: dict[str, tuple[str, bytes]] | None = None):
        self.target = socket.socket()
        self.target.bind(("127.0.0.1", 0))
        self.target.listen(16)
        self.target.settimeout(0.2)
        self.target_port, self.target_connections = self.target.getsockname()[1], 0
        self.closing = threading.Event()
        self.png = image_bytes(small_image(3), "PNG")
        self.files = dict(files or {})
        self.allowed = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.allowed.daemon_threads = True
        self.allowed_port = self.allowed.server_address[1]
        self.threads = [
            threading.Thread(target=self.allowed.serve_forever, daemon=True),
            threading.Thread(target=self._count_target, daemon=True),
        ]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        web = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802
                if self.path == "/redirect.png":
                    self.send_response(302)
                    self.send_header("Location", f"http://127.0.0.1:{web.target_port}/secret.png")
                    self.end_headers()
                elif self.path == "/drip.png":
                    for _ in range(120):  # at most 60 s, one byte at a time
                        if web.closing.wait(0.5):
                            return
                        try:
                            self.wfile.write(b"H")
                            self.wfile.flush()
                        except OSError:
                            return
                else:
                    content_type, body = web.files.get(self.path, ("image/png", web.png))
                    self.send_response(200)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

        return Handler

    def _count_target(self) -> None:
        while not self.closing.is_set():
            try:
                connection, _ = self.target.accept()
            except (TimeoutError, OSError):
                continue
            self.target_connections += 1
            connection.close()

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.closing.set()
        self.allowed.shutdown()
        self.allowed.server_close()
        self.target.close()
