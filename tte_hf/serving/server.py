"""Run the app with uvicorn: in the foreground (`run`) or on a background thread (`BackgroundServer`)."""

from __future__ import annotations

import threading
import time

try:
    import uvicorn
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("tte-hf serve needs FastAPI and uvicorn: pip install 'tte-hf[serve]'") from err


def _begin_drain(app) -> None:
    state = getattr(getattr(app, "state", None), "serve", None)
    if state is not None:
        state.begin_drain()


class DrainingServer(uvicorn.Server):
    """uvicorn's server that tells the app the moment a shutdown signal arrives (``/health`` turns
    503 ``draining`` and the graceful-timeout clock starts), not only once connections have closed."""

    def handle_exit(self, sig, frame) -> None:
        _begin_drain(self.config.app)
        super().handle_exit(sig, frame)


def run(
    app, *, host: str = "127.0.0.1", port: int = 8000, graceful_timeout: float = 30.0, log_level: str = "info"
) -> None:
    """Serve until SIGINT/SIGTERM; then new connections are refused, accepted requests finish (up to
    ``graceful_timeout`` seconds, then they are cancelled) and the batcher drains in what is left of
    that time (at least a second): a hung reasoner cannot hold the shutdown."""
    config = uvicorn.Config(app, host=host, port=port, timeout_graceful_shutdown=graceful_timeout, log_level=log_level)
    DrainingServer(config).run()


class BackgroundServer:
    """``with BackgroundServer(app) as url:`` serves on 127.0.0.1 (a free port) from a thread; leaving
    the block shuts it down gracefully. For tests and benchmarks."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, graceful_timeout: float = 30.0):
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=graceful_timeout)  # fmt: skip
        self.server = DrainingServer(config)
        self.thread = threading.Thread(target=self.server.run, name="tte-serve", daemon=True)
        self.host = host

    def start(self, timeout: float = 60.0) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start.")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{self.host}:{port}"
        return self.url

    def stop(self, timeout: float = 60.0) -> None:
        _begin_drain(self.server.config.app)
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
