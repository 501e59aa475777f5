"""Build a Think-Then-Embed `SentenceTransformer` (reasoner + embedder) whose saved folder loads anywhere."""

from .factory import build_sentence_transformer, save_sentence_transformer

__all__ = ["build_sentence_transformer", "save_sentence_transformer"]
