"""Start-up time of ``tte-hf --help`` next to ``python -c "import transformers"`` (the floor of any HF CLI).

    python benchmarks/bench_cli_startup.py [--repeats 7]

Both run as fresh interpreters, interleaved, in this one run; prints each median and their ratio
(the target is at most 1.3×). ``tte-hf --help`` is run as ``python -m tte_hf.cli --help``, the same
code path as the console script without the launcher's own overhead.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "import transformers": [sys.executable, "-c", "import transformers"],
    "tte-hf --help": [sys.executable, "-m", "tte_hf.cli", "--help"],
    "import tte_hf": [sys.executable, "-c", "import tte_hf"],
}


def _time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    for command in COMMANDS.values():  # warm the file cache once
        _time(command)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            times[name].append(_time(command))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"{name:22s} median {medians[name] * 1000:7.0f} ms  (min {min(values) * 1000:.0f}, max {max(values) * 1000:.0f}, n={len(values)})")  # fmt: skip
    ratio = medians["tte-hf --help"] / medians["import transformers"]
    print(f"tte-hf --help / import transformers = {ratio:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
