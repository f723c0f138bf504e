"""Dialogs and item catalogs of ReDial and INSPIRED in one in-memory schema.

Modules: :mod:`.schema` (the schema, shared helpers), :mod:`.redial` and :mod:`.inspired`
(the official files), :mod:`.loading` (a dataset by name), :mod:`.holdout` (items held out of
training); :mod:`.download`, :mod:`.stats`, :mod:`.titles`, :mod:`.genres`, :mod:`.request`
build on them. The names of the first five are this package's own: ``data.load``,
``data.Catalog``.

Schema (NOTES.md §6):

* a :class:`Dialog` is a list of :class:`Turn` s; a turn has a ``role`` (``"user"`` for the
  seeker, ``"assistant"`` for the recommender), a ``text`` and the ``items`` it mentions;
* inside ``Turn.text`` every recognised item mention is written ``@<item id>`` (ReDial's own
  convention, used for INSPIRED too), so the serializer can rewrite mentions as SIDs;
* a :class:`Catalog` maps item ids to :class:`Item` s, whose :meth:`Item.text` is the paper's
  item text ``title: … | year: … | genres: … | keywords: … | plot: …``.

Policies (tested in ``tests/test_data.py``):

* Consecutive messages of one speaker are merged into one turn, joined by a space — what
  CRSLab, KGSF, UniCRS and the paper's baselines do (and what the CFCRS-derived ReDial train
  records already did upstream), so every sample's target is one full recommender turn.
* A record that cannot be read (malformed JSON line, TSV row with missing columns, empty
  dialog) is skipped and counted in :attr:`LoadReport.skipped` with file, line and reason;
  with ``strict=True`` it raises :class:`DataError` instead.
* A mention of an item the catalog does not know is kept as plain text (``@id`` becomes the
  raw id or title) and counted under ``unknown_item``; it never becomes a target.
* Any other literal ``@`` becomes the full-width ``＠``, so ``@`` in a turn always starts a
  mention of a catalog item.
* A file that is not there raises :class:`DataError` naming it and what to do.

Validation (:data:`VALIDATION`): model choices are made on a split no test case and no trained
weight has seen. INSPIRED has its official ``dev``. ReDial has none, so ``valid`` is a seeded
slice of the train dialogs (:data:`REDIAL_VALID`: a fraction of the dialog ids, shuffled with a
fixed seed), and ``train_minus_valid`` is the rest. Both are derived when asked for
(``ds["valid"]``); ``ds["train"]`` stays the official file, so runs that name no
``train_splits`` train on what they always did.
"""
from crslib.data.holdout import (holdout_items, mentioned_items, remove_items,  # noqa: F401
                                 target_items)
from crslib.data.inspired import load_inspired, load_inspired_catalog  # noqa: F401
from crslib.data.loading import catalog_or_none, load  # noqa: F401
from crslib.data.redial import (REDIAL_MENTION_RE, load_redial, load_redial_catalog,  # noqa: F401
                                load_redial_hf, redial_from_hf)
from crslib.data.schema import (DATASETS, INSPIRED_FILES, MENTION_RE, REDIAL_FILES,  # noqa: F401
                                REDIAL_VALID, ROLES, VALIDATION, Catalog, DataError, Dataset,
                                Dialog, Item, LoadReport, Turn, clean_text, data_root, has_data,
                                mention_parts, merge_turns, need_file, normalize_title,
                                redial_valid_ids, slug, split_title_year)
