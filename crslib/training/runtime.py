"""How a training process runs on a CPU or GPU: seeds, threads, denormal flushing, which
process is the main one under ``accelerate launch``."""
from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from crslib.pretrained import process_state


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
