"""GRPO on the student reasoner with a frozen TTE embedder as the reward (TRL script style).

    accelerate launch --config_file recipes/accelerate/zero1.yaml recipes/grpo_reasoner.py \
        --config recipes/reasoner/qwen2vl_2b_grpo.yaml
    python recipes/grpo_reasoner.py --config recipes/reasoner/tiny_grpo.yaml   # CPU, tiny models

Any key of the YAML can be overridden on the command line (``--learning_rate 1e-6``).
"""

from trl import GRPOConfig, ModelConfig, ScriptArguments, TrlParser

from tte_hf.training.train_reasoner_rl import RLArguments, run_grpo

if __name__ == "__main__":
    parser = TrlParser((ScriptArguments, GRPOConfig, ModelConfig, RLArguments))
    script_args, training_args, model_args, rl_args = parser.parse_args_and_config()
    trainer = run_grpo(script_args, training_args, model_args, rl_args)
    trainer.end()
