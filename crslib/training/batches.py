"""Training instances as token batches: dialogs packed into windows (:mod:`crslib.format.packing`),
windows into seeded batches of a token budget, and the restricted output vocabulary."""
from __future__ import annotations

import random
from typing import Sequence

from crslib.data import Dialog
from crslib.format import packing
from crslib.ids.semantic_ids import SemanticIDs


def build_windows(dialogs: Sequence[Dialog], sids: SemanticIDs, tokenizer, fmt: str,
                  max_context_tokens: int) -> list[packing.Packed]:
    return [w for d in dialogs
            for w in packing.pack_dialog(d, sids, tokenizer, fmt, max_context_tokens)]


def make_batches(windows: Sequence[packing.Packed], batch_tokens: int, seed: int
                 ) -> list[list[int]]:
    """Indices of windows grouped by similar length so padding is small; batch order shuffled.

    A batch holds as many windows as fit ``batch_tokens`` padded tokens (at least one).
    """
    rng = random.Random(seed)
    order = sorted(range(len(windows)), key=lambda i: (len(windows[i]), rng.random()))
    batches, cur, longest = [], [], 0
    for i in order:
        n = len(windows[i])
        if cur and max(longest, n) * (len(cur) + 1) > batch_tokens:
            batches.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, n)
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


def target_vocab(windows: Sequence[packing.Packed], new_ids: Sequence[int], eos: int | None
                 ) -> list[int]:
    """Token ids the restricted head scores: every training target token and the new tokens."""
    ids = {t for w in windows for t in w.tgt} | set(new_ids)
    if eos is not None:
        ids.add(eos)
    return sorted(ids)
