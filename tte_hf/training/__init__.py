"""Training recipes of the three TTE stages: student reasoner SFT, contrastive embedder, unified head.

Heavy libraries load inside the entry points, so importing this package stays cheap.
"""

from __future__ import annotations


def train_reasoner(config, argv=None):
    """Student reasoner SFT (TRL `SFTTrainer`) from a YAML recipe or dict; returns the trainer."""
    from .train_reasoner import train_reasoner as run

    return run(config, argv)


def train_embedder(config, argv=None):
    """Contrastive TTE embedder training from a YAML recipe or dict; returns the trainer."""
    from .train_embedder import train_embedder as run

    return run(config, argv)


def train_head(config, argv=None):
    """Unified-model head training on a frozen reasoner from a YAML recipe or dict; returns the trainer."""
    from .train_head import train_head as run

    return run(config, argv)


__all__ = ["train_embedder", "train_head", "train_reasoner"]
