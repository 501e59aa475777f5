"""Decoding of reasoning traces: the greedy defaults every ``generate`` call passes explicitly, and the
trace-length control of the unified model's single pass.

Shared by the reasoners (`reasoner_transformers`) and the unified model (`modeling_tte`), so a reasoner
needs no modeling code. Self-contained (torch + transformers): shipped next to the weights for
``trust_remote_code``.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

#: Every ``generate`` setting that decides which token comes next, at its greedy / neutral value.
#: ``generate`` fills each setting left unset from the checkpoint's ``generation_config`` (Qwen2.5-VL's
#: samples, with a repetition penalty), so traces pass all of them explicitly: what is decoded is what
#: `decoding_settings` returns, and ``describe()`` reports that.
DECODING_DEFAULTS: dict = {
    "do_sample": False,
    "num_beams": 1,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "min_p": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "length_penalty": 1.0,
    "min_length": 0,
    "min_new_tokens": None,
    "bad_words_ids": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "sequence_bias": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "exponential_decay_length_penalty": None,
    "renormalize_logits": False,
    "remove_invalid_values": False,
    "num_return_sequences": 1,
}


def decoding_settings(**settings) -> dict:
    """Greedy decoding unless ``settings`` ask otherwise (e.g. ``do_sample=True, temperature=0.7``): every
    key of `DECODING_DEFAULTS`, to pass to ``generate`` as keyword arguments."""
    unknown = sorted(set(settings) - set(DECODING_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown generation setting(s) {unknown}; use keys of {sorted(DECODING_DEFAULTS)}.")
    return {**DECODING_DEFAULTS, **settings}


class HoldTraceEnd(LogitsProcessor):
    """Keeps the end token out of the first ``min_trace_tokens`` of each trace. ``generate``'s own
    ``min_new_tokens`` cannot: the unified pass decodes with ``eos_token_id=None`` (rows keep decoding
    past their end), and without an end token ``generate`` adds no minimum-length processor."""

    def __init__(self, prompt_len: int, min_trace_tokens: int, end_token_id: int):
        self.prompt_len, self.min_trace_tokens, self.end_token_id = prompt_len, min_trace_tokens, end_token_id

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] - self.prompt_len < self.min_trace_tokens:
            scores[:, self.end_token_id] = float("-inf")
        return scores


def min_trace_tokens(settings: dict, prompt_len: int) -> int:
    """The fewest trace tokens ``settings`` ask for: ``min_new_tokens``, or ``min_length`` less the
    (padded) prompt, whichever is more."""
    return max(settings.get("min_new_tokens") or 0, (settings.get("min_length") or 0) - prompt_len, 0)


class ForceTraceEnd(LogitsProcessor):
    """Forces the end token at position ``max_trace_tokens`` of rows that have not ended yet."""

    def __init__(self, prompt_len: int, max_trace_tokens: int, end_token_id: int):
        self.prompt_len, self.max_trace_tokens, self.end_token_id = prompt_len, max_trace_tokens, end_token_id

    def __call__(self, input_ids, scores):
        generated = input_ids[:, self.prompt_len :]
        if generated.shape[1] == self.max_trace_tokens:
            open_rows = ~(generated == self.end_token_id).any(-1)
            forced = torch.full_like(scores[open_rows], float("-inf"))
            forced[:, self.end_token_id] = 0
            scores[open_rows] = forced
        return scores


class TraceEndFed(StoppingCriteria):
    """Stops once every row's end token has been *fed* to the model, so its hidden state exists."""

    def __init__(self, prompt_len: int, end_token_id: int):
        self.prompt_len, self.end_token_id = prompt_len, end_token_id

    def __call__(self, input_ids, scores, **kwargs):
        fed = input_ids[:, self.prompt_len : -1]
        done = (fed == self.end_token_id).any(-1)
        return done.all().expand(input_ids.shape[0])


def trace_controls(
    settings: dict, prompt_len: int, max_trace_tokens: int, end_token_id: int
) -> tuple[LogitsProcessorList, StoppingCriteriaList]:
    """The logits processors and stopping criteria of the unified pass (which decodes with
    ``eos_token_id=None``): the caller's own ones popped from ``settings``, then `HoldTraceEnd` (when the
    settings ask for a minimum length), `ForceTraceEnd` at ``max_trace_tokens`` and `TraceEndFed`."""
    processors = LogitsProcessorList(settings.pop("logits_processor", None) or [])
    least = min_trace_tokens(settings, prompt_len)
    if least:
        processors.append(HoldTraceEnd(prompt_len, least, end_token_id))
    processors.append(ForceTraceEnd(prompt_len, max_trace_tokens, end_token_id))
    criteria = StoppingCriteriaList(settings.pop("stopping_criteria", None) or [])
    criteria.append(TraceEndFed(prompt_len, end_token_id))
    return processors, criteria
