"""Semantic IDs: the bijection item id <-> tuple of L codes, and its token strings.

A SID is written as one token per level, the level named by a letter:
``<a_17><b_63><c_0><d_25>`` (NOTES.md §2). Everything downstream reads ``levels`` and
``codebook_size`` from this object, never from a constant.

**Committed SID maps.** The SIDs a shipped run was trained with are data of the repository:
``crslib/sid_maps/<dataset>-<key>.json``, one file per dataset and SID spec (:func:`sid_key`),
written by ``tools/freeze_sids.py``. A run whose spec has a committed map uses it as it is
(:func:`committed_map`), so a fresh clone on any machine trains on the very SIDs of the shipped
runs. Building SIDs again is deterministic on one machine (canonical embeddings,
:mod:`crslib.ids.encode`; seeded quantizers), but a float in the last bit on another CPU or torch
version can move RQ-VAE to another codebook; a committed map cannot move.
"""
from __future__ import annotations

import hashlib
import json
import os
import string
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA

from crslib import paths, report
from crslib.ids import collisions, encode, quantize

LEVEL_NAMES = string.ascii_lowercase
MAPS_DIR = paths.SID_MAPS


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
        return report.write_text(json.dumps(self.to_dict(), indent=1), path)

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


# ---------------------------------------------------------------------- quality statistics
def code_stats(codes, codebook_size: int) -> dict:
    """Quality of a code table ``(n, L)``; every value is plain JSON.

    * ``utilization[l]``: share of the ``codebook_size`` codes used at level ``l``;
    * ``perplexity[l]``: ``exp(entropy)`` of level ``l``'s code distribution (1 = one code
      for everyone, ``codebook_size`` = perfectly even);
    * ``items_per_prefix[m-1]``: for prefixes of length ``m`` (``m = L``: the full SID),
      how many distinct prefixes occur and the max / mean items per occurring prefix;
    * ``collisions``: items sharing their full SID with an earlier item (``n`` - distinct).
    """
    codes = np.asarray(codes, dtype=np.int64)
    n, levels = codes.shape
    util, ppl, load = [], [], []
    for level in range(levels):
        counts = np.bincount(codes[:, level], minlength=codebook_size)
        p = counts[counts > 0] / n
        util.append(float((counts > 0).sum() / codebook_size))
        ppl.append(float(np.exp(-(p * np.log(p)).sum())))
    for m in range(1, levels + 1):
        _, per = np.unique(codes[:, :m], axis=0, return_counts=True)
        load.append({"prefix_len": m, "prefixes": int(len(per)), "max": int(per.max()),
                     "mean": float(per.mean())})
    return {"utilization": util, "perplexity": ppl, "items_per_prefix": load,
            "collisions": int(n - load[-1]["prefixes"])}


# ---------------------------------------------------------------------- building SIDs
def build_semantic_ids(items, method: str = "rqvae", levels: int = 4, codebook_size: int = 64,
                       encoder: str | None = None, seed: int = 0, embeddings=None,
                       progress: bool = False, **params) -> SemanticIDs:
    """Catalog -> unique SIDs: encode ``Item.text()``, fit the quantizer, take the greedy
    codes, re-assign collisions (paper App. A), record config and statistics.

    ``items`` is a :class:`~crslib.data.Catalog` or any sequence of items; ``embeddings``
    (``(n, dim)``, same order) skips the encoder; ``params`` go to the quantizer (e.g.
    ``epochs=80``). ``config`` records method, levels, codebook_size, encoder, seed and every
    quantizer hyper-parameter; ``stats`` holds :func:`code_stats` before and after
    re-assignment, collisions, moved items, reconstruction errors and timings. Raises
    ``ValueError`` when ``codebook_size ** levels`` is smaller than the catalog.

    ``method="atomic"`` is no quantizer: :func:`atomic_ids` (one new token per item).
    """
    import time

    items = list(items)
    if method == "atomic":
        if levels != 1 or codebook_size not in (None, len(items)):
            raise ValueError(f"atomic IDs have 1 level of {len(items)} codes (one per item), "
                             f"not {levels} x {codebook_size}")
        return atomic_ids([it.id for it in items])
    quantize.check_capacity(len(items), levels, codebook_size)
    encoder = encoder or encode.DEFAULT_ENCODER
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    if embeddings is None:
        embeddings = encode.encode_items(items, encoder, progress=progress)
    else:
        encoder = "precomputed"
    X = quantize.check_embeddings(embeddings)
    if len(X) != len(items):
        raise ValueError(f"{len(X)} embeddings for {len(items)} items")
    seconds["encode"] = time.perf_counter() - t

    t = time.perf_counter()
    if method == "rqvae":
        params.setdefault("progress", progress)
    q = quantize.make_quantizer(method, levels=levels, codebook_size=codebook_size,
                                seed=seed, **params).fit(X)
    seconds["fit"] = time.perf_counter() - t
    t = time.perf_counter()
    dist = q.residual_distances(X)
    greedy = dist.argmin(-1)
    res = collisions.reassign_collisions(greedy, dist)
    seconds["reassign"] = time.perf_counter() - t

    n = len(items)
    stats = {
        "items": n, "collisions_before": res.collisions_before,
        "collisions_after": res.collisions_after,
        "collision_groups": int(sum(1 for c in np.unique(greedy, axis=0, return_counts=True)[1]
                                    if c > 1)),
        "moved_items": int(res.moved.sum()), "moved_share": float(res.moved.mean()),
        "backtracked_items": res.backtracked,
        "before": code_stats(greedy, codebook_size), "after": code_stats(res.codes, codebook_size),
        "reconstruction_error": {"greedy": q.reconstruction_error(X, greedy),
                                 "unique": q.reconstruction_error(X, res.codes)},
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }
    config = {"method": method, "levels": levels, "codebook_size": codebook_size,
              "encoder": encoder, "seed": seed, "embedding_dim": int(X.shape[1]),
              "params": {k: (list(v) if isinstance(v, tuple) else v)
                         for k, v in q.get_params().items() if k != "progress"}}
    return SemanticIDs([it.id for it in items], res.codes, codebook_size, config, stats)


def sid_key(dataset: str, spec: dict) -> str:
    """12 hex digits naming a dataset's SIDs built by ``spec`` (the config's ``sids`` block as a
    dict: method, levels, codebook_size, encoder, seed): the name of a cached or committed map."""
    return hashlib.sha256(json.dumps({"dataset": dataset, **spec}, sort_keys=True)
                          .encode()).hexdigest()[:12]


def catalog_fingerprint(items) -> str:
    """16 hex digits of sha256 over every item's id and text, in catalog order."""
    h = hashlib.sha256()
    for it in items:
        h.update(f"{it.id}\t{it.text()}\n".encode())
    return h.hexdigest()[:16]


def map_path(dataset: str, spec: dict, root: str | os.PathLike | None = None) -> Path:
    """Where the committed map of ``dataset`` and ``spec`` lives (it may not exist)."""
    return Path(root or MAPS_DIR) / f"{dataset}-{sid_key(dataset, spec)}.json"


def committed_map(dataset: str, spec: dict, catalog,
                  root: str | os.PathLike | None = None) -> SemanticIDs | None:
    """The committed SIDs of ``dataset`` and ``spec`` for this ``catalog``, or None when none is
    committed. A map committed for another catalog (other item ids) is not used: a warning
    names the file and the SIDs are built instead. Same ids but other item texts (metadata
    changed since the map was frozen): the map is used, with a warning."""
    path = map_path(dataset, spec, root)
    if not path.is_file():
        return None
    sids = SemanticIDs.load(path)
    items = list(catalog)
    if sids.item_ids != [it.id for it in items]:
        warnings.warn(f"{path}: committed SID map is for another catalog ({len(sids)} items vs "
                      f"{len(items)} here, or other ids); building SIDs instead", stacklevel=2)
        return None
    frozen = sids.config.get("catalog_fingerprint")
    if frozen and frozen != catalog_fingerprint(items):
        warnings.warn(f"{path}: the catalog's item texts changed since this SID map was frozen; "
                      "using the committed map (the shipped runs were trained on it)",
                      stacklevel=2)
    return sids


def freeze_map(sids: SemanticIDs, dataset: str, spec: dict, catalog,
               root: str | os.PathLike | None = None) -> Path:
    """Commit ``sids`` as the map of ``dataset`` and ``spec`` (recording the catalog's
    fingerprint and the spec); refuses to replace a different committed map."""
    items = list(catalog)
    if sids.item_ids != [it.id for it in items]:
        raise ValueError(f"these SIDs ({len(sids)} items) are not for this {dataset} catalog "
                         f"({len(items)} items)")
    path = map_path(dataset, spec, root)
    out = SemanticIDs(sids.item_ids, sids.codes, sids.codebook_size,
                      {**sids.config, "dataset": dataset, "spec": dict(spec),
                       "catalog_fingerprint": catalog_fingerprint(items)}, sids.stats)
    if path.is_file() and not np.array_equal(SemanticIDs.load(path).codes, out.codes):
        raise ValueError(f"{path}: a different SID map is committed under this name; "
                         "delete it first if you mean to replace it")
    return out.save(path)


def atomic_ids(item_ids) -> SemanticIDs:
    """Atomic item IDs, the usual alternative to SIDs: one level whose codebook has one code
    per item, item ``k`` (in the given catalog order) gets ``(k,)``, written ``<a_k>``. Shared
    codes, hence shared tokens, are what SIDs add; here no two items share anything. Same
    object as any SID table, so tokens, trie, constrained decoding and the serializer apply.
    """
    item_ids = list(item_ids)
    n = len(item_ids)
    config = {"method": "atomic", "levels": 1, "codebook_size": n, "encoder": None}
    stats = {"items": n, "collisions_before": 0, "collisions_after": 0, "moved_items": 0,
             "backtracked_items": 0}
    return SemanticIDs(item_ids, np.arange(n, dtype=np.int64)[:, None], n, config, stats)


# ---------------------------------------------------------------------- inspection
def describe(sids: SemanticIDs) -> dict:
    """One flat, JSON-ready row about a SID table, for a results table.

    Utilisation (share of the ``codebook_size`` codes used, one key per level letter) and
    ``unique`` (distinct full SIDs) are counted from ``sids.codes``; ``collisions_before``,
    ``collisions_after``, ``moved_items`` and ``backtracked_items`` are read from
    ``sids.stats`` (what :func:`build_semantic_ids` recorded; None when absent).
    """
    s = code_stats(sids.codes, sids.codebook_size)
    row = {"method": sids.config.get("method"), "encoder": sids.config.get("encoder"),
           "items": len(sids), "levels": sids.levels, "codebook_size": sids.codebook_size}
    row.update({f"utilization {LEVEL_NAMES[level]}": u for level, u in enumerate(s["utilization"])})
    row.update({k: sids.stats.get(k) for k in ("collisions_before", "collisions_after",
                                               "moved_items", "backtracked_items")})
    row["unique"] = s["items_per_prefix"][-1]["prefixes"]
    return row


def prefix_groups(sids: SemanticIDs, prefix_len: int = 1) -> dict[tuple[int, ...], list[int]]:
    """Item row indices by their first ``prefix_len`` codes, most populated prefix first.

    Ties are ranked by the prefix codes (ascending); inside a group rows are in order of the
    full code tuple. Raises ``ValueError`` unless ``1 <= prefix_len <= levels``.
    """
    if not 1 <= prefix_len <= sids.levels:
        raise ValueError(f"prefix_len must lie in [1, {sids.levels}], got {prefix_len}")
    order = sorted(range(len(sids)), key=lambda k: sids.codes[k].tolist())
    groups: dict[tuple[int, ...], list[int]] = {}
    for k in order:
        groups.setdefault(tuple(int(c) for c in sids.codes[k, :prefix_len]), []).append(k)
    return {p: groups[p] for p in sorted(groups, key=lambda p: (-len(groups[p]), p))}


def prefix_tokens(prefix) -> str:
    """``prefix_tokens((17, 63)) == '<a_17><b_63>'``."""
    return "".join(sid_token(level, int(c)) for level, c in enumerate(prefix))


def items_by_prefix(sids: SemanticIDs, catalog, prefix_len: int = 1, top: int = 3,
                    per_prefix: int = 5) -> list[dict]:
    """A few items under each of the ``top`` most populated prefixes of ``prefix_len`` codes.

    Ranking and order as in :func:`prefix_groups` (deterministic). One row per item:
    ``prefix`` (its tokens), ``prefix_items`` (how many items share it), ``sid`` (all
    tokens), ``item`` (id) and ``title`` (``catalog[item].name``).
    """
    rows = []
    for prefix, members in list(prefix_groups(sids, prefix_len).items())[:top]:
        for k in members[:per_prefix]:
            iid = sids.item_ids[k]
            rows.append({"prefix": prefix_tokens(prefix), "prefix_items": len(members),
                         "sid": sids.tokens(iid), "item": iid, "title": catalog[iid].name})
    return rows


def prefix_labels(sids: SemanticIDs, prefix_len: int = 1, top: int = 8,
                  other: str = "other") -> list[str]:
    """Per item (in ``sids.item_ids`` order): its prefix tokens if the prefix is among the
    ``top`` most populated (ranked as in :func:`prefix_groups`), else ``other``. For
    colouring a plot with a few distinguishable colours."""
    labels = [other] * len(sids)
    for prefix, members in list(prefix_groups(sids, prefix_len).items())[:top]:
        for k in members:
            labels[k] = prefix_tokens(prefix)
    return labels


def embedding_map(embeddings) -> np.ndarray:
    """2-D PCA of item embeddings ``(n, dim)`` -> ``(n, 2)`` float64, for a scatter plot.

    Exact (scikit-learn's ``PCA`` with the full SVD, no randomness); each axis's sign is fixed
    so that the largest-magnitude weight of its principal direction is positive, so the same
    embeddings always give the same picture. Raises ``ValueError`` for fewer than 2 rows or
    columns.
    """
    X = np.asarray(embeddings, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 2 or X.shape[1] < 2:
        raise ValueError(f"need an (n >= 2, dim >= 2) array for a 2-D map, got {X.shape}")
    pca = PCA(n_components=2, svd_solver="full").fit(X)
    axes = pca.components_.copy()
    axes *= np.sign(axes[np.arange(2), np.abs(axes).argmax(axis=1)])[:, None]
    return (X - pca.mean_) @ axes.T
