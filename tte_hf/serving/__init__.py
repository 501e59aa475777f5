"""OpenAI-compatible embeddings server for TTE models (``tte-hf serve``; needs ``pip install 'tte-hf[serve]'``).

Submodules: `schemas` (request validation, response shape), `limits` (queue and memory budgets),
`images` (the shipped decoder, `tte_hf.models.tte.images`, under a server-wide bound), `tokens`
(per-item token limit, usage), `reasoner` (reasoner failures contained per item -> 502), `reasoning`
(remote reasoning off the model worker), `batcher` (dynamic micro-batching), `pools` (daemon
threads), `app` (FastAPI), `server` (uvicorn). Image URLs are fetched with the shipped
`tte_hf.models.tte.fetch`, as an in-process encode fetches them. FastAPI and uvicorn are imported only
when `app` / `server` are.
"""

from __future__ import annotations

__all__ = ["BackgroundServer", "ServeConfig", "create_app", "run"]


def __getattr__(name: str):
    if name in ("ServeConfig", "create_app"):
        from . import app

        return getattr(app, name)
    if name in ("BackgroundServer", "run"):
        from . import server

        return getattr(server, name)
    raise AttributeError(name)
