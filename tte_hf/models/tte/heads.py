"""Embedding heads of the unified TTE model: the four designs the paper compares.

Each head maps the hidden states of one backbone layer, ``(batch, seq, hidden)``, their attention
mask and the backbone's RoPE positions, ``(3, batch, seq)``, to one vector per row (only the MHSA
head reads the positions). Self-contained (torch + transformers only): this file is
shipped next to the weights for ``trust_remote_code``.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel


def last_token_pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Hidden state of the last non-pad token of each row; correct under left and right padding."""
    seq_len = attention_mask.shape[1]
    last = seq_len - 1 - attention_mask.flip(-1).to(torch.long).argmax(-1)
    return hidden_states[torch.arange(hidden_states.shape[0], device=hidden_states.device), last]


def masked_mean(hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
    return (hidden_states * mask).sum(1) / mask.sum(1).clamp(min=1)


class EmbeddingHead(nn.Module):
    """Base class; `reads_layer` says which ``hidden_states`` index (0 = embeddings) the head reads."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        hidden, out = config.hidden_size, config.output_dim
        self.proj = nn.Identity() if out == hidden else nn.Linear(hidden, out)

    @property
    def reads_layer(self) -> int:
        return self.config.backbone_config.get_text_config().num_hidden_layers

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        raise NotImplementedError


class AttentionPoolerHead(EmbeddingHead):
    """k learned queries attend over the final hidden states; the query outputs are averaged."""

    def __init__(self, config):
        super().__init__(config)
        hidden = config.hidden_size
        self.queries = nn.Parameter(torch.randn(config.head_num_queries, hidden) * hidden**-0.5)
        self.attention = nn.MultiheadAttention(hidden, config.head_num_heads, batch_first=True)

    def forward(self, hidden_states, attention_mask, position_ids=None):
        queries = self.queries.unsqueeze(0).expand(hidden_states.shape[0], -1, -1).to(hidden_states.dtype)
        pooled, _ = self.attention(queries, hidden_states, hidden_states, key_padding_mask=~attention_mask.bool())
        return self.proj(pooled.mean(1))


class LatentAttentionHead(EmbeddingHead):
    """NV-Embed's latent-attention pooler: tokens attend to a learned latent array, MLP, masked mean."""

    def __init__(self, config):
        super().__init__(config)
        hidden = config.hidden_size
        self.latents = nn.Parameter(torch.randn(config.head_num_queries, hidden) * hidden**-0.5)
        self.attention = nn.MultiheadAttention(hidden, config.head_num_heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))

    def forward(self, hidden_states, attention_mask, position_ids=None):
        latents = self.latents.unsqueeze(0).expand(hidden_states.shape[0], -1, -1).to(hidden_states.dtype)
        attended, _ = self.attention(hidden_states, latents, latents)
        tokens = attended + self.mlp(attended)
        return self.proj(masked_mean(tokens, attention_mask))


class QFormerBlock(nn.Module):
    def __init__(self, hidden: int, num_heads: int):
        super().__init__()
        self.self_norm = nn.LayerNorm(hidden)
        self.self_attention = nn.MultiheadAttention(hidden, num_heads, batch_first=True)
        self.cross_norm = nn.LayerNorm(hidden)
        self.cross_attention = nn.MultiheadAttention(hidden, num_heads, batch_first=True)
        self.mlp_norm = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))

    def forward(self, queries, hidden_states, key_padding_mask):
        x = self.self_norm(queries)
        queries = queries + self.self_attention(x, x, x)[0]
        x = self.cross_norm(queries)
        queries = queries + self.cross_attention(x, hidden_states, hidden_states, key_padding_mask=key_padding_mask)[0]
        return queries + self.mlp(self.mlp_norm(queries))


class QFormerHead(EmbeddingHead):
    """QFormer-style: learned queries through blocks of self-attention and cross-attention to the tokens."""

    def __init__(self, config):
        super().__init__(config)
        hidden = config.hidden_size
        self.queries = nn.Parameter(torch.randn(config.head_num_queries, hidden) * hidden**-0.5)
        self.blocks = nn.ModuleList(QFormerBlock(hidden, config.head_num_heads) for _ in range(config.head_num_layers))
        self.norm = nn.LayerNorm(hidden)

    def forward(self, hidden_states, attention_mask, position_ids=None):
        queries = self.queries.unsqueeze(0).expand(hidden_states.shape[0], -1, -1).to(hidden_states.dtype)
        padding = ~attention_mask.bool()
        for block in self.blocks:
            queries = block(queries, hidden_states, padding)
        return self.proj(self.norm(queries).mean(1))


class MHSAHead(EmbeddingHead):
    """The paper's best head: n decoder layers (+ final norm) initialised as copies of the backbone's
    last n layers, reading the hidden states of layer L - n; last-token pooling.

    The layers run with the backbone's own multimodal RoPE positions (``position_ids``, as the backbone's
    rotary embedding received them), so a freshly copied head reproduces the backbone's final hidden
    states exactly, on text, image and video tokens alike. Without ``position_ids`` it falls back to
    1-D positions from the mask, which equal the backbone's only on text-only rows.
    """

    def __init__(self, config):
        super().__init__(config)
        text_config = config.backbone_config.get_text_config()
        n = config.head_num_layers
        overrides = {"num_hidden_layers": n, "vocab_size": 1, "pad_token_id": None}
        if getattr(text_config, "layer_types", None) is not None:  # the copied layers' own attention types
            overrides["layer_types"] = list(text_config.layer_types[-n:])
        for key in ("bos_token_id", "eos_token_id"):
            if hasattr(text_config, key):
                overrides[key] = None
        text_config = type(text_config)(**{**text_config.to_dict(), **overrides})
        self.decoder = AutoModel.from_config(text_config, attn_implementation=config._attn_implementation)

    @property
    def reads_layer(self) -> int:
        return super().reads_layer - self.config.head_num_layers

    def init_from_backbone(self, language_model: nn.Module) -> None:
        """Copy the backbone's last n decoder layers and its final norm into the head."""
        n = self.config.head_num_layers
        for target, source in zip(self.decoder.layers, language_model.layers[-n:]):
            target.load_state_dict(source.state_dict())
        self.decoder.norm.load_state_dict(language_model.norm.state_dict())

    def forward(self, hidden_states, attention_mask, position_ids=None):
        if position_ids is None:
            position_ids = (attention_mask.to(torch.long).cumsum(-1) - 1).clamp(min=0)
            position_ids = position_ids.unsqueeze(0).expand(3, -1, -1)
        out = self.decoder(
            inputs_embeds=hidden_states, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        )
        return self.proj(last_token_pool(out.last_hidden_state, attention_mask))


HEADS = {
    "attention_pooler": AttentionPoolerHead,
    "latent_attention": LatentAttentionHead,
    "qformer": QFormerHead,
    "mhsa": MHSAHead,
}


def build_head(config) -> EmbeddingHead:
    return HEADS[config.head_type](config)
