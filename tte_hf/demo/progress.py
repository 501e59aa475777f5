"""The demo's console: one progress bar per stage, the training loss on the training stages' bars."""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm
from transformers import TrainerCallback


def stage_bar(desc: str, total: int | None = None, unit: str = "it") -> tqdm:
    """A bar that stays on screen once the stage is done."""
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=True)


class TrainingBar(TrainerCallback):
    """Replaces the Trainer's own display (a bar that also prints every log dict, or the dicts alone):
    one bar over the optimizer steps, the latest loss as its postfix."""

    def __init__(self, desc: str):
        self.desc = desc
        self.bar: tqdm | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.bar = stage_bar(self.desc, total=state.max_steps, unit="step")

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs):
        if self.bar is not None and logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.3f}", epoch=f"{state.epoch or 0:.1f}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
