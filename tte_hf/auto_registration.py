"""Register the TTE classes with transformers' ``AutoConfig`` / ``AutoModel`` without importing them early.

``import tte_hf`` must stay cheap (no torch), yet after it ``AutoModel.from_pretrained(tte_folder)``
must give the TTE class without ``trust_remote_code``. So each registration waits until transformers'
auto module it extends is imported (``AutoConfig`` / ``AutoModel`` cannot be used before that) or
tte_hf's own module is, and runs as soon as both sides are loaded.
"""

from __future__ import annotations

import importlib.abc
import sys

CONFIG_AUTO = "transformers.models.auto.configuration_auto"
MODEL_AUTO = "transformers.models.auto.modeling_auto"
# The tte_hf modules each registration imports (they must not be half-executed when it runs).
_CONFIG_PIECES = ("tte_hf.models.tte.configuration_tte",)
_MODEL_PIECES = ("tte_hf.models.tte.configuration_tte", "tte_hf.models.tte.heads", "tte_hf.models.tte.modeling_tte")
WATCHED = (CONFIG_AUTO, MODEL_AUTO, "tte_hf.models.tte.configuration_tte", "tte_hf.models.tte.modeling_tte")
_registered: set[str] = set()


def _loaded(name: str, just_executed: str | None) -> bool:
    """In ``sys.modules`` and executed (a module counts as initializing until its import returns)."""
    module = sys.modules.get(name)
    if module is None:
        return False
    return name == just_executed or not getattr(getattr(module, "__spec__", None), "_initializing", False)


def _half_executed(pieces: tuple[str, ...], just_executed: str | None) -> bool:
    return any(name in sys.modules and not _loaded(name, just_executed) for name in pieces)


def register_auto_classes(just_executed: str | None = None) -> None:
    """Register what can be registered now: the configs once ``AutoConfig``'s module is loaded, the
    models once ``AutoModel``'s is. Skipped (retried on the next watched import) while a tte_hf module
    it needs is half-executed, e.g. when ``heads`` imports ``AutoModel`` halfway through ``modeling_tte``."""
    if "config" not in _registered and (_loaded(CONFIG_AUTO, just_executed) or _loaded(MODEL_AUTO, just_executed)):
        if not _half_executed(_CONFIG_PIECES, just_executed):
            from transformers import AutoConfig

            from .models.tte.configuration_tte import TTEEmbedderConfig, TTEUnifiedConfig

            AutoConfig.register(TTEEmbedderConfig.model_type, TTEEmbedderConfig, exist_ok=True)
            AutoConfig.register(TTEUnifiedConfig.model_type, TTEUnifiedConfig, exist_ok=True)
            _registered.add("config")
    if "model" not in _registered and _loaded(MODEL_AUTO, just_executed):
        if not _half_executed(_MODEL_PIECES, just_executed):
            from transformers import AutoModel

            from .models.tte.configuration_tte import TTEEmbedderConfig, TTEUnifiedConfig
            from .models.tte.modeling_tte import TTEEmbedderModel, TTEUnifiedModel

            AutoModel.register(TTEEmbedderConfig, TTEEmbedderModel, exist_ok=True)
            AutoModel.register(TTEUnifiedConfig, TTEUnifiedModel, exist_ok=True)
            _registered.add("model")


class _Loader(importlib.abc.Loader):
    """The real loader of a watched module, then an attempt to register."""

    def __init__(self, loader: importlib.abc.Loader):
        self._loader = loader

    def __getattr__(self, name: str):  # get_source, get_resource_reader, ... of the real loader
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        register_auto_classes(just_executed=module.__name__)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name not in WATCHED or len(_registered) == 2:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and not isinstance(spec.loader, _Loader):
                    spec.loader = _Loader(spec.loader)
                return spec
        return None


def install() -> None:
    """Register what the modules loaded so far allow, and the rest when they are imported."""
    register_auto_classes()
    if len(_registered) < 2 and not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
