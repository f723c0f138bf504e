"""Collision re-assignment (NOTES.md §2, App. A): items that share a full code are moved, one
by one, to the nearest free code of their last level(s), so every item gets a unique SID."""
from __future__ import annotations

from collections import Counter
from typing import NamedTuple

import numpy as np

from crslib.ids.quantize import check_capacity


class Reassignment(NamedTuple):
    codes: np.ndarray          # (n, L) int64, unique rows
    collisions_before: int     # items sharing their SID with an earlier item: n - distinct
    collisions_after: int      # 0 (checked)
    moved: np.ndarray          # (n,) bool, the items whose SID changed
    backtracked: int           # moved items that needed an earlier level changed


def _prefix_counts(codes: np.ndarray) -> Counter:
    """Number of distinct full SIDs under every prefix (the empty prefix included)."""
    used: Counter = Counter()
    for t in {tuple(row) for row in codes.tolist()}:
        for m in range(len(t) + 1):
            used[t[:m]] += 1
    return used


def _place(code: tuple[int, ...], dist: np.ndarray, used: Counter, K: int
           ) -> tuple[tuple[int, ...], bool]:
    """The nearest free SID for one item, back-tracking from the last level upwards.

    Keep the first ``back`` codes (``back = L-1, L-2, ..., 0``) as long as that prefix has
    no free leaf; below it take, level by level, the nearest codeword (distance rank) whose
    subtree still has a free leaf — at the last level, the nearest free codeword.
    """
    L = len(code)
    for back in range(L - 1, -1, -1):
        if used[code[:back]] < K ** (L - back):
            out = code[:back]
            for level in range(back, L):
                for c in np.argsort(dist[level], kind="stable").tolist():
                    if used[out + (c,)] < K ** (L - level - 1):
                        out = out + (c,)
                        break
            return out, back < L - 1
    raise ValueError("no free SID left")  # unreachable after check_capacity


def reassign_collisions(codes, distances) -> Reassignment:
    """Unique SIDs of exactly L codes by the paper's Appendix A (after Zhai et al. 2025).

    ``codes`` ``(n, L)`` are the greedy codes, ``distances`` ``(n, L, K)`` each item's
    residual distances to every codeword at every level. Colliding groups are handled one at
    a time, in order of their SID; inside a group items go in order of their smallest
    last-level distance (ties: item index), and each takes its nearest *free* last-level
    codeword under its prefix — so the first keeps its SID. When all K last-level codes of
    the prefix are taken, it back-tracks: re-assigns the previous level by distance rank,
    then the following levels (nearest codeword with room), and so on upwards. SIDs of other
    items are never taken. Distances are the precomputed greedy-path ones (App. A computes
    them once). Raises ``ValueError`` on bad shapes, non-finite distances or when
    ``K ** L < n``; the result is checked to be a bijection.
    """
    codes = np.array(codes, dtype=np.int64)
    dist = np.asarray(distances, dtype=np.float64)
    if codes.ndim != 2 or dist.ndim != 3 or dist.shape[:2] != codes.shape:
        raise ValueError("codes (n, L) and distances (n, L, K) disagree: "
                         f"{codes.shape}, {dist.shape}")
    n, L = codes.shape
    K = dist.shape[2]
    check_capacity(n, L, K)
    if not np.isfinite(dist).all():
        raise ValueError("distances contain NaN or inf")
    if codes.size and (codes.min() < 0 or codes.max() >= K):
        raise ValueError(f"codes must lie in [0, {K})")
    original = codes.copy()
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, row in enumerate(codes.tolist()):
        groups.setdefault(tuple(row), []).append(i)
    used = _prefix_counts(codes)
    backtracked = 0
    for sid in sorted(t for t, members in groups.items() if len(members) > 1):
        for m in range(L + 1):  # release the group's SID; its members compete for it
            used[sid[:m]] -= 1
        for i in sorted(groups[sid], key=lambda i: (dist[i, L - 1].min(), i)):
            new, back = _place(sid, dist[i], used, K)
            for m in range(L + 1):
                used[new[:m]] += 1
            codes[i] = new
            backtracked += back
    distinct = len({tuple(row) for row in codes.tolist()})
    if distinct != n:
        raise RuntimeError(f"collision re-assignment left {n - distinct} duplicate SIDs")
    before = n - len(groups)
    moved = (codes != original).any(1)
    return Reassignment(codes, before, n - distinct, moved, backtracked)
