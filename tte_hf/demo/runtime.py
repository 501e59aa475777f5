"""The demo's run-time settings: a fixed thread count and deterministic kernels, so a seed gives the
same table on every machine of one kind, and a quiet console (library logs and warnings go to a file).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

#: Intra-op threads of every demo run, whatever the machine has. CPU kernels may split their sums
#: by thread, so another count can change the last bits of a float and, through hundreds of training
#: steps, the table. Two is safe: the kernels cut work into chunks fixed by the problem size and the
#: thread count (not by timing), so one count always reduces in one order; with the vision tower
#: frozen, as in every demo stage, a training step and a whole shortened demo were even
#: bit-identical on 1 and 2 threads here (trainable, only the tower's gradients differed). The pin
#: makes every machine use 2 whatever its core count. Two, not one: a full seed took about 991 s on
#: one thread against about 440 s on two (issue 15). Inter-op threads: one.
DEMO_THREADS = 2
#: Read by OpenMP / MKL when torch loads (a demo started as `tte-hf demo` sets them before that);
#: ``torch.set_num_threads`` covers a process that imported torch already.
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: Each library picks its vector code path from the CPU, and AVX2 and AVX-512 paths round differently.
#: Measured on this project's AVX-512 machine: ATen's own kernels (softmax, CPU attention) and oneDNN's
#: convolution (the vision tower's patch embedding) give other bits on their AVX-512 paths than on AVX2;
#: MKL's matmul already took its AVX2 path here (an AMD CPU) but takes AVX-512 on an Intel one.
#: Read when torch loads, so only a demo that starts torch itself (`tte-hf demo`) can pin them.
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def _has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx2" in line for line in f)
    except OSError:
        return False


def pin_threads(threads: int = DEMO_THREADS) -> int:
    """Run torch's CPU kernels on exactly ``threads`` threads (and one inter-op thread); returns the
    count before, for `restore_threads`.

    Before torch loads, also pins every kernel library to its AVX2 code path where the CPU has AVX2
    (`AVX2_ENV`), so an AVX-512 machine runs the same kernels, and rounds the same way, as an AVX2 one.
    """
    if "torch" not in sys.modules:
        for name in _THREAD_ENV:
            os.environ[name] = str(threads)
        if _has_avx2():
            for name, value in AVX2_ENV.items():
                os.environ.setdefault(name, value)
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # refused once inter-op work has started; then it stays
        torch.set_num_interop_threads(1)
    return before


def restore_threads(threads: int) -> None:
    """Give a process that called the demo in-process its intra-op thread count back."""
    import torch

    torch.set_num_threads(threads)


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Deterministic kernels and every global RNG seeded, for the duration of the block."""
    import torch
    from transformers import set_seed

    previous = torch.are_deterministic_algorithms_enabled()
    previous_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    # Deterministic mode also fills every new uninitialised tensor with NaN, to expose code that reads
    # memory it never wrote. No result of correct code depends on it, and it doubled the demo's
    # student SFT (every `torch.empty` of the image processor and the training step became a fill).
    torch.utils.deterministic.fill_uninitialized_memory = False
    set_seed(seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
        torch.utils.deterministic.fill_uninitialized_memory = previous_fill


_LIBRARY_LOGGERS = ("transformers", "datasets", "huggingface_hub", "accelerate", "trl", "sentence_transformers")


@contextlib.contextmanager
def quiet_console(log_path: str | os.PathLike) -> Iterator[None]:
    """Send library logs, warnings and prints to ``log_path``; the console keeps progress bars
    (stderr) and what the demo itself writes to stderr.

    Library progress bars (weights loading, dataset casting, shard writing) are switched off.
    """
    import datasets
    import huggingface_hub
    import transformers

    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in finally
    handler = logging.StreamHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    saved_levels = {name: logging.getLogger(name).level for name in _LIBRARY_LOGGERS}
    saved_propagate = {name: logging.getLogger(name).propagate for name in _LIBRARY_LOGGERS}
    saved_handlers = {name: list(logging.getLogger(name).handlers) for name in _LIBRARY_LOGGERS}
    saved_root = (root.level, list(root.handlers))
    bars_were = (
        transformers.utils.logging.is_progress_bar_enabled(),
        datasets.is_progress_bar_enabled(),
        huggingface_hub.utils.are_progress_bars_disabled(),
    )
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    huggingface_hub.utils.disable_progress_bars()
    for name in _LIBRARY_LOGGERS:  # their own stderr handlers off; records reach the file through root
        lib = logging.getLogger(name)
        lib.handlers = []
        lib.propagate = True
        lib.setLevel(logging.WARNING)  # their INFO is every config file they read and write
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(log_file):
            warnings.simplefilter("default")  # every warning once per place, into the log
            yield
    finally:
        logging.captureWarnings(False)
        root.setLevel(saved_root[0])
        root.handlers = saved_root[1]
        for name in _LIBRARY_LOGGERS:
            lib = logging.getLogger(name)
            lib.setLevel(saved_levels[name])
            lib.propagate = saved_propagate[name]
            lib.handlers = saved_handlers[name]
        if bars_were[0]:
            transformers.utils.logging.enable_progress_bar()
        if bars_were[1]:
            datasets.enable_progress_bars()
        if not bars_were[2]:
            huggingface_hub.utils.enable_progress_bars()
        handler.close()
        log_file.close()


def user_cpu_seconds() -> float:
    """User-CPU seconds of this process and its waited-for children, all threads."""
    try:
        import resource
    except ImportError:  # not on Unix: user + system time of this process
        return time.process_time()
    return sum(resource.getrusage(who).ru_utime for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
