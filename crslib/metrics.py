"""Ranking and dialog metrics (NOTES.md §5), with 95% bootstrap intervals.

Ranking: one gold item per case; ``rank`` is the 1-based position of the gold item in the
model's list, or ``None``/``inf`` when it is not in the list. Per case:
``recall@k = [rank <= k]``, ``ndcg@k = [rank <= k] / log2(rank + 1)``,
``mrr@k = [rank <= k] / rank``; reported values are means over cases, as fractions in [0, 1].

Dialog: corpus perplexity weighted by tokens (``exp(sum nll / sum tokens)``); SacreBLEU
(corpus, x100, default 13a tokenizer); Distinct-n as *unique n-grams / all n-grams* over the
word tokens of the whole generated corpus (``distinct@n``), and the variant *unique n-grams /
number of responses* (``distinct_per_response@n``), labelled, since both are in use
(NOTES.md §9). Items in generated text are shown as one ``<movie>`` token before counting.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import numpy as np
from sklearn.metrics import f1_score, precision_recall_fscore_support

RANK_KS = (1, 5, 10, 20)
CUT_KS = (5, 10, 20)
PROTOCOLS = ("paper", "community", "dedup")  # the ranking protocols (crslib.evaluation.evaluate)


def _ranks(ranks: Iterable[float | None]) -> np.ndarray:
    r = np.array([math.inf if x is None else float(x) for x in ranks], dtype=float)
    if np.any(r < 1):
        raise ValueError("ranks are 1-based; got a rank below 1")
    return r


def ranking_per_case(ranks: Iterable[float | None], recall_ks: Sequence[int] = RANK_KS,
                     cut_ks: Sequence[int] = CUT_KS) -> dict[str, np.ndarray]:
    """Per-case values of ``recall@k``, ``ndcg@k`` and ``mrr@k`` (arrays, one per case)."""
    r = _ranks(ranks)
    out = {f"recall@{k}": (r <= k).astype(float) for k in recall_ks}
    with np.errstate(divide="ignore"):
        for k in cut_ks:
            hit = r <= k
            out[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(np.where(hit, r, 1.0) + 1), 0.0)
            out[f"mrr@{k}"] = np.where(hit, 1.0 / np.where(hit, r, 1.0), 0.0)
    return out


def ranking_metrics(ranks: Iterable[float | None], recall_ks: Sequence[int] = RANK_KS,
                    cut_ks: Sequence[int] = CUT_KS) -> dict[str, float]:
    return {k: float(v.mean()) if len(v) else float("nan")
            for k, v in ranking_per_case(ranks, recall_ks, cut_ks).items()}


def bootstrap_ci(per_case: np.ndarray, n_boot: int = 1000, seed: int = 0,
                 stat: Callable[[np.ndarray], float] = np.mean) -> tuple[float, float]:
    """Percentile 95% interval of ``stat`` over cases resampled with replacement."""
    x = np.asarray(per_case, dtype=float)
    if len(x) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    vals = x[idx].mean(axis=1) if stat is np.mean else np.array([stat(x[i]) for i in idx])
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return (float(lo), float(hi))


def paired_bootstrap(a: Sequence[float], b: Sequence[float], clusters: Sequence | None = None,
                     n_boot: int = 10_000, seed: int = 0) -> dict:
    """Is ``a`` higher than ``b`` on the same cases? A paired bootstrap over clusters.

    ``a[k]`` and ``b[k]`` are two rankers' values on case ``k`` (e.g. hit@10); ``clusters[k]``
    the unit that is resampled (the dialog: turns of one dialog are not independent; None:
    each case its own). Each of ``n_boot`` replicates draws as many clusters as there are,
    with replacement, and takes the mean per-case difference over the drawn cases.
    Returns ``delta`` (mean of ``a - b``), ``ci95`` (percentile interval of the replicates),
    ``p_value`` (two-sided: twice the smaller share of replicates on either side of 0, with
    the usual +1 correction, at most 1) and ``cases``/``clusters``."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"need two equal-length non-empty 1-D arrays, got {a.shape} and {b.shape}")
    d = a - b
    ids = np.arange(len(d)) if clusters is None else np.unique(
        np.asarray(list(clusters), dtype=object).astype(str), return_inverse=True)[1]
    if len(ids) != len(d):
        raise ValueError(f"{len(ids)} cluster labels for {len(d)} cases")
    n_c = int(ids.max()) + 1
    sums = np.bincount(ids, weights=d, minlength=n_c)
    counts = np.bincount(ids, minlength=n_c).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_c, size=(n_boot, n_c))
    reps = sums[draws].sum(1) / counts[draws].sum(1)
    lo, hi = np.percentile(reps, [2.5, 97.5])
    below, above = (reps <= 0).sum(), (reps >= 0).sum()
    p = min(1.0, 2 * (min(below, above) + 1) / (n_boot + 1))
    return {"delta": float(d.mean()), "ci95": [float(lo), float(hi)], "p_value": float(p),
            "cases": int(len(d)), "clusters": n_c}


def ranking_with_ci(ranks: Iterable[float | None], recall_ks: Sequence[int] = RANK_KS,
                    cut_ks: Sequence[int] = CUT_KS, n_boot: int = 1000,
                    seed: int = 0) -> tuple[dict[str, float], dict[str, list[float]]]:
    per = ranking_per_case(ranks, recall_ks, cut_ks)
    metrics = {k: float(v.mean()) if len(v) else float("nan") for k, v in per.items()}
    ci = {k: list(bootstrap_ci(v, n_boot, seed)) for k, v in per.items()}
    return metrics, ci


# ----------------------------------------------------------------------------- dialog
def perplexity(nll_sum: float, n_tokens: int) -> float:
    """Corpus perplexity weighted by tokens: ``exp(total NLL / total tokens)``."""
    if n_tokens <= 0:
        raise ValueError("perplexity needs at least one token")
    return math.exp(nll_sum / n_tokens)


def words(text: str) -> list[str]:
    """Whitespace words, lower-cased; ``<movie>`` stays one token."""
    return text.lower().split()


def distinct(responses: Sequence[str], n: int) -> float:
    """Unique n-grams / all n-grams over the corpus of responses (``distinct@n``)."""
    grams = [tuple(w[i:i + n]) for w in map(words, responses) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def distinct_per_response(responses: Sequence[str], n: int) -> float:
    """Unique n-grams / number of responses (the other definition in use, labelled)."""
    grams = {tuple(w[i:i + n]) for w in map(words, responses) for i in range(len(w) - n + 1)}
    return len(grams) / len(responses) if responses else 0.0


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus SacreBLEU (x100) with one reference per hypothesis."""
    import sacrebleu
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses vs {len(references)} references")
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def dialog_metrics(hypotheses: Sequence[str], references: Sequence[str],
                   mention_token: str = "<movie>") -> dict[str, float]:
    out = {"bleu": bleu(hypotheses, references)}
    for n in (1, 2, 3, 4):
        out[f"distinct@{n}"] = distinct(hypotheses, n)
        out[f"distinct_per_response@{n}"] = distinct_per_response(hypotheses, n)
    out["item_mention_share"] = (sum(mention_token in h for h in hypotheses) / len(hypotheses)
                                 if hypotheses else 0.0)
    out["looping_share"] = (sum(repeats_ngram(h, 3) for h in hypotheses) / len(hypotheses)
                            if hypotheses else 0.0)
    return out


def repeats_ngram(text: str, n: int = 3) -> bool:
    """Does ``text`` contain some word n-gram twice (a loop such as "but I would help, but I
    would help")? Words are lower-cased whitespace tokens, punctuation stripped."""
    words = [w for w in (t.strip(".,!?;:'\"()").lower() for t in text.split()) if w]
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(grams) != len(set(grams))


def f1(gold: Sequence[bool], pred: Sequence[bool]) -> float:
    """F1 of the positive class (scikit-learn's ``f1_score``: ``2tp / (2tp + fp + fn)``, one
    division, so equal ratios give equal floats; 0 without a true positive)."""
    return float(f1_score(np.asarray(gold, bool), np.asarray(pred, bool), zero_division=0.0))


def intent_metrics(gold: Sequence[str], pred: Sequence[str], positive: str = "rec") -> dict:
    """Accuracy, precision, recall and F1 (``positive`` = recommend) of the model's own mode
    choice (scikit-learn; precision or recall 0 when undefined)."""
    g = np.array([x == positive for x in gold], bool)
    p = np.array([x == positive for x in pred], bool)
    if not len(g):
        return {"intent_accuracy": float("nan"), "intent_precision": 0.0, "intent_recall": 0.0,
                "intent_f1": 0.0}
    prec, rec, f, _ = precision_recall_fscore_support(g, p, average="binary", zero_division=0.0)
    return {"intent_accuracy": float((g == p).mean()), "intent_precision": float(prec),
            "intent_recall": float(rec), "intent_f1": float(f)}


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation over seeds (sd 0 for one seed)."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
