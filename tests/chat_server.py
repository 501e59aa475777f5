"""A real OpenAI-compatible chat-completions server on 127.0.0.1 for tests, with injectable faults.

``faults[key]`` is a list of modes served in turn to requests whose user text contains ``key``:
``"500"``, ``"429"``, ``"timeout"`` (sleeps ``slow_seconds`` before answering), ``"malformed"`` (200
with a body that is not JSON), ``"no_choices"`` (200, JSON without choices), ``"split"`` (the thought
in ``reasoning_content`` and ``ok`` in ``content``, as a server with a reasoning parser answers),
``"thought_only"`` (``reasoning_content`` and a null ``content``); then it answers normally.
A key mapped to ``"always500"`` always fails; ``"always400"`` always answers 400 (a request the
server rejects for good); ``"hang"`` never answers (until ``hang_seconds`` pass or the server exits).
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image


class ChatServer:
    def __init__(self, slow_seconds: float = 1.5, hang_seconds: float = 60.0):
        self.faults: dict[str, list[str] | str] = {}
        self.slow_seconds, self.hang_seconds = slow_seconds, hang_seconds
        self.closing = threading.Event()
        self.received: list[dict] = []
        self.paths: list[str] = []
        self.attempts: dict[str, int] = {}
        self.concurrent = self.max_concurrent = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                server._handle(self)

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # many concurrent clients (benchmarks) without connection resets

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    @staticmethod
    def user_text(body: dict) -> str:
        user = [m for m in body["messages"] if m["role"] == "user"][0]["content"]
        return " ".join(p["text"] for p in user if p["type"] == "text")

    @staticmethod
    def images(body: dict) -> list[Image.Image]:
        user = [m for m in body["messages"] if m["role"] == "user"][0]["content"]
        urls = [p["image_url"]["url"] for p in user if p["type"] == "image_url"]
        return [Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1]))) for u in urls]

    def _mode(self, text: str) -> str:
        with self._lock:
            for key, modes in self.faults.items():
                if key in text:
                    self.attempts[key] = self.attempts.get(key, 0) + 1
                    if modes in ("always500", "always400", "hang"):
                        return {"always500": "500", "always400": "400"}.get(modes, modes)
                    if modes:
                        return modes.pop(0)
            return "ok"

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
            handler.in_flight = True
        try:
            with self._lock:
                self.paths.append(handler.path)
            if handler.path != "/v1/chat/completions":
                self._send(handler, 404, b'{"error": "not found"}')
                return
            length = int(handler.headers["Content-Length"])
            body = json.loads(handler.rfile.read(length))
            body["_authorization"] = handler.headers.get("Authorization")
            with self._lock:
                self.received.append(body)
            text = self.user_text(body)
            mode = self._mode(text)
            time.sleep(0.05)  # long enough for concurrent requests to overlap
            if mode == "hang":
                self.closing.wait(self.hang_seconds)
                return
            if mode in ("500", "429", "400"):
                self._send(handler, int(mode), b'{"error": "injected"}', retry_after="0" if mode == "429" else None)
            elif mode == "malformed":
                self._send(handler, 200, b'{"choices": [{"message": {"content": "cut')
            elif mode == "no_choices":
                self._send(handler, 200, b'{"object": "chat.completion"}')
            elif mode in ("split", "thought_only"):
                message = {"role": "assistant", "reasoning_content": text, "content": "ok" if mode == "split" else None}
                self._send(handler, 200, json.dumps({"choices": [{"message": message}]}).encode())
            else:
                if mode == "timeout":
                    time.sleep(self.slow_seconds)
                reply = {"choices": [{"message": {"role": "assistant", "content": f"<think> {text} </think> ok"}}]}
                self._send(handler, 200, json.dumps(reply).encode())
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)
        finally:
            self._leave(handler)

    def _leave(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            if handler.in_flight:
                handler.in_flight = False
                self.concurrent -= 1

    def _send(self, handler, status: int, payload: bytes, retry_after: str | None = None) -> None:
        # A request stops counting as in flight *before* its answer is written: once the client reads
        # the answer it may send the next request, which must not overlap this one in the count.
        self._leave(handler)
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        if retry_after is not None:
            handler.send_header("Retry-After", retry_after)
        handler.end_headers()
        handler.wfile.write(payload)
