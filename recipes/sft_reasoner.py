"""Student reasoner SFT on teacher ECR traces (TRL script style).

    accelerate launch --config_file recipes/accelerate/zero1.yaml recipes/sft_reasoner.py \
        --config recipes/reasoner/qwen2vl_2b.yaml
    python recipes/sft_reasoner.py --config recipes/reasoner/tiny.yaml   # CPU, tiny model

Any key of the YAML can be overridden on the command line (``--learning_rate 1e-5``).
"""

from trl import ModelConfig, ScriptArguments, SFTConfig, TrlParser

from tte_hf.training.train_reasoner import ReasonerArguments, run_sft

if __name__ == "__main__":
    parser = TrlParser((ScriptArguments, SFTConfig, ModelConfig, ReasonerArguments))
    script_args, training_args, model_args, reasoner_args = parser.parse_args_and_config()
    run_sft(script_args, training_args, model_args, reasoner_args)
