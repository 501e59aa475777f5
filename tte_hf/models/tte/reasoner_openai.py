"""Reasoner behind any OpenAI-compatible chat-completions endpoint (e.g. ``vllm serve`` with a 72B teacher).

Plain HTTP through ``urllib`` (no client library to install): images travel as base64 data URLs,
requests run with bounded concurrency, each with a timeout, and 429 / 5xx / timeouts / connection
errors / malformed replies are retried with exponential back-off (honouring ``Retry-After``); other
4xx answers are final. ``deadline`` bounds one request's attempts and back-off together. A batch in
which some requests fail raises `PartialGenerationError` carrying the traces that did come back. The API
key is read from an environment variable and never appears in messages, logs or ``repr``. A thought
the server returns apart from the answer (``reasoning_content``, as vLLM's reasoning parsers do) is put
back inside ``<think>`` tags, so the trace keeps the ECR layout.

Self-contained (standard library and sibling files, no ``openai`` client): shipped next to the weights
for ``trust_remote_code``; ``tte_hf.models.tte.reasoner_openai`` re-exports it.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .reasoner_base import ReasoningBackend, ReasoningRequest, describe_request, request_messages

logger = logging.getLogger(__name__)


class ReasonerRequestError(RuntimeError):
    """A request that failed for good (after the retries, or on a non-retryable answer)."""


class PartialGenerationError(ReasonerRequestError):
    """Some requests of a batch failed for good: ``outputs[i]`` is request i's trace or ``None``,
    ``errors[i]`` the reason for each ``None`` (callers keep the traces that came back)."""

    def __init__(self, outputs: list[str | None], errors: dict[int, str]):
        first = min(errors)
        super().__init__(f"{len(errors)} of {len(outputs)} requests failed; first: {errors[first]}")
        self.outputs, self.errors = outputs, errors


class _Retryable(Exception):
    pass


def image_data_url(image) -> str:
    """A PIL image as a ``data:image/png;base64,...`` URL (PNG: lossless, so cache keys stay meaningful)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def openai_messages(request: ReasoningRequest) -> list[dict[str, Any]]:
    """The chat messages of `request_messages`, with image placeholders filled by data URLs.

    Video frames are sent as a sequence of images, which every OpenAI-compatible server accepts.
    """
    pictures = iter([*request.images, *(request.video or ())])
    messages = []
    for message in request_messages(request):
        content = message["content"]
        if isinstance(content, list):
            parts = []
            for part in content:
                if part["type"] == "image":
                    parts.append({"type": "image_url", "image_url": {"url": image_data_url(next(pictures))}})
                elif part["type"] == "video":
                    for frame in request.video or ():
                        parts.append({"type": "image_url", "image_url": {"url": image_data_url(frame)}})
                else:
                    parts.append(part)
            content = parts
        messages.append({"role": message["role"], "content": content})
    return messages


class OpenAIReasoner(ReasoningBackend):
    """Sends each request as one chat completion to ``base_url`` (``.../v1``).

    ``temperature=0`` is greedy. ``api_key_env`` names the environment variable holding the key
    (none is sent when it is unset, as local servers expect).
    """

    def __init__(
        self,
        model: str,
        base_url: str = "http://127.0.0.1:8000/v1",
        *,
        revision: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = 0,
        max_concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        deadline: float | None = None,
    ):
        if max_concurrency <= 0 or max_retries < 0 or timeout <= 0 or (deadline is not None and deadline <= 0):
            raise ValueError("max_concurrency, timeout and deadline must be positive and max_retries non-negative.")
        self.model, self.revision = model, revision
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.api_key_env = api_key_env
        self.max_new_tokens, self.temperature, self.top_p, self.seed = max_new_tokens, temperature, top_p, seed
        self.max_concurrency, self.timeout = max_concurrency, timeout
        self.max_retries, self.backoff, self.max_backoff = max_retries, backoff, max_backoff
        self.deadline = deadline  # seconds for one request: every attempt and back-off together
        self.name = f"openai:{model}@{revision or 'served'}"

    thread_safe = True  # stateless HTTP calls: concurrent encodes need not wait for each other

    def __repr__(self) -> str:
        return f"OpenAIReasoner(model={self.model!r}, url={self.url!r})"

    def describe(self) -> dict[str, Any]:
        return self._sampling_description("openai", self.model)

    def generate(self, requests: Sequence[ReasoningRequest]) -> list[str]:
        if not requests:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(requests))) as pool:
            futures = [pool.submit(self._complete, request) for request in requests]
        outputs: list[str | None] = []
        errors: dict[int, str] = {}
        for index, future in enumerate(futures):
            error = future.exception()
            outputs.append(None if error else future.result())
            if error is not None:
                errors[index] = str(error) if isinstance(error, ReasonerRequestError) else repr(error)
        if errors:
            raise PartialGenerationError(outputs, errors)
        return outputs

    def _payload(self, request: ReasoningRequest) -> bytes:
        body = {
            "model": self.model,
            "messages": openai_messages(request),
            "max_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
        }
        if self.seed is not None:
            body["seed"] = self.seed
        return json.dumps(body).encode()

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _complete(self, request: ReasoningRequest) -> str:
        payload = self._payload(request)
        who = describe_request(request)
        last_error = "no attempt made"
        give_up = time.monotonic() + self.deadline if self.deadline is not None else float("inf")
        for attempt in range(self.max_retries + 1):
            remaining = give_up - time.monotonic()
            if remaining <= 0:
                break
            try:
                return self._post(payload, min(self.timeout, remaining))
            except _Retryable as err:
                last_error, retry_after = str(err), getattr(err, "retry_after", None)
            except ReasonerRequestError as err:
                raise ReasonerRequestError(f"{who}: {err}") from None
            if attempt == self.max_retries:
                break
            delay = min(self.max_backoff, self.backoff * 2**attempt) * (0.5 + random.random() / 2)
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.max_backoff))
            if time.monotonic() + delay >= give_up:
                break
            logger.warning("%s: %s (attempt %d); retrying in %.1fs", who, last_error, attempt + 1, delay)
            time.sleep(delay)
        raise ReasonerRequestError(
            f"{who}: {self.url} failed after {attempt + 1} attempts; last error: {last_error}. "
            "Check that the server is up and not overloaded, or raise max_retries/timeout."
        )

    def _post(self, payload: bytes, timeout: float | None = None) -> str:
        timeout = self.timeout if timeout is None else timeout
        outgoing = urllib.request.Request(self.url, data=payload, headers=self._headers(), method="POST")
        try:
            with urllib.request.urlopen(outgoing, timeout=timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as err:
            detail = err.read()[:300].decode("utf-8", "replace")
            if err.code == 429 or err.code >= 500:
                retry = _Retryable(f"HTTP {err.code}: {detail}")
                retry_after = err.headers.get("Retry-After") if err.headers else None
                retry.retry_after = float(retry_after) if retry_after and retry_after.isdigit() else None
                raise retry from None
            raise ReasonerRequestError(f"{self.url} answered HTTP {err.code}: {detail}") from None
        except TimeoutError as err:
            raise _Retryable(f"timed out after {timeout:.3g}s") from err
        except http.client.HTTPException as err:  # IncompleteRead, RemoteDisconnected, BadStatusLine, ...
            raise _Retryable(f"broken reply: {type(err).__name__}") from err
        except (urllib.error.URLError, ConnectionError, OSError) as err:
            reason = getattr(err, "reason", err)
            if isinstance(reason, TimeoutError):
                raise _Retryable(f"timed out after {timeout:.3g}s") from err
            raise _Retryable(f"connection failed: {reason}") from err
        try:
            message = json.loads(body)["choices"][0]["message"]
            content, thought = message.get("content"), message.get("reasoning_content")
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError, AttributeError) as err:
            raise _Retryable(f"malformed reply ({type(err).__name__}): {body[:120]!r}") from err
        if content is None and isinstance(thought, str):
            content = ""  # all of the budget went to the thought
        if not isinstance(content, str):
            raise _Retryable(f"malformed reply: message content is {type(content).__name__}")
        return with_thought(content, thought)


def with_thought(content: str, thought: str | None) -> str:
    """``content`` with a separately returned ``thought`` put back in front inside ``<think>`` tags.

    Servers with a reasoning parser (``vllm serve --reasoning-parser``) strip the thought out of
    ``content``; the ECR is thought + final part, so dropping it would leave only the final line."""
    if not isinstance(thought, str) or not thought.strip():
        return content
    return f"<think>{thought}</think>{content}"
