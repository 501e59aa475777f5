"""Training recipes of the three TTE stages: student reasoner SFT (and GRPO), contrastive embedder, unified head.

Each entry point takes a YAML recipe path (or a dict of the same keys) plus optional CLI-style
overrides and returns the trainer; heavy libraries load inside them.
"""

from __future__ import annotations

# The functions shadow their same-named modules on purpose: `tte_hf.training.train_embedder(cfg)`
# is the API, `python -m tte_hf.training.train_embedder` the launcher.
from .train_embedder import train_embedder
from .train_head import train_head
from .train_reasoner import train_reasoner
from .train_reasoner_rl import train_reasoner_rl

__all__ = ["train_embedder", "train_head", "train_reasoner", "train_reasoner_rl"]
