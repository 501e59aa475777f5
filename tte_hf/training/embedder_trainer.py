"""The embedder recipe's trainer: sentence-transformers' own, with a resume that loads the TTE
module's weights in place (arguments and loss: `contrastive_trainer`)."""

from __future__ import annotations

from pathlib import Path

from sentence_transformers import SentenceTransformerTrainer


class EmbedderTrainer(SentenceTransformerTrainer):
    """`SentenceTransformerTrainer` that resumes by loading the checkpoint's weights into the TTE module.

    ST's own resume rebuilds the model from the checkpoint folder, whose ``modules.json`` names the
    shipped remote code (refused without ``trust_remote_code``), and holds a second model in memory;
    with LoRA the folder holds the adapter alone, which that rebuild cannot load either.
    """

    def _load_from_checkpoint(self, checkpoint_path: str, model=None) -> None:
        load_module_weights((model or self.model)[0].model, checkpoint_path)


def load_module_weights(inner, checkpoint: str) -> None:
    """Load a checkpoint folder's weights (every ``*.safetensors`` at its root) into ``inner``, the ST
    module's model: a `TTEEmbedderModel`, or a `peft.PeftModel` around one (its adapter weights)."""
    from safetensors.torch import load_file

    if hasattr(inner, "peft_config"):
        from peft import set_peft_model_state_dict

        adapter = Path(checkpoint) / "adapter_model.safetensors"
        if not adapter.is_file():
            raise FileNotFoundError(f"{checkpoint} has no adapter_model.safetensors to resume this LoRA run from.")
        set_peft_model_state_dict(inner, load_file(adapter))
        return
    state = {}
    for path in sorted(Path(checkpoint).glob("*.safetensors")):
        state |= load_file(path)
    if not state:
        raise FileNotFoundError(f"{checkpoint} has no *.safetensors weights to resume from.")
    inner.load_state_dict(state)
