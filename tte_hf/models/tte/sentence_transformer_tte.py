"""Entry point of the Think-Then-Embed sentence-transformers code: the class path ``modules.json`` names
(``sentence_transformer_tte.TTETransformer``, ``...TTEUnifiedTransformer``) in saved models and Hub repos.

The code lives in sibling files, one job each, shipped next to the weights with this one:
``st_input_types`` (`ParsedInput`, `INPUT_KEYS`), ``st_inputs`` (input parsing, the reasoning step and
its ECR cache), ``st_gate`` (`GateStep`: the ``think="auto"`` gate step each module holds),
``st_embedder`` (`TTETransformer`), ``st_unified`` (`TTEUnifiedTransformer`), ``st_model``
(`TTESentenceTransformer`), ``st_state`` (LRU cache, per-thread state), ``reasoner_transformers`` /
``reasoner_openai`` (the built-in reasoners) and ``reasoner_base`` (`ReasoningRequest`). The same
classes are ``tte_hf``'s own in the package.
"""

from __future__ import annotations

from .reasoner_base import ReasoningRequest
from .reasoner_openai import OpenAIReasoner
from .reasoner_transformers import TransformersReasoner
from .st_embedder import REASONING_SOURCES, TTETransformer
from .st_gate import GateStep
from .st_input_types import INPUT_KEYS, ParsedInput
from .st_inputs import TTEInputsMixin
from .st_model import TTESentenceTransformer
from .st_state import LRUCache
from .st_unified import TTEUnifiedTransformer

__all__ = [
    "GateStep",
    "INPUT_KEYS",
    "LRUCache",
    "OpenAIReasoner",
    "ParsedInput",
    "REASONING_SOURCES",
    "ReasoningRequest",
    "TTEInputsMixin",
    "TTESentenceTransformer",
    "TTETransformer",
    "TTEUnifiedTransformer",
    "TransformersReasoner",
]
