"""The embedder recipe's training arguments: sentence-transformers' plus the contrastive settings."""

from __future__ import annotations

from dataclasses import dataclass

from sentence_transformers import SentenceTransformerTrainingArguments

from .contrastive_args import ContrastiveSettings


@dataclass
class EmbedderTrainingArguments(ContrastiveSettings, SentenceTransformerTrainingArguments):
    """`SentenceTransformerTrainingArguments` plus ``temperature`` and ``gradcache_chunk_size`` (see
    `ContrastiveSettings`; GradCache chunking is refused under DeepSpeed before anything loads)."""
