"""Dataset statistics in the paper's terms (NOTES.md §6): dialogs, turns, rec instances."""
from __future__ import annotations

from crslib.data import Dataset, Dialog


def split_stats(dialogs: list[Dialog]) -> dict:
    """Counts for one split.

    ``rec_turns``: assistant turns mentioning at least one item; ``rec_instances``: one per
    distinct mentioned item of such a turn (the paper's expansion, NOTES.md §3);
    ``repeat_rate``: share of rec instances whose item was mentioned earlier in the dialog.
    """
    turns = assistant = rec_turns = instances = repeats = 0
    for d in dialogs:
        seen: set[str] = set()
        for t in d.turns:
            turns += 1
            items = list(dict.fromkeys(t.items))
            if t.role == "assistant":
                assistant += 1
                if items:
                    rec_turns += 1
                    instances += len(items)
                    repeats += sum(i in seen for i in items)
            seen.update(items)
    return {"dialogs": len(dialogs), "turns": turns, "assistant_turns": assistant,
            "rec_turns": rec_turns, "rec_instances": instances,
            "repeat_rate": repeats / instances if instances else 0.0}


def dataset_stats(ds: Dataset) -> dict:
    mentioned = {i for dialogs in ds.splits.values() for d in dialogs for t in d.turns
                 for i in t.items}
    return {"dataset": ds.name,
            "splits": {name: split_stats(dialogs) for name, dialogs in ds.splits.items()},
            "catalog_items": len(ds.catalog),
            "items_with_plot": sum(bool(it.plot) for it in ds.catalog),
            "items_mentioned": len(mentioned),
            **ds.report.as_dict()}
