"""Think-Then-Embed multimodal embeddings for the Hugging Face ecosystem.

The exports load on first use (PEP 562), so ``import tte_hf`` and ``tte-hf --help`` import no torch;
the TTE classes are registered with ``AutoConfig`` / ``AutoModel`` as soon as either is imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import auto_registration

__version__ = "0.1.0"

_EXPORTS = {
    "TTEEmbedderConfig": "models.tte.configuration_tte",
    "TTEUnifiedConfig": "models.tte.configuration_tte",
    "TTEEmbedderModel": "models.tte.modeling_tte",
    "TTEGenerateOutput": "models.tte.modeling_tte",
    "TTEUnifiedModel": "models.tte.modeling_tte",
}
__all__ = ["TTEEmbedderConfig", "TTEEmbedderModel", "TTEGenerateOutput", "TTEUnifiedConfig", "TTEUnifiedModel"]

if TYPE_CHECKING:
    from .models.tte.configuration_tte import TTEEmbedderConfig, TTEUnifiedConfig
    from .models.tte.modeling_tte import TTEEmbedderModel, TTEGenerateOutput, TTEUnifiedModel

auto_registration.install()


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tte_hf' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
