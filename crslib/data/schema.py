"""The in-memory schema of both datasets (items, turns, dialogs, catalogs, splits) and the
helpers every loader shares; the policies are the package's (:mod:`crslib.data`)."""
from __future__ import annotations

import html
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


def need_file(path: Path) -> Path:
    if not path.is_file():
        raise DataError(
            f"{path}: file not found. Run `make data` (needs internet) or point CRSLIB_DATA "
            f"at a folder with the official layout (redial/{{{','.join(REDIAL_FILES)}}}, "
            f"inspired/{{{','.join(INSPIRED_FILES)}}}).")
    return path


def clean_text(text: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(text)).strip()


def merge_turns(turns: list[Turn]) -> list[Turn]:
    """Merge consecutive turns of one role (text joined by a space, items concatenated)."""
    out: list[Turn] = []
    for t in turns:
        if out and out[-1].role == t.role:
            prev = out[-1]
            out[-1] = Turn(t.role, f"{prev.text} {t.text}".strip(), prev.items + t.items)
        else:
            out.append(t)
    return out


# ----------------------------------------------------------------------------- INSPIRED


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
