"""``tte-hf serve``: an OpenAI-compatible ``/v1/embeddings`` server for a TTE model (micro-batched)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="TTE sentence-transformers model: local folder or Hub repo id.")
    parser.add_argument("--host", default="127.0.0.1", help="Bind address (0.0.0.0 to listen on all interfaces).")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", help="The 'model' clients send (default: the folder / repo name).")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: the model's choice).")
    parser.add_argument("--trust-remote-code", action="store_true", help="Needed for TTE models from the Hub.")
    reasoner = parser.add_argument_group("reasoner (default: the one the model's config names)")
    reasoner.add_argument("--reasoner-endpoint", help="OpenAI-compatible generation server, e.g. http://gpu1:8001/v1 (vllm serve).")  # fmt: skip
    reasoner.add_argument("--reasoner-model", help="Model name on that server (or the checkpoint for --reasoner-vllm).")
    reasoner.add_argument("--reasoner-vllm", action="store_true", help="Run --reasoner-model in process with vLLM.")
    reasoner.add_argument("--tensor-parallel-size", type=int, default=1, help="vLLM tensor parallelism (in process).")
    reasoner.add_argument("--reasoner-max-new-tokens", type=int, default=256)
    reasoner.add_argument("--reasoner-max-retries", type=int, default=2, help="Retries per remote reasoner call (429/5xx/timeouts; other 4xx are final).")  # fmt: skip
    reasoner.add_argument("--ecr-cache", help="SQLite file: traces persist across restarts and replicas on one host (WAL: local disk, not NFS). Best-effort: a locked or broken file is a cache miss, logged once.")  # fmt: skip
    limits = parser.add_argument_group("batching and limits")
    limits.add_argument("--max-batch", type=int, default=32, help="Most inputs per encode call.")
    limits.add_argument("--batch-window-ms", type=float, default=5.0, help="How long the batcher waits for more.")
    limits.add_argument("--max-queue", type=int, default=1024, help="Requests waiting; beyond it: HTTP 429.")
    limits.add_argument("--max-items", type=int, default=256, help="Inputs per request.")
    limits.add_argument("--max-request-mb", type=float, default=64.0)
    limits.add_argument("--max-image-mb", type=float, default=10.0)
    limits.add_argument("--max-image-pixels", type=int, default=4096 * 4096)
    limits.add_argument("--allow-image-urls", action="store_true", help="Fetch http(s) image URLs (off: data URLs only). Only global addresses, no redirects.")  # fmt: skip
    limits.add_argument("--image-url-allow-hosts", default="", help="Comma-separated host[:port], IP[:port], [IPv6]:port or CIDR entries fetched although not global (an intranet image store; tests).")  # fmt: skip
    limits.add_argument("--image-url-timeout", type=float, default=10.0, help="One deadline per image URL fetch (seconds).")  # fmt: skip
    limits.add_argument("--max-image-urls", type=int, default=16, help="Image URLs per request.")
    limits.add_argument("--max-concurrent-fetches", type=int, default=16, help="Image URL fetches at once (server-wide).")  # fmt: skip
    limits.add_argument("--max-concurrent-decodes", type=int, default=2, help="Images decoded at full size at once (server-wide): bounds decoding memory.")  # fmt: skip
    limits.add_argument("--max-input-tokens", type=int, help="Tokens per input (text, reasoning, images); over it: 400. Default: the model's context length.")  # fmt: skip
    limits.add_argument("--max-request-pixels", type=int, default=64 * 2**20, help="Pixels per request, counted at the images' full sizes (what decoding costs); over it: 413.")  # fmt: skip
    limits.add_argument("--max-queue-pixels", type=int, default=256 * 2**20, help="Pixels held by all waiting requests, counted after downscaling to the processor's max_pixels; beyond it: 429.")  # fmt: skip
    limits.add_argument("--max-queue-items", type=int, default=16_384, help="Inputs held by all waiting requests; beyond it: 429.")  # fmt: skip
    limits.add_argument("--max-queue-mb", type=float, default=512.0, help="Request bodies held at once; beyond it: 429.")  # fmt: skip
    limits.add_argument("--request-timeout", type=float, default=120.0, help="Deadline per request (seconds); past it: 504 for that request.")  # fmt: skip
    limits.add_argument("--default-input-type", choices=["query", "document"], default="query")
    parser.add_argument("--api-key-env", default="TTE_HF_API_KEY", help="Env var holding the API key (required when set).")  # fmt: skip
    parser.add_argument("--graceful-timeout", type=float, default=30.0, help="Seconds to finish requests on shutdown, hung reasoner or not.")  # fmt: skip


def _reasoner(args: argparse.Namespace):
    from ..reasoning import load_reasoner

    if args.reasoner_vllm:
        if not args.reasoner_model:
            raise ValueError("--reasoner-vllm needs --reasoner-model (the reasoner checkpoint).")
        return load_reasoner(
            backend="vllm",
            model=args.reasoner_model,
            tensor_parallel_size=args.tensor_parallel_size,
            max_new_tokens=args.reasoner_max_new_tokens,
        )
    if args.reasoner_endpoint:
        if not args.reasoner_model:
            raise ValueError("--reasoner-endpoint needs --reasoner-model (the model name on that server).")
        return load_reasoner(
            backend="openai",
            model=args.reasoner_model,
            base_url=args.reasoner_endpoint,
            max_new_tokens=args.reasoner_max_new_tokens,
            max_retries=args.reasoner_max_retries,
            deadline=args.request_timeout,  # a hung server costs a request its deadline, not 3 x 120 s
        )
    return None


def run(args: argparse.Namespace) -> int:
    from sentence_transformers import SentenceTransformer

    try:
        from ..serving import create_app
        from ..serving import run as serve
    except ImportError as err:
        print(f"tte-hf serve: error: {err}", file=sys.stderr)
        return 2
    model = SentenceTransformer(args.model, device=args.device, trust_remote_code=args.trust_remote_code)
    module = model[0]
    try:
        backend = _reasoner(args)
        if backend is not None:
            module.set_reasoner(backend)
        if args.ecr_cache:
            if getattr(module, "reasoner", None) is None:
                raise ValueError("--ecr-cache needs a reasoner (the model's own or --reasoner-*).")
            from ..reasoning import CachedReasoner, ECRCache

            cache = ECRCache(args.ecr_cache, timeout=1.0, best_effort=True)  # a locked file: a miss, not a stall
            module.set_reasoner(CachedReasoner(module.reasoner, cache))
        _bound_remote_reasoner(module, args.request_timeout)
        config = _config(args)
    except (ValueError, TypeError) as err:
        print(f"tte-hf serve: error: {err}", file=sys.stderr)
        return 2
    print(
        f"Serving {config.model_name!r} on http://{args.host}:{args.port}/v1/embeddings "
        f"(API key {'required' if config.api_key else 'off'}; reasoner: {getattr(getattr(module, 'reasoner', None), 'name', None)})",
        file=sys.stderr,
    )
    serve(create_app(model, config), host=args.host, port=args.port, graceful_timeout=args.graceful_timeout)
    return 0


def _bound_remote_reasoner(module, seconds: float) -> None:
    """A remote reasoner the model's config built (no --reasoner-endpoint) gets the request deadline
    too, so a hung generation server holds a thread for one request's time, not retries x 120 s."""
    from ..models.tte.reasoner_openai import OpenAIReasoner

    backend = getattr(module, "reasoner", None)
    backend = getattr(backend, "backend", backend)  # under a CachedReasoner
    if isinstance(backend, OpenAIReasoner) and backend.deadline is None:
        backend.deadline = seconds


def _config(args: argparse.Namespace):
    from ..serving import ServeConfig
    from ..serving.limits import Budgets
    from ..serving.schemas import Limits

    max_request_bytes = int(args.max_request_mb * 2**20)
    budgets = Budgets(
        max_queue=args.max_queue,
        queue_items=args.max_queue_items,
        queue_pixels=args.max_queue_pixels,
        queue_bytes=int(args.max_queue_mb * 2**20),
        request_pixels=args.max_request_pixels,
    )
    if budgets.queue_bytes < max_request_bytes or budgets.queue_pixels < budgets.request_pixels:
        raise ValueError("--max-queue-mb and --max-queue-pixels must be at least one request's limit.")
    if budgets.queue_items < args.max_items:
        raise ValueError("--max-queue-items must be at least --max-items.")
    if min(args.max_concurrent_fetches, args.max_concurrent_decodes, args.max_queue) < 1:
        raise ValueError("--max-concurrent-fetches, --max-concurrent-decodes and --max-queue must be >= 1.")
    if min(args.request_timeout, args.graceful_timeout, args.image_url_timeout) <= 0:
        raise ValueError("--request-timeout, --graceful-timeout and --image-url-timeout must be positive.")
    return ServeConfig(
        model_name=args.served_model_name or Path(args.model.rstrip("/")).name,
        max_batch=args.max_batch,
        batch_window_ms=args.batch_window_ms,
        max_queue=args.max_queue,
        max_request_bytes=max_request_bytes,
        budgets=budgets,
        limits=Limits(
            max_items=args.max_items,
            max_image_bytes=int(args.max_image_mb * 2**20),
            max_image_pixels=args.max_image_pixels,
            allow_image_urls=args.allow_image_urls,
            url_timeout=args.image_url_timeout,
            max_image_urls=args.max_image_urls,
            image_url_allow_hosts=tuple(h for h in args.image_url_allow_hosts.split(",") if h.strip()),
            max_input_tokens=args.max_input_tokens,
        ),
        default_input_type=args.default_input_type,
        api_key=os.environ.get(args.api_key_env) or None,
        request_timeout=args.request_timeout,
        graceful_timeout=args.graceful_timeout,
        max_concurrent_fetches=args.max_concurrent_fetches,
        max_concurrent_decodes=args.max_concurrent_decodes,
    )
