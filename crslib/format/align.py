"""Item–ID alignment (beyond the paper): short instances that teach the model what each semantic
ID stands for, mixed with the dialog instances.

In the paper's format every item is ``<BOI>SID<EOI>`` and the SID tokens are new rows, so what
the backbone knows about *The Shining* never meets the tokens that stand for it. LC-Rec (Zheng
et al., 2024) ties item indices to item text with alignment tasks; here they are training data,
chosen by a run's ``train.align`` block (:class:`crslib.config.AlignConfig`):

================  ===================================================  ====================
task              prompt (one user turn)                               target
================  ===================================================  ====================
``text_to_sid``   ``Item: <title (year)> | <genres> | <plot, cut>``    ``<BOI>SID<EOI>``
``sid_to_text``   ``Which movie is <BOI>SID<EOI>?``                    ``<title> (<year>)``
``genre_to_sid``  ``Recommend a <genre> movie.`` (one genre, seeded)   ``<BOI>SID<EOI>``
================  ===================================================  ====================

Prompts use the run's template, like the dialogs' (``User: …\\nAssistant:``); item text is
escaped (:func:`crslib.format.serialize.escape`), so a title can never inject a token. Every dialog
instance keeps the paper's format unchanged.

Items: every catalog item with a SID gives instances (``items="catalog"``), or only the items the
run's training dialogs mention (``items="dialogs"``: the items a recommendation is likely to be,
so a small budget is not spread over titles no dialog names).

Mixing: each epoch holds ``round(ratio × n)`` alignment instances for ``n`` dialog instances
(one per assistant-turn target), drawn without replacement from every (item, task) pair in a
seeded order (and again in a new order when more are asked than exist). Each is one window of
its own (:func:`crslib.format.packing.pack_examples`), batched by length with the dialog windows;
the one training loop and its step budget are unchanged, so at the same budget in tokens alignment
takes the place of some dialog tokens.
"""
from __future__ import annotations

import random
from typing import Iterable, Sequence

from crslib.config import AlignConfig
from crslib.data import Catalog, Dialog, Item, mentioned_items
from crslib.format.serialize import Example, escape, mention, render_prompt
from crslib.ids.semantic_ids import SemanticIDs

ALIGN_ID = "align"  # the dialog_id of every alignment instance


def item_text(item: Item, plot_chars: int) -> str:
    """``<title (year)> | <genres> | <plot, cut at a word within plot_chars>``, empty fields
    left out."""
    plot = item.plot.strip()
    if len(plot) > plot_chars:
        cut = plot[:plot_chars + 1].rsplit(" ", 1)[0] if plot_chars else ""
        plot = (cut.rstrip(" ,.;:") + "…") if cut else ""
    parts = [item.name, ", ".join(item.genres), plot]
    return " | ".join(p for p in parts if p)


def _genre(item: Item, seed: int) -> str:
    """One of the item's genres, fixed by the seed and the item (not by the catalog's order)."""
    return random.Random(f"{seed}:{item.id}").choice(sorted(item.genres))


def instance(task: str, item: Item, sids: SemanticIDs, cfg: AlignConfig, fmt: str = "gcrs",
             template: str = "plain", tokenizer=None) -> Example | None:
    """The ``task`` instance of ``item`` (None when the item cannot give one: no genre for
    ``genre_to_sid``)."""
    sid = mention(item.id, sids)
    if task == "text_to_sid":
        prompt, target = "Item: " + escape(item_text(item, cfg.plot_chars)), sid
    elif task == "sid_to_text":
        prompt, target = f"Which movie is {sid}?", escape(item.name)
    elif task == "genre_to_sid":
        if not item.genres:
            return None
        prompt, target = f"Recommend a {escape(_genre(item, cfg.seed))} movie.", sid
    else:
        raise ValueError(f"unknown alignment task {task!r}")
    context = (("user", prompt),)
    mode = "chat" if task == "sid_to_text" else "rec"
    return Example(ALIGN_ID, 0, fmt, render_prompt(context, fmt, template, tokenizer), target,
                   mode, item.id, (), "", (item.id,), context, template)


def item_ids(catalog: Catalog, dialogs: Iterable[Dialog], cfg: AlignConfig) -> list[str]:
    """The items that give alignment instances, in catalog order: every catalog item, or (with
    ``cfg.items == "dialogs"``) those that ``dialogs`` mention in any turn."""
    if cfg.items == "catalog":
        return list(catalog.ids)
    named = set().union(*(mentioned_items(d) for d in dialogs))
    return [iid for iid in catalog.ids if iid in named]


def pool(catalog: Catalog, sids: SemanticIDs, cfg: AlignConfig, fmt: str = "gcrs",
         template: str = "plain", tokenizer=None, ids: Sequence[str] | None = None
         ) -> list[Example]:
    """Every alignment instance of the catalog's items that have a SID (of ``ids`` only, when
    given), in catalog order and task order."""
    out = []
    for iid in catalog.ids if ids is None else ids:
        if iid not in sids:
            continue
        for task in cfg.tasks:
            ex = instance(task, catalog[iid], sids, cfg, fmt, template, tokenizer)
            if ex is not None:
                out.append(ex)
    return out


def mix(instances: Sequence[Example], n_dialog: int, cfg: AlignConfig) -> list[Example]:
    """``round(cfg.ratio × n_dialog)`` of ``instances``, drawn without replacement in a seeded
    order, a fresh order each time the pool is used up."""
    want = round(cfg.ratio * n_dialog)
    if want and not instances:
        raise ValueError("train.align: no alignment instance (no catalog item has a SID)")
    rng, out = random.Random(cfg.seed), []
    while len(out) < want:
        order = list(instances)
        rng.shuffle(order)
        out += order[:want - len(out)]
    return out
