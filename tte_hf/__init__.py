"""Think-Then-Embed multimodal embeddings for the Hugging Face ecosystem."""

from transformers import AutoConfig, AutoModel

from .configuration_tte import TTEEmbedderConfig, TTEUnifiedConfig
from .modeling_tte import TTEEmbedderModel, TTEGenerateOutput, TTEUnifiedModel

__version__ = "0.1.0"

AutoConfig.register(TTEEmbedderConfig.model_type, TTEEmbedderConfig, exist_ok=True)
AutoConfig.register(TTEUnifiedConfig.model_type, TTEUnifiedConfig, exist_ok=True)
AutoModel.register(TTEEmbedderConfig, TTEEmbedderModel, exist_ok=True)
AutoModel.register(TTEUnifiedConfig, TTEUnifiedModel, exist_ok=True)

__all__ = ["TTEEmbedderConfig", "TTEEmbedderModel", "TTEGenerateOutput", "TTEUnifiedConfig", "TTEUnifiedModel"]
