"""Build a Think-Then-Embed `SentenceTransformer` (reasoner + embedder) whose saved folder loads anywhere."""

from .factory import build_sentence_transformer, load_tte_transformer_class, save_sentence_transformer

__all__ = ["build_sentence_transformer", "load_tte_transformer_class", "save_sentence_transformer"]
