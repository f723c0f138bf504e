"""How a training process runs on a CPU or GPU: seeds, threads, denormal flushing, which
process is the main one under ``accelerate launch``."""
from __future__ import annotations

import contextlib
import importlib.metadata
import platform
import random

import numpy as np
import torch

from crslib.pretrained import process_state


LIBRARIES = ("torch", "transformers", "peft", "accelerate", "numpy", "safetensors", "tokenizers")


def environment() -> dict:
    """What a run was trained with, beside its weights (``train_summary.json``, each snapshot's
    ``snapshot.json``): the library versions, the kernels torch dispatches to on this CPU
    (``cpu_capability``: ``AVX2``, ``AVX512``...) and the CPU itself, and the torch threads.
    Same seed and config give bitwise the same weights only under the same environment: the
    ReDial curve runs retrained with unchanged code, torch and peft on an AVX-512 machine gave
    other weights at step 110 than on the AVX2 machine that trained them first."""
    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"python": platform.python_version(), **{n: version(n) for n in LIBRARIES},
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu": cpu,
            "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


_FLUSH_DEPTH = 0


@contextlib.contextmanager
def flush_denormals():
    """Flush denormal floats to zero inside (a context manager and a decorator; nests).

    Once the copy warm-up has sharpened attention, softmax probabilities and their gradients
    fall into the denormal range (below ~1e-38), where x86 arithmetic is many times slower: a
    dialog training step of the compact `cpu` model took twice as long after the warm-up as
    before it, and the same after it with this on (`benchmarks/bench_train.py`). Values that
    small are set to zero, which changes no loss or score measurably. Applies to the calling
    thread (the `cpu` profile runs one thread per process); restores the default (off) on exit.
    """
    global _FLUSH_DEPTH
    if _FLUSH_DEPTH == 0:
        torch.set_flush_denormal(True)
    _FLUSH_DEPTH += 1
    try:
        yield
    finally:
        _FLUSH_DEPTH -= 1
        if _FLUSH_DEPTH == 0:
            torch.set_flush_denormal(False)


@contextlib.contextmanager
def num_threads(n: int | None):
    """Run the block with ``n`` torch threads (None: unchanged), restoring the count after. On
    a CPU the thread count is part of what makes a run repeatable: reductions split over more
    threads add in another order, so the ``cpu`` and ``smoke`` configs fix ``threads: 1``."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def is_main_process() -> bool:
    """Is this the process that writes (the only one, or rank 0 of ``accelerate launch``)?"""
    return process_state().is_main_process
