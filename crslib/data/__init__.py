"""Dialogs and item catalogs of ReDial and INSPIRED in one in-memory schema.

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
from __future__ import annotations

import csv
import html
import json
import os
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from crslib import paths

ROLES = ("user", "assistant")
MENTION_RE = re.compile(r"@([0-9]+|[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)")
REDIAL_MENTION_RE = re.compile(r"＠([0-9]+)")  # raw "@" escaped to "＠" first
REDIAL_FILES = ("train_data.jsonl", "test_data.jsonl", "movies_with_mentions.csv")
INSPIRED_FILES = ("train.tsv", "dev.tsv", "test.tsv", "movie_database.tsv")
DATASETS = ("redial", "inspired")
VALIDATION = {"redial": "valid", "inspired": "dev"}  # the split every model choice is made on
REDIAL_VALID = {"fraction": 0.1, "seed": 0}  # of the ReDial train dialogs, by dialog id


class DataError(ValueError):
    """A data file is missing or malformed; the message names the file and line."""


# ----------------------------------------------------------------------------- schema
@dataclass(frozen=True)
class Item:
    id: str
    title: str
    year: str = ""
    genres: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    plot: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def text(self) -> str:
        """The paper's item text (NOTES.md §2), empty fields left out."""
        parts = [("title", self.title), ("year", self.year), ("genres", ", ".join(self.genres)),
                 ("keywords", ", ".join(self.keywords)), ("plot", self.plot)]
        return " | ".join(f"{k}: {v}" for k, v in parts if v)

    @property
    def name(self) -> str:
        """Title with year, for people."""
        return f"{self.title} ({self.year})" if self.year else self.title


@dataclass(frozen=True)
class Turn:
    role: str
    text: str
    items: tuple[str, ...] = ()

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"turn role must be one of {ROLES}, got {self.role!r}")


@dataclass
class Dialog:
    id: str
    turns: list[Turn]


class Catalog:
    """Items by id, in a stable order (the order of the source catalog)."""

    def __init__(self, items: Iterable[Item]):
        self.items: dict[str, Item] = {}
        for it in items:
            if it.id in self.items:
                raise DataError(f"duplicate item id {it.id!r} in catalog")
            self.items[it.id] = it
        self._by_title: dict[str, list[str]] = {}
        for it in self.items.values():
            self._by_title.setdefault(normalize_title(it.title), []).append(it.id)

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.items

    def __getitem__(self, item_id: str) -> Item:
        return self.items[item_id]

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items.values())

    @property
    def ids(self) -> list[str]:
        return list(self.items)

    def find(self, title: str, year: str = "") -> str | None:
        """Item id for a title (normalised) and optional year; None if unknown or ambiguous."""
        ids = self._by_title.get(normalize_title(title), [])
        if year:
            ids = [i for i in ids if self.items[i].year == year] or (
                [i for i in ids if not self.items[i].year])
        return ids[0] if len(ids) == 1 else None


@dataclass
class LoadReport:
    """Every record skipped or repaired while loading, by reason, with where it was."""

    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, where: str, strict: bool = False) -> None:
        if strict:
            raise DataError(f"{where}: {reason}")
        self.skipped[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(where)

    def as_dict(self) -> dict:
        return {"skipped": dict(sorted(self.skipped.items())), "examples": self.examples}


@dataclass
class Dataset:
    name: str
    catalog: Catalog
    splits: dict[str, list[Dialog]]
    report: LoadReport

    def __getitem__(self, split: str) -> list[Dialog]:
        if split in self.splits:
            return self.splits[split]
        if self.name == "redial" and split in ("valid", "train_minus_valid") and "train" in self.splits:
            valid = redial_valid_ids(self.splits["train"])
            keep = split == "valid"
            return [d for d in self.splits["train"] if (d.id in valid) == keep]
        derived = ["valid", "train_minus_valid"] if self.name == "redial" else []
        raise KeyError(f"{self.name} has splits {sorted(self.splits) + derived}, not {split!r}")

    @property
    def validation(self) -> list[Dialog]:
        """The dialogs model choices are made on (:data:`VALIDATION`)."""
        return self[VALIDATION[self.name]]


def redial_valid_ids(train: list[Dialog], fraction: float = REDIAL_VALID["fraction"],
                     seed: int = REDIAL_VALID["seed"]) -> set[str]:
    """The ids of ReDial's validation dialogs: ``round(fraction * n)`` of the train dialog ids,
    drawn after sorting them, with ``random.Random(seed)`` — the same slice on every machine
    and in every tool, whatever order the file lists the dialogs in."""
    ids = sorted({d.id for d in train})
    return set(random.Random(seed).sample(ids, round(fraction * len(ids))))


# ----------------------------------------------------------------------------- helpers
def normalize_title(title: str) -> str:
    """Lower-case, '&'->'and', punctuation and leading article dropped, spaces collapsed."""
    t = html.unescape(title).lower().replace("&", " and ")
    t = re.sub(r"[^\w\s]", " ", t)
    t = re.sub(r"\s+", " ", t).strip()
    t = re.sub(r"^(the|a|an) ", "", t)
    return t


def split_title_year(name: str) -> tuple[str, str]:
    """``'Headhunter  (2009)'`` -> ``('Headhunter', '2009')``; no year -> ``(name, '')``."""
    name = re.sub(r"\s+", " ", html.unescape(name)).strip()
    m = re.match(r"^(.*?)\s*\((\d{4})?\)\s*$", name)
    if m:
        return m.group(1).strip(), m.group(2) or ""
    return name, ""


def slug(title: str, year: str = "") -> str:
    """An ``@``-mention-safe item id from a title: ``frozen-2-2019``."""
    s = re.sub(r"[^a-z0-9]+", "-", normalize_title(title)).strip("-") or "untitled"
    return f"{s}-{year}" if year else s


def data_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$CRSLIB_DATA``, else ``data/`` in the repository."""
    if root is not None:
        return Path(root)
    return paths.data_dir()


def has_data(root: str | os.PathLike | None = None) -> bool:
    """True when both datasets' files are under the data root."""
    r = data_root(root)
    return all((r / "redial" / f).is_file() for f in REDIAL_FILES) and all(
        (r / "inspired" / f).is_file() for f in INSPIRED_FILES)


def _need(path: Path) -> Path:
    if not path.is_file():
        raise DataError(
            f"{path}: file not found. Run `make data` (needs internet) or point CRSLIB_DATA "
            f"at a folder with the official layout (redial/{{{','.join(REDIAL_FILES)}}}, "
            f"inspired/{{{','.join(INSPIRED_FILES)}}}).")
    return path


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(text)).strip()


def _merge_turns(turns: list[Turn]) -> list[Turn]:
    """Merge consecutive turns of one role (text joined by a space, items concatenated)."""
    out: list[Turn] = []
    for t in turns:
        if out and out[-1].role == t.role:
            prev = out[-1]
            out[-1] = Turn(t.role, f"{prev.text} {t.text}".strip(), prev.items + t.items)
        else:
            out.append(t)
    return out


# ----------------------------------------------------------------------------- ReDial
def load_redial_catalog(root: Path, report: LoadReport | None = None) -> Catalog:
    """``movies_with_mentions.csv`` joined with ``id2info.json`` when present."""
    report = report if report is not None else LoadReport()
    info: dict = {}
    info_path = root / "id2info.json"
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{info_path}: not valid JSON at line {e.lineno} col {e.colno}: {e.msg}")
    path = _need(root / "movies_with_mentions.csv")
    items = []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["movieId", "movieName"]:
            raise DataError(f"{path}:1: expected header movieId,movieName,..., got {header}")
        for lineno, row in enumerate(reader, start=2):
            if len(row) < 2 or not row[0].strip().isdigit():
                report.add("catalog_row_malformed", f"{path}:{lineno}")
                continue
            mid = row[0].strip()
            title, year = split_title_year(row[1])
            meta = info.get(mid) or {}
            extra = {k: meta[k] for k in ("director", "writer", "star", "imdb_id") if meta.get(k)}
            if len(row) > 2 and row[2].strip().isdigit():
                extra["mentions"] = int(row[2])
            items.append(Item(mid, title, year, tuple(meta.get("genre") or ()), (),
                              _clean(meta.get("plot") or ""), extra))
    return Catalog(items)


def _redial_record(rec: dict, where: str, catalog: Catalog, report: LoadReport,
                   strict: bool) -> Dialog | None:
    """One ReDial record (raw dict schema or HF list-of-records schema) -> Dialog."""
    try:
        seeker = rec["initiatorWorkerId"]
        messages = rec["messages"]
        conv = str(rec["conversationId"])
        respondent = rec.get("respondentWorkerId")
    except (KeyError, TypeError) as e:
        report.add(f"record_missing_field:{e}", where, strict)
        return None
    if not messages:
        report.add("empty_dialog", f"{where} (conversationId {conv})", strict)
        return None
    turns = []
    for k, msg in enumerate(messages):
        text = msg.get("text") if isinstance(msg, dict) else None
        if not isinstance(text, str):
            report.add("message_without_text", f"{where} message {k}", strict)
            continue
        items = []

        def keep(m: re.Match) -> str:
            mid = m.group(1)
            if mid in catalog:
                items.append(mid)
                return f"@{mid}"
            report.add("unknown_item", f"{where} message {k}: @{mid}", strict)
            return mid

        sender = msg.get("senderWorkerId")
        if sender != seeker and respondent is not None and sender != respondent:
            report.add("unknown_speaker", f"{where} message {k}: senderWorkerId {sender!r} is "
                       f"neither the initiator {seeker!r} nor the respondent {respondent!r}",
                       strict)
            continue
        text = REDIAL_MENTION_RE.sub(keep, _clean(text).replace("@", "＠"))
        role = "user" if sender == seeker else "assistant"
        turns.append(Turn(role, text, tuple(items)))
    turns = _merge_turns(turns)
    if not turns:
        report.add("empty_dialog", f"{where} (conversationId {conv})", strict)
        return None
    return Dialog(conv, turns)


def load_redial(root: str | os.PathLike | None = None, splits: Iterable[str] = ("train", "test"),
                strict: bool = False) -> Dataset:
    """ReDial from the official raw files (``<split>_data.jsonl``) under ``root/redial``."""
    root = data_root(root) / "redial"
    report = LoadReport()
    catalog = load_redial_catalog(root, report)
    out = {}
    for split in splits:
        path = _need(root / f"{split}_data.jsonl")
        dialogs = []
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, start=1):
                where = f"{path}:{lineno}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    report.add("invalid_utf8", f"{where}: byte {e.start} of the line is not "
                               "UTF-8", strict)
                    continue
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    report.add("malformed_json", f"{where}: {e.msg}", strict)
                    continue
                if not isinstance(rec, dict):
                    report.add("not_a_json_object", f"{where}: line {lineno} is a JSON "
                               f"{type(rec).__name__}, not an object (one dialog per line)", strict)
                    continue
                d = _redial_record(rec, where, catalog, report, strict)
                if d is not None:
                    dialogs.append(d)
        out[split] = dialogs
    return Dataset("redial", catalog, out, report)


def redial_from_hf(rows: Iterable[dict], catalog: Catalog, source: str = "hf",
                   strict: bool = False, report: LoadReport | None = None) -> list[Dialog]:
    """Dialogs from rows of the HF ``community-datasets/re_dial`` parquet schema.

    There ``movieMentions`` and the questions are lists of records and ``conversationId`` is
    an int; only ``messages`` (a list of records) and the worker ids are read, so the two
    schemas give identical dialogs.
    """
    report = report if report is not None else LoadReport()
    dialogs = []
    for k, row in enumerate(rows):
        d = _redial_record(dict(row), f"{source} row {k}", catalog, report, strict)
        if d is not None:
            dialogs.append(d)
    return dialogs


def load_redial_hf(path: str | os.PathLike, catalog: Catalog, strict: bool = False) -> list[Dialog]:
    """Read one parquet split of ``community-datasets/re_dial`` (needs ``datasets``)."""
    from datasets import Dataset as HFDataset
    ds = HFDataset.from_parquet(str(_need(Path(path))))
    return redial_from_hf(ds, catalog, source=str(path), strict=strict)


# ----------------------------------------------------------------------------- INSPIRED
def load_inspired_catalog(root: Path, report: LoadReport | None = None) -> Catalog:
    """``movie_database.tsv``: item id = ``slug(title, year)``; metadata as far as known."""
    path = _need(root / "movie_database.tsv")
    report = report if report is not None else LoadReport()
    items: dict[str, Item] = {}
    aliases: dict[str, set[str]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        if not reader.fieldnames or "title" not in reader.fieldnames:
            raise DataError(f"{path}:1: header must have a 'title' column, got {reader.fieldnames}")
        for lineno, row in enumerate(reader, start=2):
            title = _clean(row.get("title") or "")
            if not title:
                report.add("catalog_row_without_title", f"{path}:{lineno}")
                continue
            year = (row.get("year") or "").strip().split(".")[0]
            iid = slug(title, year)
            names = {title, *(t for t in (row.get("train_titles") or "").split(";") if t.strip())}
            if iid in items:  # "The Avengers (2012)" and "Avengers (2012)": one film, merged
                report.add("catalog_duplicate_title_merged", f"{path}:{lineno}: {iid}")
                aliases[iid] |= names
                continue
            aliases[iid] = names
            genres = tuple(g.strip() for g in (row.get("genre") or "").split(",") if g.strip())
            plot = _clean(row.get("short_plot") or row.get("long_plot") or "")
            extra = {k: row[k] for k in ("director", "actors", "writer", "imdb_id") if row.get(k)}
            items[iid] = Item(iid, title, year, genres, (), plot, extra)
    catalog = Catalog(items.values())
    # other spellings ("Frozen II" in train for "Frozen 2 (2019)") resolve through aliases
    for iid, names in aliases.items():
        for alias in names:
            ids = catalog._by_title.setdefault(normalize_title(alias), [])
            if iid not in ids:
                ids.append(iid)
    return catalog


def _inspired_text(text: str, items: list[str], titles: list[str]) -> str:
    """Utterance text with the first occurrence of each mentioned title written ``@<id>``.

    A literal ``@`` in the text becomes the full-width ``＠`` so it cannot read as a mention.
    Titles the text does not contain verbatim (spelling variants) stay listed in the turn's
    items; the serializer still sees them.
    """
    text = _clean(text.replace("QUOTATION_MARK", '"')).replace("@", "＠")
    for iid, title in sorted(zip(items, titles), key=lambda p: -len(p[1])):
        bare = split_title_year(title)[0]
        alternatives = sorted({re.escape(title), re.escape(bare)} - {""}, key=len, reverse=True)
        pattern = re.compile("|".join(alternatives), re.IGNORECASE)
        text = pattern.sub(f"@{iid}", text, count=1)
    return text


def _read_inspired_split(path: Path, catalog: Catalog, report: LoadReport,
                         strict: bool) -> list[Dialog]:
    csv.field_size_limit(1 << 30)
    required = ("dialog_id", "speaker", "text", "movies")
    dialogs: dict[str, list[Turn]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        missing = [c for c in required if not header or c not in header]
        if missing:
            raise DataError(f"{path}:1: header lacks columns {missing}")
        for lineno, cells in enumerate(reader, start=2):
            if len(cells) < len(header):
                report.add("tsv_row_missing_columns",
                           f"{path}:{lineno}: {len(cells)} of {len(header)} columns", strict)
                continue
            row = dict(zip(header, cells))
            if "turn_id" in row and not row["turn_id"].strip().isdigit():
                report.add("non_integer_turn_id", f"{path}:{lineno}: turn_id {row['turn_id']!r}",
                           strict)
                continue
            speaker = row["speaker"].strip().upper()
            if speaker not in ("SEEKER", "RECOMMENDER"):
                report.add("unknown_speaker", f"{path}:{lineno}: {row['speaker']!r}", strict)
                continue
            if not row["text"].strip():
                report.add("empty_utterance", f"{path}:{lineno}", strict)
                continue
            items, titles = [], []
            for title in (m.strip() for m in row["movies"].split(";")):
                if not title:
                    continue
                iid = catalog.find(*split_title_year(title))
                if iid is None:
                    report.add("unknown_item", f"{path}:{lineno}: {title!r}", strict)
                    continue
                if iid not in items:
                    items.append(iid)
                    titles.append(title)
            text = _inspired_text(row["text"], items, titles)
            role = "user" if speaker == "SEEKER" else "assistant"
            dialogs.setdefault(row["dialog_id"], []).append(Turn(role, text, tuple(items)))
    return [Dialog(did, _merge_turns(turns)) for did, turns in dialogs.items()]


def load_inspired(root: str | os.PathLike | None = None,
                  splits: Iterable[str] = ("train", "dev", "test"),
                  strict: bool = False) -> Dataset:
    """INSPIRED from the official TSV layout under ``root/inspired``."""
    root = data_root(root) / "inspired"
    report = LoadReport()
    catalog = load_inspired_catalog(root, report)
    out = {s: _read_inspired_split(_need(root / f"{s}.tsv"), catalog, report, strict)
           for s in splits}
    return Dataset("inspired", catalog, out, report)


_LOADED: dict[tuple, Dataset] = {}  # load()'s datasets in this process, by key (see there)


def load(dataset: str, root: str | os.PathLike | None = None, strict: bool = False) -> Dataset:
    """Load ``redial`` (train, test) or ``inspired`` (train, dev, test).

    Parsed once per process: a later call for the same dataset, data root and ``strict``,
    while the dataset's files are unchanged (names, sizes, modification times), returns the
    same object — a notebook that trains and scores dozens of runs reads ReDial once instead
    of every time (about a second each). Treat it as read-only, as every crslib caller does.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {DATASETS}")
    folder = data_root(root).resolve() / dataset
    files = tuple(sorted((p.name, st.st_size, st.st_mtime_ns) for p in folder.glob("*")
                         if p.is_file() and (st := p.stat()))) if folder.is_dir() else ()
    key = (dataset, str(folder), strict, files)
    if key not in _LOADED:
        for old in [k for k in _LOADED if k[:3] == key[:3]]:  # the files changed since
            del _LOADED[old]
        loader = load_redial if dataset == "redial" else load_inspired
        _LOADED[key] = loader(root, strict=strict)
    return _LOADED[key]


def mention_parts(text: str) -> list[str | tuple[str]]:
    """Split turn text into plain strings and ``(item_id,)`` mentions, in order."""
    parts: list = []
    pos = 0
    for m in MENTION_RE.finditer(text):
        if m.start() > pos:
            parts.append(text[pos:m.start()])
        parts.append((m.group(1),))
        pos = m.end()
    if pos < len(text):
        parts.append(text[pos:])
    return parts


# ----------------------------------------------------------------------------- hold-out
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
    go is ``len(dialogs) - len(result)`` (:func:`crslib.studies.coldstart.holdout_summary` counts them).
    """
    items = set(items)
    return [d for d in dialogs if not (mentioned_items(d) & items)]
