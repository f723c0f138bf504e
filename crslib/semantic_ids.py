"""Semantic IDs: the bijection item id <-> tuple of L codes, and its token strings.

A SID is written as one token per level, the level named by a letter:
``<a_17><b_63><c_0><d_25>`` (NOTES.md §2). Everything downstream reads ``levels`` and
``codebook_size`` from this object, never from a constant.
"""
from __future__ import annotations

import json
import os
import string
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LEVEL_NAMES = string.ascii_lowercase


def sid_token(level: int, code: int) -> str:
    """The token of ``code`` at ``level`` (0-based): ``sid_token(0, 17) == '<a_17>'``."""
    return f"<{LEVEL_NAMES[level]}_{code}>"


@dataclass
class SemanticIDs:
    item_ids: list[str]
    codes: np.ndarray  # (n_items, levels) int
    codebook_size: int
    config: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)

    def __post_init__(self):
        self.codes = np.asarray(self.codes, dtype=np.int64)
        self.item_ids = [str(i) for i in self.item_ids]
        if self.codes.ndim != 2 or self.codes.shape[0] != len(self.item_ids):
            raise ValueError(f"codes must be (n_items={len(self.item_ids)}, levels), "
                             f"got shape {self.codes.shape}")
        if self.codes.shape[1] > len(LEVEL_NAMES):
            raise ValueError(f"at most {len(LEVEL_NAMES)} levels, got {self.codes.shape[1]}")
        if self.codes.size and (self.codes.min() < 0 or self.codes.max() >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size}), got "
                             f"[{self.codes.min()}, {self.codes.max()}]")
        if len(set(self.item_ids)) != len(self.item_ids):
            raise ValueError("item ids are not unique")
        self._index = {iid: k for k, iid in enumerate(self.item_ids)}
        self._by_code = {tuple(int(c) for c in row): iid
                         for iid, row in zip(self.item_ids, self.codes)}
        if len(self._by_code) != len(self.item_ids):
            raise ValueError(f"SIDs are not unique: {len(self.item_ids) - len(self._by_code)} "
                             "items share a code tuple; run collision re-assignment first")

    # ------------------------------------------------------------------ lookups
    @property
    def levels(self) -> int:
        return int(self.codes.shape[1])

    def __len__(self) -> int:
        return len(self.item_ids)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._index

    def code_of(self, item_id: str) -> tuple[int, ...]:
        return tuple(int(c) for c in self.codes[self._index[item_id]])

    def item_of(self, codes) -> str | None:
        """Item id of a full code tuple, or None if no item has it."""
        return self._by_code.get(tuple(int(c) for c in codes))

    def token_list(self, item_id: str) -> list[str]:
        return [sid_token(level, c) for level, c in enumerate(self.code_of(item_id))]

    def tokens(self, item_id: str) -> str:
        """``'<a_17><b_63><c_0><d_25>'``."""
        return "".join(self.token_list(item_id))

    def all_tokens(self) -> list[str]:
        """Every SID token, level by level: levels x codebook_size strings."""
        return [sid_token(level, c) for level in range(self.levels)
                for c in range(self.codebook_size)]

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        return {"levels": self.levels, "codebook_size": self.codebook_size,
                "config": self.config, "stats": self.stats,
                "items": {iid: self.code_of(iid) for iid in self.item_ids}}

    def save(self, path: str | os.PathLike) -> Path:
        """Write JSON atomically (a crash never leaves a half-written file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SemanticIDs":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
            items = d["items"]
            return cls(list(items), np.array(list(items.values()), dtype=np.int64).reshape(
                len(items), d["levels"]), d["codebook_size"], d.get("config", {}),
                d.get("stats", {}))
        except (OSError, json.JSONDecodeError, KeyError, ValueError) as e:
            raise ValueError(f"{path}: not a semantic-ID file ({type(e).__name__}: {e})") from e
