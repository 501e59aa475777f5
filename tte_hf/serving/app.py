"""The OpenAI-compatible embeddings app (FastAPI): ``POST /v1/embeddings``, ``GET /v1/models``, ``GET /health``.

A request goes through: a queue ticket (429 before its body is read, `limits`), the body (413 over
``max_request_bytes``), JSON + validation (400 naming the item), its images (fetched with the shipped `fetch`,
decoded and downscaled with `images`, every pixel reserved against the request's and the server's
budgets), a token count per item (`tokens`), the reasoning stage for a remote reasoner
(`reasoning`), then the `MicroBatcher`, whose single thread owns the model. One deadline
(``request_timeout``) covers it all: past it the request alone gets a 504. Status codes: 400 bad
input, 401 bad API key, 404 unknown model, 408 body not received in time, 413 too large, 429 queue
or budget full, 502 reasoner failure (only the requests whose items it failed on; the details go to
the log, not to the client), 503 shutting down, 504 deadline passed. ``GET /health`` answers 503 ``draining`` once shutdown began.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

try:
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse
    from starlette.requests import ClientDisconnect
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("tte-hf serve needs FastAPI and uvicorn: pip install 'tte-hf[serve]'") from err

from ..models.tte.fetch import FetchError, SafeFetcher
from ..models.tte.st_state import LRUCache
from .batcher import BatchKey, Closed, ItemError, MicroBatcher, QueueFull
from .images import ImageDecoder
from .limits import Admission, Budgets, Ticket
from .pools import DaemonPool
from .reasoner_guard import GuardedReasoner, ReasonerError, guard_reasoner
from .reasoning import ReasoningStage
from .schemas import (
    EmbeddingRequest,
    Limits,
    RequestError,
    decode_base64,
    embedding_response,
    error_body,
    image_refs,
    parse_request,
)
from .tokens import TokenCounter, default_max_input_tokens

logger = logging.getLogger("tte_hf.serving")

ERROR_KINDS = {401: "authentication_error", 408: "timeout_error", 429: "rate_limit_error"}
ERROR_KINDS.update({500: "server_error", 502: "reasoner_error", 503: "service_unavailable", 504: "timeout_error"})


@dataclass
class ServeConfig:
    """Server settings. ``api_key`` (never logged or shown) makes every ``/v1`` route require
    ``Authorization: Bearer <key>``. ``limits.max_input_tokens=None`` takes the model's context length."""

    model_name: str = "tte"
    max_batch: int = 32
    batch_window_ms: float = 5.0
    max_queue: int = 1024
    max_request_bytes: int = 64 * 1024 * 1024
    limits: Limits = field(default_factory=Limits)
    budgets: Budgets | None = None  #: None: defaults, with ``max_queue`` as given above
    default_input_type: str = "query"
    ecr_cache_size: int = 100_000
    api_key: str | None = field(default=None, repr=False)
    request_timeout: float = 120.0
    graceful_timeout: float = 30.0
    max_concurrent_fetches: int = 16
    max_concurrent_decodes: int = 2
    reasoning_workers: int = 32


class Reply(Exception):
    """An error answer: HTTP ``status`` with OpenAI's error body."""

    def __init__(self, status: int, message: str, param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers

    @classmethod
    def of(cls, err: RequestError) -> Reply:
        headers = {"Retry-After": "1"} if err.status == 429 else None
        return cls(err.status, err.message, err.param, headers)

    def response(self) -> JSONResponse:
        kind = ERROR_KINDS.get(self.status, "invalid_request_error")
        return JSONResponse(error_body(self.message, param=self.param, kind=kind), self.status, headers=self.headers)


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


def prepare_model(model, config: ServeConfig) -> GuardedReasoner | None:
    """Bound the model's ECR cache and guard its reasoner (failures become `ReasonerError`, traces of
    a partly failed batch are kept in that cache). Returns the guard (None: no reasoner)."""
    module = model[0]
    cache = getattr(module, "ecr_cache", None)
    if isinstance(cache, dict):
        bounded: MutableMapping[str, str] = LRUCache(config.ecr_cache_size)
        bounded.update(cache)
        module.ecr_cache = bounded
    reasoner = getattr(module, "reasoner", None)
    if reasoner is None or not hasattr(module, "set_reasoner"):
        return None
    guard = guard_reasoner(reasoner, store=lambda key, trace: module.ecr_cache.__setitem__(key, trace))
    module.set_reasoner(guard)
    return guard


class ServerState:
    """What the routes share: the model, the budgets, the workers, and whether shutdown began."""

    def __init__(self, model, config: ServeConfig):
        self.model, self.config = model, config
        self.guard = prepare_model(model, config)
        self.dimension = model.get_embedding_dimension()
        budgets = config.budgets or Budgets(max_queue=config.max_queue)
        self.admission = Admission(budgets)
        module = model[0]
        max_tokens = config.limits.max_input_tokens or default_max_input_tokens(module)
        self.tokens = TokenCounter(module, max_tokens)
        self.decoder = ImageDecoder(
            max_image_pixels=config.limits.max_image_pixels,
            target_pixels=_processor_max_pixels(module),
            max_concurrent_decodes=config.max_concurrent_decodes,
        )
        self.fetcher = SafeFetcher(
            timeout=config.limits.url_timeout,
            max_bytes=config.limits.max_image_bytes,
            allow_hosts=config.limits.image_url_allow_hosts,
            max_concurrent=config.max_concurrent_fetches,
        )
        self.parse_pool = DaemonPool(max(2, config.max_concurrent_decodes * 2), "tte-parse")
        self.fetch_pool = DaemonPool(config.max_concurrent_fetches, "tte-fetch")
        self.reasoning = ReasoningStage(model, self.guard, config.reasoning_workers) if self.guard else None
        self.batcher: MicroBatcher | None = None
        self.draining = False
        self.exit_started: float | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.cutoff: asyncio.Future | None = None  #: done shortly before uvicorn would cancel open requests

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.cutoff = self.loop.create_future()
        self.batcher = MicroBatcher(
            make_encoder(self.model, self.config.max_batch),
            max_batch=self.config.max_batch,
            window=self.config.batch_window_ms / 1000,
            max_queue=self.config.max_queue,
            scope=self.guard.remembering_failures if self.guard else None,
        )

    def begin_drain(self) -> None:
        """Shutdown began (signal received): /health turns 503, new requests get 503, and requests
        still waiting half a second before ``graceful_timeout`` ends are answered 503 (uvicorn would
        cancel them a moment later, answering nothing)."""
        if self.draining:
            return
        self.draining, self.exit_started = True, time.monotonic()
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._arm_cutoff)

    def _arm_cutoff(self) -> None:
        def cut() -> None:
            if self.cutoff is not None and not self.cutoff.done():
                self.cutoff.set_result(None)

        self.loop.call_later(max(0.0, self.config.graceful_timeout - 0.5), cut)

    def stop(self) -> bool:
        """Finish the queue within what is left of ``graceful_timeout`` (at least a second)."""
        self.begin_drain()
        left = self.config.graceful_timeout - (time.monotonic() - (self.exit_started or time.monotonic()))
        finished = self.batcher.close(timeout=max(1.0, left)) if self.batcher else True
        if not finished:
            logger.warning("the model worker did not finish within graceful_timeout; its requests were failed.")
        return finished


def _processor_max_pixels(module) -> int | None:
    """The most pixels the model keeps of an image: the module's ``max_pixels`` or the processor's."""
    limits = [getattr(module, "max_pixels", None)]
    image_processor = getattr(getattr(module, "processor", None), "image_processor", None)
    size = getattr(image_processor, "size", None)  # a dict, or transformers' SizeDict
    for name in ("longest_edge", "max_pixels"):
        limits.append(size.get(name) if hasattr(size, "get") else getattr(size, name, None))
    limits.append(getattr(image_processor, "max_pixels", None))
    limits = [int(v) for v in limits if isinstance(v, (int, float)) and v > 0]
    return min(limits) if limits else None


def create_app(model, config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI app serving ``model`` (a TTE `SentenceTransformer`); run it with uvicorn."""
    state = ServerState(model, config or ServeConfig())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.start()  # in the event loop: the drain cutoff lives there
        app.state.batcher = state.batcher
        try:
            yield
        finally:
            # uvicorn has stopped accepting connections and waited (graceful_timeout) for open requests
            await run_in_threadpool(state.stop)

    app = FastAPI(title="tte-hf embeddings", lifespan=lifespan)
    app.state.serve = state
    _add_routes(app, state)
    return app


def _add_routes(app: FastAPI, state: ServerState) -> None:
    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception):
        logger.error("unexpected error on %s", request.url.path, exc_info=err)
        return Reply(500, "internal error.").response()

    @app.get("/health")
    async def health():
        status = "draining" if state.draining or state.batcher is None else "ok"
        body = {"status": status, "queued": state.admission.snapshot()["waiting"], "max_queue": state.config.max_queue}
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    @app.get("/v1/models")
    async def models(request: Request):
        if not _authorized(request, state.config.api_key):
            return _unauthorized()
        card = {"id": state.config.model_name, "object": "model", "created": 0, "owned_by": "tte-hf"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        if not _authorized(request, state.config.api_key):
            return _unauthorized()
        try:
            return await handle_embeddings(state, request)
        except Reply as reply:
            return reply.response()


def _authorized(request: Request, api_key: str | None) -> bool:
    if api_key is None:
        return True
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), api_key.encode())


def _unauthorized() -> JSONResponse:
    return Reply(401, "missing or invalid API key.", headers={"WWW-Authenticate": "Bearer"}).response()


async def handle_embeddings(state: ServerState, request: Request) -> JSONResponse:
    """One ``/v1/embeddings`` request, start to end (raises `Reply` for every error answer)."""
    if state.draining or state.batcher is None:
        raise Reply(503, "the server is shutting down.")
    deadline = time.monotonic() + state.config.request_timeout
    try:
        ticket = state.admission.ticket()
    except RequestError as err:
        raise Reply.of(err) from None
    try:
        raw = await _wait(state, asyncio.ensure_future(_read_body(state, request, ticket)), deadline, late=408)
        parsed, prompt_tokens = await _prepare(state, raw, ticket, deadline)
        del raw
        usage = {"prompt_tokens": prompt_tokens}
        if state.reasoning is not None and state.reasoning.wanted(parsed.inputs, parsed.side, parsed.think):
            traces = await _wait(state, state.reasoning.submit(parsed.inputs, parsed.side, parsed.think), deadline)
            usage["reasoning_tokens"] = sum(state.tokens.text_tokens(t) for t in traces if t)
        vectors = await _embed(state, parsed, ticket, deadline)
    except RequestError as err:
        raise Reply.of(err) from None
    except ItemError as err:
        raise _item_reply(err) from None
    finally:
        ticket.release()
    return JSONResponse(embedding_response(vectors, state.config.model_name, parsed.encoding_format, usage))


async def _read_body(state: ServerState, request: Request, ticket: Ticket) -> bytes:
    limit = state.config.max_request_bytes
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise Reply(400, "invalid Content-Length header.")
        if int(length) > limit:
            raise Reply(413, f"request body over max_request_bytes={limit}.")
        ticket.reserve_bytes(int(length))
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Reply(413, f"request body over max_request_bytes={limit}.")
            if length is None:
                ticket.reserve_bytes(len(chunk))
            chunks.append(chunk)
    except ClientDisconnect:
        logger.info("client disconnected during the upload (%d bytes read)", size)
        raise Reply(400, "the client disconnected before the body was complete.") from None
    return b"".join(chunks)


async def _prepare(state: ServerState, raw: bytes, ticket: Ticket, deadline: float) -> tuple[EmbeddingRequest, int]:
    """Parse and validate (thread), fetch image URLs (fetch threads), decode images and count tokens
    (thread); every step within the deadline."""
    parsed = await _wait(state, state.parse_pool.submit(_parse, raw, state), deadline)
    if parsed.model is not None and parsed.model != state.config.model_name:
        raise Reply(404, f"model {parsed.model!r} is not served here; use {state.config.model_name!r}.", "model")
    if parsed.think is True and state.guard is None:
        raise Reply(400, "think=true, but this server has no reasoner; send think=false.", "think")
    ticket.reserve_items(len(parsed.inputs))
    refs = image_refs(parsed.inputs)
    fetches = [(ref, state.fetch_pool.submit(state.fetcher.fetch, ref.url, deadline)) for ref in refs if ref.url]
    try:
        for ref, future in fetches:
            try:
                fetched = await _wait(state, future, deadline)
            except FetchError as err:
                logger.warning("%s: image URL not fetched: %s", ref.where, err)
                raise Reply(400, f"{ref.where}: {err.public}", ref.where) from None
            ref.data, ref.declared = fetched.data, fetched.content_type
    finally:
        for _, future in fetches:
            future.cancel()  # after a failure: the fetches not started yet never start
    prompt_tokens = await _wait(state, state.parse_pool.submit(_load_images, parsed, state, ticket), deadline)
    return parsed, prompt_tokens


def _parse(raw: bytes, state: ServerState) -> EmbeddingRequest:
    try:
        body = json.loads(raw)
    except RecursionError:
        raise RequestError("the JSON body is nested too deeply.") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, integers over 4300 digits
        raise RequestError(f"malformed JSON body: {str(err)[:200]}") from None
    config = state.config
    return parse_request(body, config.limits, default_input_type=config.default_input_type, max_dimensions=state.dimension)  # fmt: skip


def _load_images(parsed: EmbeddingRequest, state: ServerState, ticket: Ticket) -> int:
    """Every image's header first (pixels reserved, so a request over its budget decodes nothing),
    then the images decoded in place of their references; returns the request's tokens."""
    opened = []
    for ref in image_refs(parsed.inputs):
        data = decode_base64(ref, state.config.limits) if isinstance(ref.data, str) else ref.data
        declared = ref.declared if ref.url is None or (ref.declared or "").startswith("image/") else None
        image = state.decoder.open(data, ref.where, declared)
        ticket.reserve_pixels(image.size[0] * image.size[1], state.decoder.decoded_pixels(image.size), ref.where)
        opened.append((ref, image))
        ref.data = None
    loaded = {id(ref): state.decoder.load(image, ref.where) for ref, image in opened}
    for item in parsed.inputs:
        if isinstance(item, dict):
            item["images"] = [loaded[id(ref)] for ref in item.get("images", ())]
    return state.tokens.check(parsed.inputs)


async def _embed(state: ServerState, parsed: EmbeddingRequest, ticket: Ticket, deadline: float):
    key = BatchKey(parsed.side, parsed.think, parsed.dimensions)
    try:
        future = state.batcher.submit(parsed.inputs, key, on_start=ticket.started)
    except QueueFull as err:
        raise Reply(429, str(err), headers={"Retry-After": "1"}) from None
    except Closed as err:
        raise Reply(503, str(err)) from None
    try:
        return await _wait(state, future, deadline)
    except Closed as err:
        raise Reply(503, str(err)) from None


async def _wait(state: ServerState, future, deadline: float, late: int = 504):
    """The result of ``future`` (a thread's, or an asyncio task); HTTP ``late`` once ``deadline``
    passes, 503 at the shutdown cutoff (the future is then cancelled if it has not started, and its
    late outcome dropped quietly)."""
    wrapped = future if isinstance(future, asyncio.Future) else asyncio.wrap_future(future)
    waiters = {wrapped} if state.cutoff is None else {wrapped, state.cutoff}
    done, _ = await asyncio.wait(waiters, timeout=max(0.0, deadline - time.monotonic()), return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
    if wrapped in done:
        return wrapped.result()
    future.cancel()
    wrapped.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: no "never retrieved" log
    if state.cutoff is not None and state.cutoff.done():
        raise Reply(503, "the server shut down before this request finished.")
    if late == 408:
        raise Reply(408, "the request body did not arrive within the server's request timeout.")
    raise Reply(504, "the request did not finish within the server's request timeout.")


def _item_reply(err: ItemError) -> Reply:
    where = f"input[{err.index}]"
    if _cause(err.error, ReasonerError) is not None:
        logger.warning("%s: reasoner failure: %s", where, _cause(err.error, ReasonerError))
        return Reply(502, f"{where}: the reasoner failed on this input; retry later.", where)
    if isinstance(err.error, (ValueError, TypeError)):
        return Reply(400, f"{where}: {err.error}", where)
    logger.error("encoding failed on %s", where, exc_info=err.error)
    return Reply(500, f"{where}: internal error while embedding.", where)


def _cause(err: BaseException | None, kind: type) -> BaseException | None:
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, kind):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
