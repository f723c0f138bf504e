"""INSPIRED's official files read into the schema of :mod:`crslib.data.schema`; the policies
are the package's (:mod:`crslib.data`)."""
from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Iterable

from crslib.data.schema import (Catalog, DataError, Dataset, Dialog, Item, LoadReport, Turn,
                                clean_text, data_root, merge_turns, need_file, normalize_title,
                                slug, split_title_year)


def load_inspired_catalog(root: Path, report: LoadReport | None = None) -> Catalog:
    """``movie_database.tsv``: item id = ``slug(title, year)``; metadata as far as known."""
    path = need_file(root / "movie_database.tsv")
    report = report if report is not None else LoadReport()
    items: dict[str, Item] = {}
    aliases: dict[str, set[str]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        if not reader.fieldnames or "title" not in reader.fieldnames:
            raise DataError(f"{path}:1: header must have a 'title' column, got {reader.fieldnames}")
        for lineno, row in enumerate(reader, start=2):
            title = clean_text(row.get("title") or "")
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
            plot = clean_text(row.get("short_plot") or row.get("long_plot") or "")
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
    text = clean_text(text.replace("QUOTATION_MARK", '"')).replace("@", "＠")
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
    return [Dialog(did, merge_turns(turns)) for did, turns in dialogs.items()]


def load_inspired(root: str | os.PathLike | None = None,
                  splits: Iterable[str] = ("train", "dev", "test"),
                  strict: bool = False) -> Dataset:
    """INSPIRED from the official TSV layout under ``root/inspired``."""
    root = data_root(root) / "inspired"
    report = LoadReport()
    catalog = load_inspired_catalog(root, report)
    out = {s: _read_inspired_split(need_file(root / f"{s}.tsv"), catalog, report, strict)
           for s in splits}
    return Dataset("inspired", catalog, out, report)
