"""Helper for the training tests: run a recipe under `accelerate launch` and read its loss log."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def launch_losses(module: str, recipe: dict, processes: int, workdir: Path, port: int = 29611) -> list[float]:
    """Losses logged by ``accelerate launch -m module --config recipe`` on ``processes`` CPU processes
    (`--multi_gpu` is accelerate's torchrun launcher; without CUDA and with `use_cpu`, DDP runs on gloo)."""
    path = workdir / f"{Path(recipe['output_dir']).name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes)]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += ["--multi_gpu", "--main_process_port", str(port)] if processes > 1 else ["--cpu"]
    cmd += ["-m", module, "--config", str(path)]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((Path(recipe["output_dir"]) / "trainer_state.json").read_text())
    return [log["loss"] for log in state["log_history"] if "loss" in log]
