"""The OpenAI-compatible embeddings app (FastAPI): ``POST /v1/embeddings``, ``GET /v1/models``, ``GET /health``.

The handler validates the request and loads its images in a worker thread (`schemas.parse_request`),
then hands the inputs to the `MicroBatcher`, whose single thread owns the model: concurrent requests
share encode calls, and the reasoner (in process, vLLM, or a remote generation server — whatever the
ST model was given) sees them as one batch. Status codes: 400 bad input (naming the item), 401 bad
API key, 404 unknown model, 413 body too large, 429 queue full, 502 reasoner failure (only the
requests whose items it failed on), 503 shutting down.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

try:
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("tte-hf serve needs FastAPI and uvicorn: pip install 'tte-hf[serve]'") from err

from ..models.tte.st_state import LRUCache
from .batcher import BatchKey, Closed, ItemError, MicroBatcher, QueueFull
from .reasoner import ReasonerError, guard_reasoner
from .schemas import Limits, RequestError, embedding_response, error_body, parse_request

logger = logging.getLogger("tte_hf.serving")


@dataclass
class ServeConfig:
    """Server settings. ``api_key`` (never logged or shown) makes every ``/v1`` route require
    ``Authorization: Bearer <key>``."""

    model_name: str = "tte"
    max_batch: int = 32
    batch_window_ms: float = 5.0
    max_queue: int = 1024
    max_request_bytes: int = 64 * 1024 * 1024
    limits: Limits = field(default_factory=Limits)
    default_input_type: str = "query"
    ecr_cache_size: int = 100_000
    api_key: str | None = field(default=None, repr=False)


def _error(status: int, message: str, *, param: str | None = None, kind: str = "invalid_request_error", headers=None):
    return JSONResponse(error_body(message, param=param, kind=kind), status_code=status, headers=headers)


def _cause(err: BaseException, kind: type) -> BaseException | None:
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, kind):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def make_encoder(model, max_batch: int):
    """The batcher's encode function: ``encode_query`` / ``encode_document`` with the key's options."""

    def encode(inputs: list[Any], key: BatchKey):
        method = model.encode_query if key.side == "query" else model.encode_document
        kwargs: dict[str, Any] = {"batch_size": max_batch, "show_progress_bar": False, "normalize_embeddings": True}
        if key.think is not None:
            kwargs["think"] = key.think
        if key.dimensions is not None:
            kwargs["truncate_dim"] = key.dimensions
        return method(inputs, convert_to_numpy=True, **kwargs)

    return encode


def prepare_model(model, config: ServeConfig) -> bool:
    """Guard the model's reasoner (its failures become `ReasonerError`) and bound its ECR cache.
    Returns whether the model has a reasoner."""
    module = model[0]
    reasoner = getattr(module, "reasoner", None)
    if reasoner is not None and hasattr(module, "set_reasoner"):
        module.set_reasoner(guard_reasoner(reasoner))
    cache = getattr(module, "ecr_cache", None)
    if isinstance(cache, dict):
        bounded: MutableMapping[str, str] = LRUCache(config.ecr_cache_size)
        bounded.update(cache)
        module.ecr_cache = bounded
    return reasoner is not None


def create_app(model, config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI app serving ``model`` (a TTE `SentenceTransformer`); run it with uvicorn."""
    config = config or ServeConfig()
    has_reasoner = prepare_model(model, config)
    dimension = model.get_embedding_dimension()
    state: dict[str, Any] = {"closing": False, "batcher": None}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["batcher"] = MicroBatcher(
            make_encoder(model, config.max_batch),
            max_batch=config.max_batch,
            window=config.batch_window_ms / 1000,
            max_queue=config.max_queue,
        )
        app.state.batcher = state["batcher"]
        try:
            yield
        finally:
            # uvicorn has stopped accepting connections and waited for the open requests; finish the queue.
            state["closing"] = True
            await run_in_threadpool(state["batcher"].close)

    app = FastAPI(title="tte-hf embeddings", lifespan=lifespan)

    def authorized(request: Request) -> bool:
        if config.api_key is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), config.api_key.encode())

    def unauthorized():
        return _error(401, "missing or invalid API key.", kind="authentication_error", headers={"WWW-Authenticate": "Bearer"})  # fmt: skip

    @app.get("/health")
    async def health():
        batcher = state["batcher"]
        status = "shutting_down" if state["closing"] or batcher is None else "ok"
        body = {"status": status, "queued": batcher.pending if batcher else 0, "max_queue": config.max_queue}
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    @app.get("/v1/models")
    async def models(request: Request):
        if not authorized(request):
            return unauthorized()
        card = {"id": config.model_name, "object": "model", "created": 0, "owned_by": "tte-hf"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        if not authorized(request):
            return unauthorized()
        batcher = state["batcher"]
        if state["closing"] or batcher is None:
            return _error(503, "the server is shutting down.", kind="service_unavailable")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > config.max_request_bytes:
            return _error(413, f"request body over max_request_bytes={config.max_request_bytes}.")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > config.max_request_bytes:
                return _error(413, f"request body over max_request_bytes={config.max_request_bytes}.")
            chunks.append(chunk)
        try:
            parsed = await run_in_threadpool(_parse, b"".join(chunks), config, dimension)
        except RequestError as err:
            return _error(err.status, err.message, param=err.param)
        if parsed.model is not None and parsed.model != config.model_name:
            return _error(404, f"model {parsed.model!r} is not served here; use {config.model_name!r}.", param="model")
        if parsed.think is True and not has_reasoner:
            return _error(400, "think=true, but this server has no reasoner; send think=false.", param="think")
        key = BatchKey(parsed.side, parsed.think, parsed.dimensions)
        try:
            future = batcher.submit(parsed.inputs, key)
        except QueueFull as err:
            return _error(429, str(err), kind="rate_limit_error", headers={"Retry-After": "1"})
        except Closed as err:
            return _error(503, str(err), kind="service_unavailable")
        try:
            vectors = await asyncio.wrap_future(future)
        except ItemError as err:
            where = f"input[{err.index}]"
            reasoner_error = _cause(err.error, ReasonerError)
            if reasoner_error is not None:
                return _error(502, f"{where}: {reasoner_error}", param=where, kind="reasoner_error")
            if isinstance(err.error, (ValueError, TypeError)):
                return _error(400, f"{where}: {err.error}", param=where)
            logger.exception("encoding failed on %s", where)
            return _error(500, f"{where}: internal error while embedding.", param=where, kind="server_error")
        except Exception:
            logger.exception("encoding failed")
            return _error(500, "internal error while embedding.", kind="server_error")
        return JSONResponse(embedding_response(vectors, config.model_name, parsed.encoding_format))

    return app


def _parse(raw: bytes, config: ServeConfig, dimension: int):
    import json

    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(f"malformed JSON body: {err}") from err
    return parse_request(body, config.limits, default_input_type=config.default_input_type, max_dimensions=dimension)
