"""Items held out of training (cold start, :mod:`crslib.studies.coldstart`): a run's ``holdout``
key removes every training dialog that mentions one
(:func:`crslib.training.run.training_dialogs`)."""
from __future__ import annotations

import random
from typing import Iterable

from crslib.data.schema import Dataset, Dialog, mention_parts


# Items held out of training (cold start, :mod:`crslib.studies.coldstart`): a run's ``holdout`` key
# removes every training dialog that mentions one (:func:`crslib.training.run.training_dialogs`).
def target_items(ds: Dataset, split: str = "test") -> list[str]:
    """Catalog items that are a gold target of ``split`` (listed in an assistant turn), sorted."""
    return sorted({i for d in ds[split] for t in d.turns if t.role == "assistant"
                   for i in t.items if i in ds.catalog})


def holdout_items(ds: Dataset, fraction: float, seed: int = 0, split: str = "test"
                  ) -> frozenset[str]:
    """A seeded ``round(fraction * n)`` of the ``n`` items of :func:`target_items` (so every
    held-out item can be evaluated). The same ``(fraction, seed)`` always gives the same set."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"holdout fraction must lie in [0, 1], got {fraction}")
    candidates = target_items(ds, split)
    return frozenset(random.Random(seed).sample(candidates, round(fraction * len(candidates))))


def mentioned_items(dialog: Dialog) -> set[str]:
    """Every item a dialog mentions: listed in a turn's ``items`` or written ``@id`` in its text."""
    out = {i for t in dialog.turns for i in t.items}
    out.update(p[0] for t in dialog.turns for p in mention_parts(t.text) if isinstance(p, tuple))
    return out


def remove_items(dialogs: Iterable[Dialog], items: Iterable[str]) -> list[Dialog]:
    """The dialogs that mention none of ``items`` (in any turn, any role), in order.

    Whole dialogs go, not just turns: a dialog that mentions a held-out item anywhere is
    removed, so the model never reads the item's tokens, as context or as target. How many
    go is ``len(dialogs) - len(result)`` (:func:`crslib.studies.coldstart.holdout_summary` counts
    them).
    """
    items = set(items)
    return [d for d in dialogs if not (mentioned_items(d) & items)]
