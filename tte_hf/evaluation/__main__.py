"""``python -m tte_hf.evaluation ARGS`` = ``tte-hf eval ARGS``, for launchers that take a module:
``accelerate launch -m tte_hf.evaluation ...`` or ``torchrun --nproc_per_node 8 -m tte_hf.evaluation ...``."""

import argparse
import sys

from ..commands import eval as eval_command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tte_hf.evaluation", description=eval_command.__doc__)
    eval_command.add_arguments(parser)
    return eval_command.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
