"""Reads off the token ids `TTEUnifiedModel.generate_and_embed` pools, inside a unified ST model."""

from __future__ import annotations

from transformers import LogitsProcessor


class ForceTokens(LogitsProcessor):
    """Makes the model generate ``ids`` right after the prompt."""

    def __init__(self, prompt_len: int, ids: list[int]):
        self.prompt_len, self.ids = prompt_len, ids

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_len
        if step < len(self.ids):
            scores[:] = float("-inf")
            scores[:, self.ids[step]] = 0
        return scores


def generated_sequences(st, inputs, monkeypatch, force_ids: list[int] | None = None) -> list[list[int]]:
    """``st.encode_query(inputs)``; returns, per generated row (in ST's batch order), the ids under the
    mask the head pools: prompt + generated trace + end token. ``force_ids`` fixes the trace's tokens."""
    model = st[0].model
    read: list[list[int]] = []
    masks = []
    real_generate, real_embed = model.generate_and_embed, model.embed_hidden_states

    def generate_and_embed(input_ids, attention_mask, **kwargs):
        if force_ids is not None:
            kwargs["logits_processor"] = [ForceTokens(input_ids.shape[1], force_ids)]
        out = real_generate(input_ids, attention_mask, **kwargs)
        mask = masks.pop()
        read.extend(out.sequences[i, : mask.shape[1]][mask[i].bool()].tolist() for i in range(mask.shape[0]))
        return out

    def embed_hidden_states(hidden, mask, *rest):
        masks.append(mask)
        return real_embed(hidden, mask, *rest)

    with monkeypatch.context() as patch:
        patch.setattr(model, "generate_and_embed", generate_and_embed)
        patch.setattr(model, "embed_hidden_states", embed_hidden_states)
        st.encode_query(inputs)
    return read


def sorted_like(rows: list[list[int]], reference: list[list[int]]) -> list[list[int]]:
    """ST sorts a batch by length before `preprocess`; put the rows back in the reference's order."""
    remaining, out = list(rows), []
    for ref in reference:
        if ref not in remaining:
            return rows  # no match: the rows as they are (the caller's assertion shows the difference)
        remaining.remove(ref)
        out.append(ref)
    return out
